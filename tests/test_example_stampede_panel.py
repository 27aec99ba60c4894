"""The example project's Stampede button under django-debug-toolbar: the waits of the
threads it starts show in the Smart cache panel of that request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_example_project import _env, _manage, _run

SCRIPT = r"""
import django, json, re
django.setup()
from django.contrib.messages import get_messages
from django.test import Client
client = Client()
client.get("/report/")
response = client.post("/report/stampede/")
content = client.get("/__debug__/render_panel/", {
    "request_id": response.headers["djdt-request-id"], "panel_id": "SmartCachePanel",
}).json()["content"]
message = client.get("/report/").content.decode()
waited = re.search(r"(\d+) waited for it", message)
table = re.search(r'<table class="djdt-smartcache-waits">.*?</table>', content, re.S)
print(json.dumps({
    "waited": int(waited.group(1)) if waited else None,
    "rows": table.group(0).count("<td><code>default (@cached catalogue_report)</code></td>") if table else 0,
}))
"""


def test_stampede_waits_show_in_the_panel(tmp_path: Path) -> None:
    pytest.importorskip("debug_toolbar")
    env = _env(tmp_path)
    _manage(env, "migrate", "--noinput")
    _manage(env, "seed")
    seen = json.loads(_run(env, "-", stdin=SCRIPT))
    assert seen["waited"], seen  # the message: "7 waited for it" (or fewer)
    # Before, the threads ran outside the request's context: the panel showed none.
    assert seen["rows"] == seen["waited"]
