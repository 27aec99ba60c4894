"""Panel fixes found by an outside probe: nested calls, panel order, the toolbar's own
store, aliases that cannot be built, repeated keys, the Server-Timing text."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse

from tests.toolbar.test_panel import run

pytestmark = pytest.mark.usefixtures("toolbar_settings_on")


def test_get_many_with_a_repeated_key_is_all_hits() -> None:
    def view(request: HttpRequest) -> HttpResponse:
        for name in ("default", "smart", "multi"):
            caches[name].set("a", 1)
            caches[name].get_many(["a", "a"])
        return HttpResponse("ok")

    calls = run(view).get_stats()["calls"]
    many = [(c["hits"], c["misses"], c["hit"]) for c in calls if c["op"] == "get_many"]
    assert many == [(1, 0, True)] * 3


def test_server_timing_says_1_call() -> None:
    def view(request: HttpRequest) -> HttpResponse:
        caches["smart"].get("one")
        return HttpResponse("ok")

    panel = run(view)
    panel.generate_server_timing(None, None)
    timing = panel.get_server_timing_stats()["smartcache"]
    assert timing["title"] == "Smart cache 1 call"
