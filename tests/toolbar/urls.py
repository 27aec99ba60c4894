from __future__ import annotations

from debug_toolbar.toolbar import debug_toolbar_urls
from django.urls import path

from . import views

urlpatterns = [
    path("lookups/", views.lookups),
    path("evictions/", views.evictions),
    path("stampede/", views.stampede),
    path("async/", views.async_lookups),
    path("nothing/", views.no_cache),
    path("multi-hit/", views.multi_hit),
    path("cached/", views.cached_page),
    path("strict-csp/", views.strict_csp),
    *debug_toolbar_urls(),
]
