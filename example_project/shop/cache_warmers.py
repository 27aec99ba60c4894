"""Warmers of the shop, run by ``manage.py smartcache_warm`` (docs/commands.md)."""

from __future__ import annotations

from typing import Any

from django_smartcache import model_tag
from django_smartcache.warmers import warmer

from . import fragments
from .models import Product


@warmer("shop.pages", tags=[model_tag(Product)])
def pages(cache: Any) -> None:
    """The product list and every product page, dropped when any product is written."""
    cache.set(
        fragments.LIST_KEY,
        fragments.render_list(),
        timeout=fragments.TIMEOUT,
        tags=fragments.list_tags(),
    )
    products = Product.objects.select_related("category").prefetch_related("tags")
    for product in products:
        cache.set(
            fragments.detail_key(product.pk),
            fragments.render_detail(product),
            timeout=fragments.TIMEOUT,
            tags=fragments.detail_tags(product),
        )
