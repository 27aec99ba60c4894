"""URLs of the shop."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "shop"
urlpatterns = [
    path("", views.product_list, name="list"),
    path("product/<int:pk>/", views.product_detail, name="product"),
    path("report/", views.report, name="report"),
    path("report/forget/", views.report_forget, name="report-forget"),
    path("report/stampede/", views.report_stampede, name="stampede"),
    path("cache/", views.tools, name="tools"),
    path("cache/delete-pattern/", views.delete_pattern, name="delete-pattern"),
    path("cache/invalidate/", views.invalidate, name="invalidate"),
    path("cache/command/", views.command, name="command"),
    path("stats/", views.stats, name="stats"),
]
