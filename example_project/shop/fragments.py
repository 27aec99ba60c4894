"""The cached HTML fragments of the shop, shared by the views and the warmer.

Each fragment is stored with the tags of what it shows (``model_tag``), so saving a
product, its category or a tag drops it in every process: nothing here deletes keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.core.cache import cache
from django.template.loader import render_to_string
from django.utils import timezone

from django_smartcache import model_tag

from .models import Category, Product, Tag

#: Fragments live an hour; an edit drops them long before that, through their tags.
TIMEOUT = 3600
LIST_KEY = "shop:products:html"


def detail_key(pk: int) -> str:
    return f"shop:product:{pk}:html"


def list_tags() -> list[str]:
    """The list shows every product, its category and its tags."""
    return [model_tag(Product), model_tag(Category), model_tag(Tag)]


def detail_tags(product: Product) -> list[str]:
    """A product page shows that row, its category's row and tag names."""
    return [model_tag(product), model_tag(product.category), model_tag(Tag)]


def render_list() -> str:
    products = Product.objects.select_related("category").prefetch_related("tags")
    return render_to_string(
        "shop/_product_list.html",
        {"products": products, "rendered_at": timezone.now()},
    )


def render_detail(product: Product) -> str:
    return render_to_string(
        "shop/_product_detail.html",
        {
            "product": product,
            "tags": list(product.tags.all()),
            "rendered_at": timezone.now(),
        },
    )


@dataclass(frozen=True)
class Fragment:
    html: str
    hit: bool  # served from the cache (True) or rendered by this request
    ms: float
    key: str
    tags: list[str]


def fetch(key: str, tags: list[str], render: Callable[[], str]) -> Fragment:
    """The fragment under ``key``, rendered and stored with ``tags`` on a miss."""
    started = time.perf_counter()
    html = cache.get(key)
    hit = html is not None
    if not hit:
        # Single flight: concurrent misses of this key in this process render once.
        html = cache.get_or_set(key, render, timeout=TIMEOUT, tags=tags)
    ms = (time.perf_counter() - started) * 1000
    return Fragment(html=html, hit=hit, ms=ms, key=key, tags=tags)
