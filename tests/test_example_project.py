"""The example project, end to end: its own settings, in subprocesses, on a fresh ``var/``.

``manage.py check``, ``migrate``, ``seed`` and ``smartcache_warm`` run as a user would run
them; then a script fetches every page with Django's test client in a process of its own
(the example has its own settings module) and reports what it saw.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"

#: Runs inside the example project: fetches the pages, prints one JSON object.
BROWSE = r"""
import json, re
import django
django.setup()
from django.test import Client
from shop.models import Category, Product

def page(response):
    return {"status": response.status_code, "html": response.content.decode()}

def badge(html):
    return re.search(r'class="badge (hit|miss)"', html).group(1)

client = Client()
out = {"names": list(Product.objects.values_list("name", flat=True)),
       "categories": list(Category.objects.values_list("name", flat=True))}
product = Product.objects.order_by("pk").first()
out["pk"] = product.pk
out["list_1"] = page(client.get("/"))
out["list_2"] = page(client.get("/"))
detail = f"/product/{product.pk}/"
out["detail_1"] = page(client.get(detail))
out["detail_2"] = page(client.get(detail))
edit = client.post(detail, {
    "name": "Renamed beans", "category": product.category_id, "price": "15.00",
    "stock": 3, "description": product.description,
    "tags": list(product.tags.values_list("pk", flat=True)),
})
out["edit"] = {"status": edit.status_code, "location": edit.get("Location")}
out["detail_3"] = page(client.get(detail))
out["detail_4"] = page(client.get(detail))
out["list_3"] = page(client.get("/"))
# Now both pages were stored by the views themselves (not by the warmer, whose own tags
# would hide a missing tag): a second edit must drop them through their own tags.
product.refresh_from_db()
again = client.post(detail, {
    "name": "Renamed twice", "category": product.category_id, "price": "15.00",
    "stock": 3, "description": product.description,
    "tags": list(product.tags.values_list("pk", flat=True)),
})
out["edit_2"] = {"status": again.status_code}
out["detail_6"] = page(client.get(detail))
out["list_6"] = page(client.get("/"))
out["report_1"] = page(client.get("/report/"))
out["report_2"] = page(client.get("/report/"))
out["stampede"] = page(client.post("/report/stampede/", follow=True))
out["tools"] = page(client.get("/cache/"))
client.get(detail)  # cached again, to be deleted by the pattern
out["pattern"] = page(client.post("/cache/delete-pattern/", {"pattern": "shop:product:*"}, follow=True))
out["detail_5"] = page(client.get(detail))
out["invalidate"] = page(client.post("/cache/invalidate/", {"tag": "model:shop.product"}, follow=True))
out["list_4"] = page(client.get("/"))
out["warm_button"] = page(client.post("/cache/command/", {"name": "smartcache_warm"}, follow=True))
out["list_5"] = page(client.get("/"))
out["stats"] = page(client.get("/stats/"))
out["long_pattern"] = page(client.post("/cache/delete-pattern/", {"pattern": "p" * 201}, follow=True))
out["long_tag"] = page(client.post("/cache/invalidate/", {"tag": "t" * 201}, follow=True))
out["empty_tag"] = page(client.post("/cache/invalidate/", {"tag": ""}, follow=True))
out["badges"] = {k: badge(v["html"]) for k, v in out.items()
                 if isinstance(v, dict) and "html" in v and 'class="badge ' in v["html"]}
print(json.dumps(out))
"""


def _env(var: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(ROOT)]),
        SMARTCACHE_EXAMPLE_VAR=str(var),
        **extra,
    )
    return env


def _run(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        check=False,  # the assertion below shows both outputs
        cwd=EXAMPLE,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _manage(env: dict[str, str], *args: str) -> str:
    return _run(env, "manage.py", *args)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A migrated, seeded, warmed example project; the manage.py outputs and the pages."""
    var = tmp_path_factory.mktemp("example_var")
    env = _env(var, SMARTCACHE_EXAMPLE_TOOLBAR="0")
    outputs = {
        "check": _manage(env, "check"),
        "migrate": _manage(env, "migrate", "--noinput"),
        "seed": _manage(env, "seed"),
        "seed_again": _manage(env, "seed"),
        "warm_list": _manage(env, "smartcache_warm", "--list"),
        "warm": _manage(env, "smartcache_warm"),
        "stats_cmd": _manage(env, "smartcache_stats"),
    }
    pages = json.loads(_run(env, "-", stdin=BROWSE))
    return {"var": var, **outputs, **pages}


def test_manage_commands(shop: dict[str, Any]) -> None:
    assert "System check identified no issues" in shop["check"]
    assert "Applying shop.0001_initial... OK" in shop["migrate"]
    seeded = re.search(r"Seeded (\d+) new product\(s\).* (\d+) products", shop["seed"])
    assert seeded and seeded.group(1) == seeded.group(2) == str(len(shop["names"]))
    assert shop["seed_again"].startswith("Seeded 0 new product(s)")
    assert "shop.pages" in shop["warm_list"]
    # The list plus one page per product, each counted by the warmer registry.
    warmed = re.search(r"Warmed shop\.pages on 'default': (\d+) keys set", shop["warm"])
    assert warmed and int(warmed.group(1)) == len(shop["names"]) + 1
    assert "L2 SQLiteCache" in shop["stats_cmd"]
    # The embedded default: the cache file lives in the example's var/ directory.
    assert (shop["var"] / "cache.sqlite3").is_file()
    assert str(shop["var"] / "cache.sqlite3") in shop["stats_cmd"]


def test_every_page_renders(shop: dict[str, Any]) -> None:
    for name in ("list_1", "detail_1", "report_1", "tools", "stats"):
        assert shop[name]["status"] == 200, name
    for product in shop["names"]:
        assert product in shop["list_1"]["html"]
    for category in shop["categories"]:
        assert category in shop["report_1"]["html"]
    assert "delete_pattern" in shop["tools"]["html"]
    assert "invalidate_tags" in shop["tools"]["html"]


def test_warmed_pages_are_hits_from_the_shared_file(shop: dict[str, Any]) -> None:
    # Warmed by another process: served from the SQLite L2 at the first request.
    assert shop["badges"]["list_1"] == "hit"
    assert shop["badges"]["detail_1"] == "hit"


def test_an_edit_invalidates_the_cached_pages(shop: dict[str, Any]) -> None:
    assert shop["edit"] == {"status": 302, "location": f"/product/{shop['pk']}/"}
    assert "Renamed beans" not in shop["list_2"]["html"]
    assert shop["badges"]["detail_3"] == "miss"
    assert "Renamed beans" in shop["detail_3"]["html"]
    assert shop["badges"]["detail_4"] == "hit"
    assert "Renamed beans" in shop["detail_4"]["html"]
    assert shop["badges"]["list_3"] == "miss"
    assert "Renamed beans" in shop["list_3"]["html"]
    assert shop["edit_2"] == {"status": 302}
    assert shop["badges"]["detail_6"] == "miss"
    assert "Renamed twice" in shop["detail_6"]["html"]
    assert shop["badges"]["list_6"] == "miss"
    assert "Renamed twice" in shop["list_6"]["html"]
    assert "tags_invalidated" in shop["stats"]["html"]
    assert f"post_save shop.product pk={shop['pk']}" in shop["stats"]["html"]


def test_cached_report_and_stampede(shop: dict[str, Any]) -> None:
    assert shop["badges"]["report_1"] == "miss"
    assert shop["badges"]["report_2"] == "hit"
    message = re.search(
        r"Stampede: (\d+) concurrent callers, (\d+) computation\(s\), (\d+) waited",
        shop["stampede"]["html"],
    )
    assert message, shop["stampede"]["html"]
    callers, computations, waited = map(int, message.groups())
    assert callers == 8
    assert computations == 1
    assert 0 < waited < callers


def test_delete_pattern_and_invalidate_tags_buttons(shop: dict[str, Any]) -> None:
    deleted = re.search(r"\[glob\]: (\d+) key\(s\) deleted", shop["pattern"]["html"])
    assert deleted and int(deleted.group(1)) >= 1
    assert shop["badges"]["detail_5"] == "miss"
    assert (
        "invalidate_tags(&#x27;model:shop.product&#x27;)" in shop["invalidate"]["html"]
    )
    assert shop["badges"]["list_4"] == "miss"
    assert "Warmed shop.pages on &#x27;default&#x27;" in shop["warm_button"]["html"]
    assert shop["badges"]["list_5"] == "hit"


def test_stats_page_shows_each_level(shop: dict[str, Any]) -> None:
    html = shop["stats"]["html"]
    assert "django_smartcache.backends.multilevel.MultiLevelCache" in html
    assert "L1 SmartCache" in html and "L2 SQLiteCache" in html
    assert re.search(r"<span>hit rate</span><strong>\d+%</strong>", html)
    assert re.search(r"<span>memory</span><strong>[\d.]+\s", html)  # L1's
    assert re.search(r"<span>file data</span><strong>[\d.]+\s", html)  # L2's
    assert html.count("<span>memory</span>") == 1
    assert "evictions" in html and "invalidated" in html


def test_debug_toolbar_with_the_smartcache_panel(tmp_path: Path) -> None:
    """With DEBUG and django-debug-toolbar installed, every page carries the toolbar,
    with our panel once ``django_smartcache.contrib.debug_toolbar`` exists."""
    pytest.importorskip("debug_toolbar")
    env = _env(tmp_path)
    _manage(env, "migrate", "--noinput")
    _manage(env, "seed")
    script = (
        "import django, json\n"
        "django.setup()\n"
        "from django.conf import settings\n"
        "from django.test import Client\n"
        "r = Client().get('/')\n"
        "print(json.dumps({'status': r.status_code, 'html': r.content.decode(),\n"
        "                  'panels': settings.DEBUG_TOOLBAR_PANELS}))\n"
    )
    seen = json.loads(_run(env, "-", stdin=script))
    assert seen["status"] == 200
    assert 'id="djDebug"' in seen["html"]
    panel = "django_smartcache.contrib.debug_toolbar.SmartCachePanel"
    try:
        from importlib.util import find_spec

        shipped = find_spec("django_smartcache.contrib.debug_toolbar") is not None
    except ModuleNotFoundError:
        shipped = False
    assert (panel in seen["panels"]) is shipped
    if shipped:
        assert "SmartCachePanel" in seen["html"]


def test_the_tools_page_says_what_a_pattern_does_to_tag_versions(
    shop: dict[str, Any],
) -> None:
    """It said tag versions are kept; on the example's MultiLevelCache over SQLite
    ``delete_pattern("*")`` deletes them (docs/multilevel.md)."""
    html = shop["tools"]["html"]
    assert "tag versions are kept" not in html
    assert "deletes them, and every entry carrying" in html


def test_a_too_long_pattern_or_tag_is_named_as_such(shop: dict[str, Any]) -> None:
    """A 201-character input said "A pattern is required." / "A tag is required."."""
    assert (
        "A pattern is at most 200 characters (this one has 201)."
        in shop["long_pattern"]["html"]
    )
    assert (
        "A tag is at most 200 characters (this one has 201)."
        in shop["long_tag"]["html"]
    )
    assert "A tag is required." in shop["empty_tag"]["html"]
