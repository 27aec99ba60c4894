"""SMARTCACHE["TOOLBAR_MAX_CALLS"]: the panel lists the first calls of a request only,
while its totals (calls, hits, misses, time, per alias and overall, the L1/L2 split,
Server-Timing) count every call (outside probe many_calls.sh: 50,000 calls made 11.7 MB
of HTML)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

from tests.toolbar.test_panel import (
    PANEL_ID,
    alias,
    cells,
    fragment,
    run,
    toolbar_get,
    valid_html,
)

pytestmark = pytest.mark.usefixtures("toolbar_settings_on")

#: How long the dropped get_or_set's default takes: its time must be in the totals.
SLOW = 0.05


def max_calls(value: int | None) -> Any:
    return override_settings(
        SMARTCACHE={**getattr(settings, "SMARTCACHE", {}), "TOOLBAR_MAX_CALLS": value}
    )


def busy(request: HttpRequest) -> HttpResponse:
    """10 listed calls on "smart" (4 hits, 5 misses), 2 on "multi" (1 L1 hit); the
    slow get_or_set comes late, so a small cap drops it."""
    smart = caches["smart"]
    smart.delete_many(["a", "b", "slow"])  # 1
    smart.get("a")  # 2: miss
    smart.set("a", 1)  # 3
    smart.get("a")  # 4: hit
    smart.get_many(["a", "b"])  # 5: 1 hit, 1 miss
    smart.get("b")  # 6: miss
    multi = caches["multi"]
    multi.set("level", "value")  # 7
    multi.get("level")  # 8: an L1 hit

    def compute() -> int:
        time.sleep(SLOW)
        return 2

    smart.get_or_set("slow", compute)  # 9: miss, SLOW seconds
    smart.get_or_set("slow", compute)  # 10: hit
    smart.get("a")  # 11: hit
    smart.get("none")  # 12: miss
    return HttpResponse("ok")


def served_by(stats: dict[str, Any]) -> list[int]:
    return [level["hits"] for level in alias(stats, "multi")["levels"]]


def test_the_first_calls_are_kept_and_the_totals_count_every_call() -> None:
    with max_calls(None):
        full = run(busy).get_stats()
    assert len(full["calls"]) == 12 and full["calls_dropped"] == 0
    with max_calls(3):
        panel = run(busy)
    stats = panel.get_stats()
    assert [(c["op"], c["keys"]) for c in stats["calls"]] == [
        ("delete_many", ["a", "b", "slow"]),
        ("get", ["a"]),
        ("set", ["a"]),
    ]
    assert stats["calls_dropped"] == 9 and stats["max_calls"] == 3
    totals = stats["totals"]
    assert (totals["calls"], totals["hits"], totals["misses"]) == (12, 5, 5)
    assert totals["hit_rate"] == pytest.approx(0.5)
    # The dropped get_or_set's time is counted: the kept calls alone take far less.
    assert totals["ms"] >= SLOW * 1000
    assert sum(c["ms"] for c in stats["calls"]) < SLOW * 1000
    smart = alias(stats, "smart")
    assert (smart["calls"], smart["hits"], smart["misses"]) == (10, 4, 5)
    assert smart["hit_rate"] == pytest.approx(4 / 9)
    assert smart["ms"] >= SLOW * 1000
    multi = alias(stats, "multi")
    assert (multi["calls"], multi["hits"], multi["misses"]) == (2, 1, 0)
    assert served_by(stats) == served_by(full) and served_by(stats)[0] == 1
    assert totals["calls"] == full["totals"]["calls"]
    assert (totals["hits"], totals["misses"]) == (
        full["totals"]["hits"],
        full["totals"]["misses"],
    )
    for name in ("default", "smart", "multi"):
        mine, theirs = alias(stats, name), alias(full, name)
        assert (mine["calls"], mine["hits"], mine["misses"]) == (
            theirs["calls"],
            theirs["hits"],
            theirs["misses"],
        )
    assert panel.nav_subtitle == f"12 calls, 50% hits, {totals['ms']:.1f} ms"
    request = RequestFactory().get("/")
    panel.generate_server_timing(request, HttpResponse())
    timing = panel.get_server_timing_stats()["smartcache"]
    assert timing["value"] == totals["ms"]
    assert timing["title"] == "Smart cache 12 calls"


def test_zero_lists_no_call_and_still_counts_them() -> None:
    with max_calls(0):
        stats = run(busy).get_stats()
    assert stats["calls"] == [] and stats["calls_dropped"] == 12
    assert (stats["totals"]["calls"], stats["totals"]["hits"]) == (12, 5)
    assert stats["totals"]["ms"] >= SLOW * 1000


def test_the_default_keeps_a_thousand_calls() -> None:
    def many(request: HttpRequest) -> HttpResponse:
        smart = caches["smart"]
        for i in range(1005):
            smart.get(f"many:{i}")
        return HttpResponse("ok")

    stats = run(many).get_stats()
    assert len(stats["calls"]) == 1000 and stats["calls_dropped"] == 5
    assert stats["calls"][-1]["keys"] == ["many:999"]
    assert (stats["totals"]["calls"], stats["totals"]["misses"]) == (1005, 1005)


def more_row(content: str) -> list[str]:
    rows = fragment(content).findall(".//tr[@class='djdt-smartcache-more']")
    assert len(rows) == 1
    return cells(rows[0])


def test_a_row_says_how_many_calls_are_not_listed() -> None:
    with max_calls(3):
        content = run(busy).content
    valid_html(content)
    (text,) = more_row(content)
    assert text.startswith("9 more calls not listed")
    assert 'TOOLBAR_MAX_CALLS"] is 3' in text
    # The rows of the calls kept, then that one.
    table = fragment(content).find(".//table[@class='djdt-smartcache-calls']")
    assert len(table.findall("./tbody/tr")) == 4
    with max_calls(11):
        assert more_row(run(busy).content)[0].startswith("1 more call not listed")


def test_with_zero_the_table_holds_only_that_row() -> None:
    with max_calls(0):
        content = run(busy).content
    valid_html(content)
    assert "No cache calls in this request." not in content
    assert more_row(content)[0].startswith("12 more calls not listed")


def test_no_row_when_nothing_was_dropped() -> None:
    with max_calls(12):
        content = run(busy).content
    assert "more call" not in content and "djdt-smartcache-more" not in content


def test_through_the_middleware_and_the_store(client: Any) -> None:
    """The count is stored with the request: render_panel shows the row."""
    with max_calls(2):
        response = toolbar_get(client, "/lookups/")
        with override_settings(DEBUG=True):
            content = client.get(
                "/__debug__/render_panel/",
                {
                    "request_id": response.headers["djdt-request-id"],
                    "panel_id": PANEL_ID,
                },
            ).json()["content"]
    assert "<small>13 calls, 67% hits, " in response.content.decode()
    valid_html(content)
    assert more_row(content)[0].startswith("11 more calls not listed")


def events(request: HttpRequest) -> HttpResponse:
    """A 4 KB SmartCache overfilled (evictions for capacity) and 6 tag invalidations."""
    tiny = caches["tiny"]
    tiny.clear()
    for i in range(20):
        tiny.set(f"blob:{i}", "x" * 600)
    smart = caches["smart"]
    for i in range(6):
        smart.invalidate_tags(f"tag:{i}")
    return HttpResponse("ok")


def event_rows(content: str, name: str) -> list[Any]:
    table = fragment(content).find(f".//table[@class='djdt-smartcache-{name}']")
    return list(table.findall("./tbody/tr"))


def test_evictions_and_invalidations_keep_the_first_ones_and_count_all() -> None:
    """They were kept (stored and rendered) in full whatever TOOLBAR_MAX_CALLS: 20,000
    sets into a 256 KB SmartCache made a 2.2 MB panel (outside probe)."""
    with max_calls(None):
        full = run(events).get_stats()
    evicted = len(full["evictions"])
    assert evicted > 4 and len(full["invalidations"]) == 6
    assert full["evictions_dropped"] == full["invalidations_dropped"] == 0
    with max_calls(3):
        panel = run(events)
    stats = panel.get_stats()
    assert stats["evictions"] == full["evictions"][:3]
    assert stats["invalidations"] == full["invalidations"][:3]
    assert stats["evictions_dropped"] == evicted - 3
    assert stats["invalidations_dropped"] == 3
    assert stats["stampede_waits_dropped"] == 0
    # The counts are of every event.
    assert stats["totals"]["evictions"] == evicted
    assert stats["totals"]["invalidations"] == 6
    assert alias(stats, "tiny")["evictions"] == {"capacity": evicted}
    assert alias(stats, "smart")["invalidations"] == 6
    content = panel.content
    valid_html(content)
    for name, dropped, what in (
        ("evictions", evicted - 3, "evictions"),
        ("invalidations", 3, "tag invalidations"),
    ):
        rows = event_rows(content, name)
        assert len(rows) == 4
        (text,) = cells(rows[-1])
        assert text.startswith(f"{dropped} more {what} not listed")
        assert 'TOOLBAR_MAX_CALLS"] is 3' in text
    # None kept: the sections still say how many there were.
    with max_calls(0):
        content = run(events).content
    valid_html(content)
    assert [len(event_rows(content, n)) for n in ("evictions", "invalidations")] == [
        1,
        1,
    ]
    assert "6 more tag invalidations not listed" in content
