"""Settings for Django's ``runtests.py``: Django's own ``test_sqlite`` with our default cache.

``run.py`` copies this file into the unpacked Django ``tests/`` directory as
``smartcache_settings.py`` and sets ``SMARTCACHE_UPSTREAM_BACKEND``.
"""

import os

from test_sqlite import *  # type: ignore[import-not-found]  # noqa: F403

CACHES = {"default": {"BACKEND": os.environ["SMARTCACHE_UPSTREAM_BACKEND"]}}
