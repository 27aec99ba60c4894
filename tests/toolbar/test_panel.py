"""SmartCachePanel: unit tests on a DebugToolbar built by hand, integration tests
through the middleware and the toolbar's render_panel view, on real backends."""

from __future__ import annotations

import json
from typing import Any

import html5lib
import pytest
from django.core import checks
from django.core.cache import caches
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from django_smartcache import instrumentation

pytestmark = pytest.mark.usefixtures("toolbar_settings_on")

PANEL_ID = "SmartCachePanel"


def valid_html(fragment: str) -> None:
    """The panel's HTML parses strictly (html5lib raises on the first parse error)."""
    html5lib.HTMLParser(strict=True).parseFragment(fragment)


def run(view: Any, path: str = "/") -> Any:
    """The panel after one request through a hand-built toolbar, as the middleware does it."""
    from debug_toolbar.toolbar import DebugToolbar

    request = RequestFactory().get(path)
    toolbar = DebugToolbar(request, view)
    panel = toolbar.get_panel_by_id(PANEL_ID)
    panel.enable_instrumentation()
    try:
        response = toolbar.process_request(request)
    finally:
        panel.disable_instrumentation()
    panel.generate_stats(request, response)
    return panel


def alias(stats: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in stats["aliases"] if a["alias"] == name)


def test_real_hit_and_miss_answers_per_call() -> None:
    from tests.toolbar.views import lookups

    stats = run(lookups).get_stats()
    smart = [c for c in stats["calls"] if c["alias"] == "smart"]
    gets = [(c["op"], c["keys"], c["hit"]) for c in smart if c["op"].startswith("get")]
    assert gets == [
        ("get", ["greeting"], False),
        ("get", ["greeting"], True),
        # A stored None read with a non-None default: a hit; the toolbar's
        # `== default` heuristic would also get this one right, but not the reverse.
        ("get", ["nothing"], True),
        ("get_many", ["greeting", "nothing", "absent"], False),
        ("get_or_set", ["computed"], False),
        ("get_or_set", ["computed"], True),
    ]
    many = next(c for c in smart if c["op"] == "get_many")
    assert (many["hits"], many["misses"]) == (2, 1)
    # The inner get/add of get_or_set are not listed twice.
    assert [c["op"] for c in smart].count("get") == 3
    assert all(c["ms"] >= 0 for c in stats["calls"])


def test_stored_none_equal_to_default_is_a_hit() -> None:
    """The case the toolbar's CachePanel gets wrong: the value equals the default."""

    def view(request: Any) -> HttpResponse:
        cache = caches["smart"]
        cache.set("none", None)
        cache.get("none")
        cache.delete("none")
        cache.get("none")
        return HttpResponse("ok")

    calls = run(view).get_stats()["calls"]
    assert [(c["op"], c["hit"]) for c in calls if c["op"] == "get"] == [
        ("get", True),
        ("get", False),
    ]


def test_per_alias_summary_and_totals() -> None:
    from tests.toolbar.views import lookups

    panel = run(lookups)
    stats = panel.get_stats()
    smart = alias(stats, "smart")
    assert smart["backend"] == "django_smartcache.backends.smart.SmartCache"
    # get x3 (2 hits, 1 miss), get_many (2 hits, 1 miss), get_or_set x2 (1 hit, 1 miss)
    assert (smart["hits"], smart["misses"]) == (5, 3)
    assert smart["hit_rate"] == pytest.approx(5 / 8)
    assert smart["invalidations"] == 1
    assert smart["ms"] == pytest.approx(
        sum(c["ms"] for c in stats["calls"] if c["alias"] == "smart")
    )
    multi = alias(stats, "multi")
    assert (multi["hits"], multi["misses"]) == (1, 0)
    assert multi["levels"][0] == {"level": multi["levels"][0]["level"], "hits": 1}
    assert [lv["hits"] for lv in multi["levels"][1:]] == [0] * (
        len(multi["levels"]) - 1
    )
    # Aliases the view did not use are listed with no calls.
    assert alias(stats, "default")["calls"] == 0
    assert alias(stats, "default")["hit_rate"] is None
    totals = stats["totals"]
    assert totals["calls"] == len(stats["calls"])
    assert (totals["hits"], totals["misses"]) == (6, 3)
    assert panel.nav_subtitle == (
        f"{totals['calls']} calls, 67% hits, {totals['ms']:.1f} ms"
    )


def test_tag_invalidation_with_its_reason() -> None:
    from tests.toolbar.views import lookups

    stats = run(lookups).get_stats()
    assert stats["invalidations"] == [
        {
            "alias": "smart",
            "tags": ["book:1"],
            "reason": "book 1 saved",
            "on_commit": False,
        }
    ]


def test_evictions_by_cause() -> None:
    from tests.toolbar.views import evictions

    stats = run(evictions).get_stats()
    tiny = alias(stats, "tiny")
    lifetime = tiny["lifetime"]
    assert tiny["evictions"] == {"capacity": lifetime["evictions_capacity"]}
    assert tiny["evictions"]["capacity"] > 0
    assert {e["alias"] for e in stats["evictions"]} == {"tiny"}
    assert stats["evictions"][0]["key"].startswith(":1:blob:")
    assert lifetime["bytes_used"] <= lifetime["max_bytes"] == 4096
    assert lifetime["policy"] == "lru"


def test_stampede_wait_recorded() -> None:
    from tests.toolbar.views import stampede

    stats = run(stampede).get_stats()
    assert [(w["alias"], w["scope"]) for w in stats["stampede_waits"]] == [
        ("smart", "process")
    ]
    assert alias(stats, "smart")["stampede_waits"] == 1
    # The first caller missed and computed; the second waited for it and has no
    # answer of its own (its value came from the first one's computation).
    or_sets = [c for c in stats["calls"] if c["op"] == "get_or_set"]
    assert sorted((c["waited"], c["hit"] is False) for c in or_sets) == [
        (False, True),
        (True, False),
    ]


def test_async_view_calls() -> None:
    from asgiref.sync import async_to_sync
    from debug_toolbar.toolbar import DebugToolbar

    from tests.toolbar.views import async_lookups

    request = RequestFactory().get("/async/")

    async def flow() -> Any:
        toolbar = DebugToolbar(request, async_lookups)
        panel = toolbar.get_panel_by_id(PANEL_ID)
        panel.enable_instrumentation()
        try:
            response = await async_lookups(request)
        finally:
            panel.disable_instrumentation()
        panel.generate_stats(request, response)
        return panel.get_stats()

    stats = async_to_sync(flow)()
    ops = [(c["op"], c["hit"], c["is_async"]) for c in stats["calls"]]
    assert ops == [
        ("adelete", None, True),
        ("aget", False, True),
        ("aset", None, True),
        ("aget", True, True),
    ]


def test_instances_are_restored_and_nothing_is_recorded_after() -> None:
    cache = caches["smart"]
    before = dict(cache.__dict__)
    recorder = instrumentation.Recorder()
    recorder.start()
    assert cache.get.__name__ == "get" and "get" in cache.__dict__
    recorder.stop()
    assert cache.__dict__.keys() == before.keys()
    from django_smartcache.signals import entry_evicted

    assert not entry_evicted.receivers  # nothing sends evictions while no one records
    cache.get("after")
    assert recorder.calls == []
    assert instrumentation.current_recorder() is None


def test_content_is_valid_html_and_shows_everything() -> None:
    from tests.toolbar.views import lookups

    panel = run(lookups)
    content = panel.content
    valid_html(content)
    for text in (
        "Hit rate",
        '<code class="djdt-smartcache-key">greeting</code>',
        "book 1 saved",
        "django_smartcache.backends.multilevel.MultiLevelCache",
        "Lifetime statistics",
    ):
        assert text in content


def test_store_round_trip_is_json() -> None:
    from debug_toolbar.toolbar import DebugToolbar

    from tests.toolbar.views import lookups

    panel = run(lookups)
    stats = panel.get_stats()
    assert json.loads(json.dumps(stats)) == stats
    toolbar = panel.toolbar
    toolbar.init_store()
    stored = DebugToolbar.fetch(toolbar.request_id, PANEL_ID)
    reloaded = stored.get_panel_by_id(PANEL_ID)
    assert reloaded.get_stats() == stats
    assert reloaded.nav_subtitle == panel.nav_subtitle
    valid_html(reloaded.content)


def test_check_requires_the_app() -> None:
    from django_smartcache.contrib.debug_toolbar import SmartCachePanel

    assert SmartCachePanel.run_checks() == []
    from django.conf import settings

    apps = [a for a in settings.INSTALLED_APPS if a != "django_smartcache"]
    with override_settings(INSTALLED_APPS=apps):
        errors = SmartCachePanel.run_checks()
    assert [e.id for e in errors] == ["smartcache.E030"]
    assert errors[0].level == checks.ERROR
    assert "django_smartcache" in errors[0].msg


# -- integration: through the middleware -------------------------------------------------


def toolbar_get(client: Any, path: str) -> Any:
    with override_settings(DEBUG=True):
        return client.get(path)


def test_panel_in_the_page_and_render_panel_json(client: Any) -> None:
    response = toolbar_get(client, "/lookups/")
    stats_calls = 13  # the calls lookups() makes: 11 on "smart", 2 on "multi"
    assert_contains_button = '<li id="djdt-SmartCachePanel" class="djDebugPanelButton">'
    html = response.content.decode()
    assert assert_contains_button in html
    assert f"<small>{stats_calls} calls, 67% hits, " in html
    import debug_toolbar.panels

    if hasattr(debug_toolbar.panels.Panel, "nav_icon"):  # (toolbar 8 on: an icon each)
        button = html.split(assert_contains_button, 1)[1].split("</li>", 1)[0]
        assert '<svg class="djdt-nav-icon"' in button
    request_id = response.headers["djdt-request-id"]
    with override_settings(DEBUG=True):
        rendered = client.get(
            "/__debug__/render_panel/",
            {"request_id": request_id, "panel_id": PANEL_ID},
        )
    assert rendered.status_code == 200
    content = rendered.json()["content"]
    valid_html(content)
    assert "book 1 saved" in content
    assert '<code class="djdt-smartcache-key">greeting</code>' in content


def test_no_toolbar_no_recording(client: Any) -> None:
    """DEBUG off: the middleware does nothing, no instance is wrapped, no receiver is connected."""
    from django_smartcache.signals import entry_evicted

    client.get("/evictions/")
    assert "_smartcache_wrapped" not in caches["tiny"].__dict__
    assert "get" not in caches["smart"].__dict__
    assert not entry_evicted.receivers


def test_server_timing_header(client: Any) -> None:
    response = toolbar_get(client, "/lookups/")
    assert "smartcache" in response.headers.get("Server-Timing", "")


def test_times_under_the_toolbar_cache_panel_are_flagged(client: Any) -> None:
    """With the toolbar's CachePanel on, its wrappers are under ours: the panel says so."""
    from tests.toolbar.views import lookups

    # First without another wrapper (no CachePanel enabled yet in this thread): no note.
    panel = run(lookups)
    assert panel.get_stats()["nested"] == []
    assert "djdt-smartcache-nested" not in panel.content
    response = toolbar_get(client, "/lookups/")
    with override_settings(DEBUG=True):
        content = client.get(
            "/__debug__/render_panel/",
            {"request_id": response.headers["djdt-request-id"], "panel_id": PANEL_ID},
        ).json()["content"]
    assert 'class="djdt-smartcache-nested"' in content
    # Only the aliases the request called: it never called default or tiny (the note
    # named every watched alias, helper probe).
    assert "The times of smart, multi include" in content


def test_the_toolbar_cache_panel_lists_the_callers_own_arguments(client: Any) -> None:
    """Our get passes a sentinel default down to the toolbar's CachePanel wrapper,
    which listed every get as ``get ['greeting', '<object object at 0x...>']``: a
    default never passed (browser probe, MEDIUM). It shows the caller's default now."""
    response = toolbar_get(client, "/lookups/")
    with override_settings(DEBUG=True):
        content = client.get(
            "/__debug__/render_panel/",
            {
                "request_id": response.headers["djdt-request-id"],
                "panel_id": "CachePanel",
            },
        ).json()["content"]
    assert "greeting" in content
    assert "object at 0x" not in content
    assert "&#x27;fallback&#x27;" in content or "'fallback'" in content


def test_asgi_request_through_the_middleware(async_client: Any) -> None:
    """is_async = True: an ASGI request keeps the panel, and its async calls are listed."""
    from asgiref.sync import async_to_sync

    async def get(path: str, **params: Any) -> Any:
        return await async_client.get(path, params)

    with override_settings(DEBUG=True):
        response = async_to_sync(get)("/async/")
        assert response.status_code == 200
        assert '<li id="djdt-SmartCachePanel" class="djDebugPanelButton">' in (
            response.content.decode()
        )
        assert "<small>4 calls, 50% hits, " in response.content.decode()
        rendered = async_to_sync(get)(
            "/__debug__/render_panel/",
            request_id=response.headers["djdt-request-id"],
            panel_id=PANEL_ID,
        )
    content = rendered.json()["content"]
    assert "<code>aget</code>" in content


def test_l1_evictions_of_a_multilevel_cache(tmp_path: Any) -> None:
    """The L1 store reports through its own SmartCache: named "<alias> L1"."""
    tiny_l1 = {
        "BACKEND": "django_smartcache.backends.MultiLevelCache",
        "LOCATION": str(tmp_path / "levels.sqlite3"),
        "OPTIONS": {
            "LEVELS": [
                {
                    "BACKEND": "django_smartcache.backends.SmartCache",
                    "LOCATION": f"toolbar-l1-{tmp_path.name}",
                    "OPTIONS": {"MAX_MEMORY": "4KB", "POLICY": "lru"},
                },
                {
                    "BACKEND": "django_smartcache.backends.SQLiteCache",
                    "LOCATION": str(tmp_path / "levels.sqlite3"),
                },
            ]
        },
    }

    def view(request: Any) -> HttpResponse:
        multi = caches["layered"]
        for i in range(20):
            multi.set(f"blob:{i}", "x" * 600)
        return HttpResponse("ok")

    from django.conf import settings

    with override_settings(CACHES={**settings.CACHES, "layered": tiny_l1}):
        stats = run(view).get_stats()
    evicted = {e["alias"] for e in stats["evictions"]}
    assert evicted == {"layered L1"}
    layered = alias(stats, "layered")
    assert layered["evictions"]["capacity"] == len(stats["evictions"]) > 0


# -- rendering of nested statistics ------------------------------------------------------


def fragment(content: str) -> Any:
    """The panel's HTML as an ElementTree (no namespaces), to look at cells."""
    return html5lib.parseFragment(
        content, treebuilder="etree", namespaceHTMLElements=False
    )


def cells(row: Any) -> list[str]:
    return [
        "".join(cell.itertext()).strip() for cell in row if cell.tag in ("th", "td")
    ]


def stat_table(tree: Any, alias_name: str, name: str) -> Any:
    """The nested table of stat ``name`` in the lifetime section of ``alias_name``."""
    tables = tree.findall(f".//table[@data-stat='{name}']")
    mine = tree.find(f".//table[@data-alias='{alias_name}']")
    found = [t for t in tables if any(t is d for d in mine.iter("table"))]
    assert len(found) == 1, (alias_name, name)
    return found[0]


def test_lifetime_levels_coherence_and_rates_are_tables_not_reprs() -> None:
    from tests.toolbar.views import lookups

    panel = run(lookups)
    content = panel.content
    valid_html(content)
    # No Python repr of a nested value anywhere.
    for repr_start in ("[{'level'", "{'channel'", "[[':", "0.9047"):
        assert repr_start not in content
    tree = fragment(content)
    multi = alias(panel.get_stats(), "multi")["lifetime"]

    levels = stat_table(tree, "multi", "levels")
    head = cells(levels.find("thead/tr"))
    for column in ("level", "hits", "mean latency", "errors", "down", "recoveries"):
        assert column in head
    assert "pending repairs" in head
    rows = [cells(tr) for tr in levels.findall("tbody/tr")]
    assert [r[head.index("level")] for r in rows] == [
        lv["level"] for lv in multi["levels"]
    ]
    assert [r[head.index("hits")] for r in rows] == [
        str(lv["hits"]) for lv in multi["levels"]
    ]
    assert {r[head.index("down")] for r in rows} == {"no"}
    for row, level in zip(rows, multi["levels"], strict=True):
        ns = level["mean_latency_ns"]
        latency = row[head.index("mean latency")]
        assert latency == ("\u2014" if ns is None else f"{ns / 1000:.1f} \u00b5s")

    coherence = stat_table(tree, "multi", "coherence")
    kv = dict(cells(tr) for tr in coherence.findall("tbody/tr"))
    assert kv == {k.replace("_", " "): str(v) for k, v in multi["coherence"].items()}

    # The rate rows are percentages with one decimal.
    lifetime_rows = {
        r[0]: r[1]
        for r in (
            cells(tr)
            for tr in tree.findall(
                ".//table[@class='djdt-smartcache-lifetime']/tbody/tr"
            )
        )
        if len(r) == 2
    }
    assert lifetime_rows["hit_rate"] == f"{multi['hit_rate'] * 100:.1f}%"
    assert lifetime_rows["hit_rate"].endswith("%")


def test_top_accessed_and_bytes_are_readable() -> None:
    from tests.toolbar.views import evictions

    panel = run(evictions)
    content = panel.content
    valid_html(content)
    tree = fragment(content)
    tiny = alias(panel.get_stats(), "tiny")["lifetime"]
    top = stat_table(tree, "tiny", "top_accessed")
    assert cells(top.find("thead/tr")) == ["key", "hits"]
    rows = [cells(tr) for tr in top.findall("tbody/tr")]
    assert rows == [[key, str(hits)] for key, hits in tiny["top_accessed"]]
    used, cap = tiny["bytes_used"], tiny["max_bytes"]
    expected = (
        f"{used / 1024:.1f} KiB" if used >= 1024 else f"{used} B"
    ) + f" of 4.0 KiB ({used * 100 / cap:.0f}%)"
    assert "<th>bytes_used / max_bytes</th>" in content
    assert expected in content


def test_caches_table_shows_the_l1_l2_split_and_one_decimal_rates() -> None:
    from tests.toolbar.views import lookups

    panel = run(lookups)
    stats = panel.get_stats()
    tree = fragment(panel.content)
    head = cells(tree.find(".//table[@class='djdt-smartcache-aliases']/thead/tr"))
    served = head.index("Served by")
    rate = head.index("Hit rate")
    rows = {
        tr.get("id"): cells(tr)
        for tr in tree.findall(".//table[@class='djdt-smartcache-aliases']/tbody/tr")
    }
    multi_levels = alias(stats, "multi")["levels"]
    # One L1 hit in lookups(): "L1 1 · L2 0" for the default two levels.
    assert rows["smartcache-alias-multi"][served] == " \u00b7 ".join(
        f"{lv['level'].split()[0]} {lv['hits']}" for lv in multi_levels
    )
    assert rows["smartcache-alias-multi"][served].startswith("L1 1 \u00b7 L2 0")
    assert rows["smartcache-alias-smart"][served] == "\u2014"
    assert rows["smartcache-alias-smart"][rate] == "62.5%"  # 5 hits of 8 lookups
    assert rows["smartcache-alias-default"][rate] == "\u2014"


def test_async_reads_of_a_multilevel_cache_keep_their_served_by(tmp_path: Any) -> None:
    """``aget`` runs ``get`` in a thread when L1 cannot answer in place (the coherence
    poll due): through the instance attribute, which the panel wraps, the inner call's
    level hits were taken for a read-back and the "served by" split lost them."""
    import asyncio
    import time

    from django.conf import settings

    layered = {
        "BACKEND": "django_smartcache.backends.MultiLevelCache",
        "LOCATION": str(tmp_path / "levels.sqlite3"),
    }
    with override_settings(CACHES={**settings.CACHES, "layered": layered}):
        multi = caches["layered"]
        multi.set("k", 1, 60)
        recorder = instrumentation.Recorder()
        recorder.start()
        try:
            time.sleep(0.2)  # past the coherence poll's deadline: aget takes the thread
            assert asyncio.run(caches["layered"].aget("k")) == 1
        finally:
            recorder.stop()
        assert sum(call["hits"] for call in recorder.calls) == 1
        assert recorder.unlisted_level_hits.get("layered", [0, 0]) == [0, 0]
        multi.close()


def test_a_call_that_raised_says_so() -> None:
    """It was listed with a blank result, like a call whose answer is not known."""

    def view(request: Any) -> HttpResponse:
        smart = caches["smart"]
        try:
            smart.incr("no-such-counter")
        except ValueError:
            pass
        return HttpResponse("ok")

    toolbar_panel = run(view)
    calls = [c for c in toolbar_panel.get_stats()["calls"] if c["op"] == "incr"]
    assert [c["error"] for c in calls] == ["ValueError"]
    assert "raised ValueError" in toolbar_panel.content


def test_batch_results_name_only_what_happened() -> None:
    """A batch that found nothing reads "2 miss", not "0 hit, 2 miss" (outside probe)."""

    def batches(request: Any) -> HttpResponse:
        smart = caches["smart"]
        smart.delete_many(["b1", "b2", "b3"])
        smart.get_many(["b1", "b2"])  # 2 miss
        smart.set_many({"b1": 1, "b2": 2, "b3": 3})
        smart.get_many(["b1", "b2", "b3"])  # 3 hit
        smart.get_many(["b1", "absent"])  # 1 hit, 1 miss
        smart.get_many(["b1"])  # hit
        return HttpResponse("ok")

    results = [
        cell.strip()
        for cell in run(batches).content.split("<td>")
        if cell.strip().endswith(("hit</td>", "miss</td>"))
    ]
    assert [r.removesuffix("</td>") for r in results] == [
        "2 miss",
        "3 hit",
        "1 hit, 1 miss",
        "hit",
    ]
