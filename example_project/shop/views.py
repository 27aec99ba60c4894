"""Pages of the shop; each one shows a feature of django-smartcache at work."""

from __future__ import annotations

import io
import re
import time
from typing import Any

from django.contrib import messages
from django.core.cache import cache, caches
from django.core.management import call_command
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from django_smartcache import invalidate_tags, model_tag

from . import events, fragments, reports
from .forms import PatternForm, ProductForm, TagForm
from .models import Category, Product, Tag

#: Threads the stampede button starts at the same instant.
STAMPEDE_CALLERS = 8


def product_list(request: HttpRequest) -> HttpResponse:
    fragment = fragments.fetch(
        fragments.LIST_KEY, fragments.list_tags(), fragments.render_list
    )
    return render(request, "shop/product_list.html", {"fragment": fragment})


def product_detail(request: HttpRequest, pk: int) -> HttpResponse:
    product = get_object_or_404(Product.objects.select_related("category"), pk=pk)
    if request.method == "POST":
        form = ProductForm(request.POST, instance=product)
        if form.is_valid():
            # post_save / m2m_changed invalidate this row's, its model's and its tags'
            # versions: the cached list and this page are misses from now on.
            form.save()
            messages.success(
                request,
                f"Saved. Invalidated {model_tag(product)} and {model_tag(Product)}: "
                "this page and the list are rendered again on their next read.",
            )
            return redirect(product)
    else:
        form = ProductForm(instance=product)
    fragment = fragments.fetch(
        fragments.detail_key(product.pk),
        fragments.detail_tags(product),
        lambda: fragments.render_detail(product),
    )
    return render(
        request,
        "shop/product_detail.html",
        {"product": product, "fragment": fragment, "form": form},
    )


def report(request: HttpRequest) -> HttpResponse:
    before = reports.computations()
    started = time.perf_counter()
    rows = reports.catalogue_report()
    ms = (time.perf_counter() - started) * 1000
    return render(
        request,
        "shop/report.html",
        {
            "rows": rows,
            "ms": ms,
            "computed": reports.computations() > before,
            "key": reports.catalogue_report.key(),
            "computations": reports.computations(),
            "callers": STAMPEDE_CALLERS,
            "seconds": reports.REPORT_SECONDS,
        },
    )


@require_POST
def report_forget(request: HttpRequest) -> HttpResponse:
    dropped = reports.catalogue_report.invalidate()
    messages.info(
        request,
        "Report entry deleted." if dropped else "The report was not cached.",
    )
    return redirect("shop:report")


@require_POST
def report_stampede(request: HttpRequest) -> HttpResponse:
    result = reports.stampede(STAMPEDE_CALLERS)
    messages.success(
        request,
        f"Stampede: {result['callers']} concurrent callers, "
        f"{result['computations']} computation(s), "
        f"{result['waited']} waited for it (stampede_wait).",
    )
    return redirect("shop:report")


def tools(request: HttpRequest) -> HttpResponse:
    tags = [
        model_tag(Product),
        model_tag(Category),
        model_tag(Tag),
        *(model_tag(p) for p in Product.objects.all()[:3]),
    ]
    return render(
        request,
        "shop/tools.html",
        {"pattern_form": PatternForm(), "tags": tags, "tag_form": TagForm()},
    )


@require_POST
def delete_pattern(request: HttpRequest) -> HttpResponse:
    form = PatternForm(request.POST)
    if form.is_valid():
        pattern, regex = form.cleaned_data["pattern"], form.cleaned_data["regex"]
        try:
            deleted = cache.delete_pattern(pattern, regex=regex)
        except (ValueError, re.error) as exc:  # an invalid regular expression
            messages.error(request, f"{pattern!r}: {exc}")
        else:
            kind = "regex" if regex else "glob"
            messages.success(
                request,
                f"delete_pattern({pattern!r}) [{kind}]: {deleted} key(s) deleted.",
            )
    else:
        messages.error(request, form.error_message())
    return redirect("shop:tools")


@require_POST
def invalidate(request: HttpRequest) -> HttpResponse:
    form = TagForm(request.POST)
    if form.is_valid():
        tag = form.cleaned_data["tag"]
        try:
            invalidate_tags(tag, reason="the tools page")
        except ValueError as exc:  # not a valid tag
            messages.error(request, str(exc))
        else:
            messages.success(
                request, f"invalidate_tags({tag!r}): every entry carrying it is gone."
            )
    else:
        messages.error(request, form.error_message())
    return redirect("shop:tools")


@require_POST
def command(request: HttpRequest) -> HttpResponse:
    """Run ``smartcache_warm`` or ``smartcache_clear`` in this server process."""
    name = request.POST.get("name")
    commands: dict[str, list[str]] = {
        "smartcache_warm": [],
        "smartcache_clear": ["--noinput"],
    }
    if name not in commands:
        messages.error(request, f"Unknown command {name!r}.")
        return redirect("shop:tools")
    out = io.StringIO()
    call_command(name, *commands[name], stdout=out)
    messages.success(request, f"{name}: {out.getvalue().strip()}")
    return redirect("shop:tools")


def _scalars(data: dict[str, Any], skip: set[str]) -> list[tuple[str, Any]]:
    return [
        (name, value)
        for name, value in data.items()
        if name not in skip and isinstance(value, int | float | str | bool | None)
    ]


def stats(request: HttpRequest) -> HttpResponse:
    backend = caches["default"]
    overall = backend.stats()
    levels = []
    for info, level in zip(overall.get("levels", []), backend.levels, strict=True):
        own = level.stats() if hasattr(level, "stats") else {}
        levels.append(
            {
                "name": info["level"],
                "info": info,
                "own": own,
                "top": own.get("top_accessed", []),
                "counters": _scalars(info, {"level"}) + _scalars(own, set()),
            }
        )
    return render(
        request,
        "shop/stats.html",
        {
            "overall": overall,
            "coherence": overall.get("coherence", {}),
            "levels": levels,
            "backend": f"{type(backend).__module__}.{type(backend).__qualname__}",
            "events": events.recent(),
        },
    )
