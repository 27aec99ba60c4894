"""The core must stay importable, and imported, without Django."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_django() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "import django_smartcache.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'django_smartcache.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'django' or n.startswith('django.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"core imported Django modules: {out.stdout}"
