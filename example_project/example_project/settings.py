"""Settings of the example shop: everything on the embedded default, no server to run.

The cache is django-smartcache's default ``MultiLevelCache``: an in-process ``SmartCache``
L1 over a ``SQLiteCache`` L2 file in ``var/``, shared by every worker on the machine.
``SMARTCACHE_EXAMPLE_VAR`` moves ``var/`` (the tests give each run its own directory).
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SMARTCACHE_EXAMPLE_VAR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = "example-only-not-secret"
DEBUG = os.environ.get("SMARTCACHE_EXAMPLE_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INTERNAL_IPS = ["127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_smartcache",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
ASGI_APPLICATION = "example_project.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "db.sqlite3"}
}
# No sessions app: flash messages travel in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"

# The embedded default: an in-process SmartCache L1 over a SQLite file L2 shared by
# every worker process on this machine; no server to run. Every option keeps its
# documented default (docs/multilevel.md).
CACHES = {
    "default": {
        "BACKEND": "django_smartcache.backends.MultiLevelCache",
        "LOCATION": str(VAR_DIR / "cache.sqlite3"),
    },
}

STATIC_URL = "static/"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-debug-toolbar when it is installed (``pip install "django-smartcache[toolbar]"``)
# and DEBUG is on: Django's panels plus ours, when django_smartcache ships it.
# ``SMARTCACHE_EXAMPLE_TOOLBAR=0`` turns it off.
TOOLBAR = (
    DEBUG
    and os.environ.get("SMARTCACHE_EXAMPLE_TOOLBAR", "1") == "1"
    and find_spec("debug_toolbar") is not None
)
if TOOLBAR:
    INSTALLED_APPS.append("debug_toolbar")
    MIDDLEWARE.insert(0, "debug_toolbar.middleware.DebugToolbarMiddleware")
    # The toolbar's own defaults for the version installed (a fixed list named panels,
    # such as TasksPanel, that older versions do not have), then ours.
    from debug_toolbar.settings import PANELS_DEFAULTS

    DEBUG_TOOLBAR_PANELS = list(PANELS_DEFAULTS)
    try:
        PANEL = find_spec("django_smartcache.contrib.debug_toolbar") is not None
    except ModuleNotFoundError:  # django_smartcache.contrib itself is not there
        PANEL = False
    if PANEL:
        DEBUG_TOOLBAR_PANELS.append(
            "django_smartcache.contrib.debug_toolbar.SmartCachePanel"
        )
