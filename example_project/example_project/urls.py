"""URLs of the example project: the shop, and the debug toolbar when it is on."""

from __future__ import annotations

from django.conf import settings
from django.urls import include, path

urlpatterns = [path("", include("shop.urls"))]

if settings.TOOLBAR:
    from debug_toolbar.toolbar import debug_toolbar_urls

    urlpatterns += debug_toolbar_urls()
