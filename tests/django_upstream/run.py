"""Run Django's own cache test modules against our backends.

    python tests/django_upstream/run.py [smart sqlite multilevel multilevel-redis]

For the Django version installed in the running interpreter this

1. downloads Django's sdist for exactly that version
   (``pip download --no-binary :all: --no-deps django==X``, cached in
   ``.nox/_django-sdists/`` or ``$SMARTCACHE_DJANGO_SDIST_DIR``) and unpacks its
   ``tests/`` tree;
2. per backend, copies that tree and patches it: every
   ``django.core.cache.backends.locmem.LocMemCache`` in ``cache/tests.py``,
   ``sessions_tests/tests.py`` and ``template_tests/syntax_tests/test_cache.py``
   becomes the backend under test, and the lines of ``LocMemCacheTests.setUp``
   that rebind LocMem's ``_cache``/``_expire_info`` are removed;
3. appends to each module of ``SKIPS`` a block that wraps the listed tests with
   ``unittest.skip(reason)``, and that fails the import when a listed test no
   longer exists, so the list cannot rot;
4. runs Django's ``runtests.py`` on ``MODULES`` with ``smartcache_settings``
   (Django's ``test_sqlite`` with CACHES["default"] = the backend). Every test
   not in ``SKIPS`` must pass.

``multilevel-redis`` starts Debian's ``redis-server`` on a free loopback port
(the test suite's own fixture code) and stops it afterwards. Without
``redis-server`` that backend is skipped with a hint, or fails when
``SMARTCACHE_REQUIRE_REDIS=1`` (as ``.ci/run`` sets it).

The backends run side by side (``--jobs``, default 4: the suites mostly sleep,
so four take about as long as one). ``--no-skip`` runs without the skip list (to
see whether an entry still fails), ``--keep`` keeps the patched trees, anything
after ``--`` goes to runtests.py (``-- -v 2``, ``-- -k test_cull``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

#: Django's test modules, as labels of its runtests.py.
MODULES = ["cache", "template_tests.syntax_tests.test_cache", "sessions_tests"]

#: Files whose LocMemCache configuration is replaced by the backend under test.
PATCHED_FILES = [
    "cache/tests.py",
    "sessions_tests/tests.py",
    "template_tests/syntax_tests/test_cache.py",
]
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"

#: Backend name -> the BACKEND string put in place of LocMemCache. The shims
#: (smartcache_shims.py) map LocMem-style LOCATIONs ("", "other") to files.
BACKENDS = {
    "smart": "django_smartcache.backends.SmartCache",
    "sqlite": "smartcache_shims.SQLite",
    "multilevel": "smartcache_shims.MultiLevel",
    "multilevel-redis": "smartcache_shims.MultiRedis",
}

# --- The skip list: the only tests of MODULES that are not run. -------------
# Backend -> {test id ("module.Class.test") -> reason}. Each entry is a test
# Django wrote for LocMemCache's internals or its exact culling arithmetic, not
# for the cache API; the reason shows in runtests.py's output (-v 2). Anything
# not listed must pass. An entry naming a test that no longer exists fails the
# run; `run.py --no-skip BACKEND` shows which entries still fail.

_DNE = "cache.tests.DefaultNonExpiringCacheKeyTests."
_LM = "cache.tests.LocMemCacheTests."

#: Read LocMemCache's private attributes: no other backend has them.
_EXPIRE_INFO = "reads LocMemCache._expire_info"
_LOCK = "reads LocMemCache._lock"

_SMART_CULL = (
    "LocMem's cull arithmetic (MAX_ENTRIES reached: drop 1/CULL_FREQUENCY at once); "
    "SmartCache evicts one entry at a time"
)
_SMART_LRU = (
    "LocMem's exact LRU order under a 3-key cull; "
    "SmartCache evicts one entry at a time by its own policy"
)
_SQLITE_LRU = (
    "LocMem's exact LRU order on get; SQLiteCache refreshes a read key's "
    "access time only every ACCESS_INTERVAL (set() and incr() order pass)"
)
_MULTI_CULL = (
    "LocMem's cull arithmetic / LRU order; the L2 culls as expected, "
    "but the L1 copies of culled keys outlive the cull (test_lru_incr: an incr of "
    "such a key raises ValueError, as LocMem's does for a key it culled)"
)
_REDIS_CULL = (
    "MAX_ENTRIES with LEVELS is refused by design "
    "(Django's RedisCacheTests exclude the cull tests too)"
)

#: Backend -> {test class ("module.Class") -> the exception its incr()/decr() of a
#: non-integer raises}, set as the class's ``incr_decr_type_error`` (LocMem's is
#: TypeError): Redis raises ResponseError there, as Django's RedisCacheTests expect;
#: the rest of test_incr/test_decr runs (they were skipped whole for it).
INCR_DECR_ERRORS: dict[str, dict[str, str]] = {
    "multilevel-redis": {
        "cache.tests.LocMemCacheTests": "redis.exceptions.ResponseError"
    },
}

SKIPS: dict[str, dict[str, str]] = {
    "smart": {
        _DNE + "test_caches_set_with_timeout_as_none_set_non_expiring_key": _EXPIRE_INFO,
        _DNE + "test_caches_with_unset_timeout_set_expiring_key": _EXPIRE_INFO,
        _LM + "test_incr_decr_timeout": _EXPIRE_INFO,
        _LM + "test_locking_on_pickle": _LOCK,
        _LM + "test_cull": _SMART_CULL,
        _LM + "test_zero_cull": _SMART_CULL,
        _LM + "test_lru_get": _SMART_LRU,
        _LM + "test_lru_set": _SMART_LRU,
        _LM + "test_lru_incr": _SMART_LRU,
    },
    # test_cull and test_zero_cull pass: SQLiteCache culls as DatabaseCache does.
    "sqlite": {
        _DNE + "test_caches_set_with_timeout_as_none_set_non_expiring_key": _EXPIRE_INFO,
        _DNE + "test_caches_with_unset_timeout_set_expiring_key": _EXPIRE_INFO,
        _LM + "test_incr_decr_timeout": _EXPIRE_INFO,
        _LM + "test_locking_on_pickle": _LOCK,
        _LM + "test_lru_get": _SQLITE_LRU,
    },
    # MultiLevelCache with its default levels (SmartCache L1, SQLiteCache L2).
    "multilevel": {
        _DNE + "test_caches_set_with_timeout_as_none_set_non_expiring_key": _EXPIRE_INFO,
        _DNE + "test_caches_with_unset_timeout_set_expiring_key": _EXPIRE_INFO,
        _LM + "test_incr_decr_timeout": _EXPIRE_INFO,
        _LM + "test_locking_on_pickle": _LOCK,
        _LM + "test_cull": _MULTI_CULL,
        _LM + "test_zero_cull": _MULTI_CULL,
        _LM + "test_lru_get": _MULTI_CULL,
        _LM + "test_lru_set": _MULTI_CULL,
        _LM + "test_lru_incr": _MULTI_CULL,
    },
    # MultiLevelCache of a SmartCache L1 over Django's RedisCache.
    "multilevel-redis": {
        _DNE + "test_caches_set_with_timeout_as_none_set_non_expiring_key": _EXPIRE_INFO,
        _DNE + "test_caches_with_unset_timeout_set_expiring_key": _EXPIRE_INFO,
        _LM + "test_incr_decr_timeout": _EXPIRE_INFO,
        _LM + "test_locking_on_pickle": _LOCK,
        _LM + "test_cull": _REDIS_CULL,
        _LM + "test_zero_cull": _REDIS_CULL,
        _LM + "test_cull_delete_when_store_empty": _REDIS_CULL,
        _LM + "test_lru_get": _REDIS_CULL,
        _LM + "test_lru_set": _REDIS_CULL,
        _LM + "test_lru_incr": _REDIS_CULL,
    },
}  # fmt: skip

_ERROR_BLOCK = """

# --- Added by django-smartcache's tests/django_upstream/run.py -----------------
from django.utils.module_loading import import_string as _smartcache_import

{cls}.incr_decr_type_error = _smartcache_import({error!r})
"""

_SKIP_BLOCK = """

# --- Added by django-smartcache's tests/django_upstream/run.py -----------------
def _smartcache_apply_skips(skips):
    import unittest

    missing = []
    for name, reason in skips.items():
        class_name, _, test_name = name.partition(".")
        cls = globals().get(class_name)
        if cls is None or not callable(getattr(cls, test_name, None)):
            missing.append(name)
            continue
        # On this class only: subclasses and siblings keep the test.
        setattr(cls, test_name, unittest.skip(reason)(getattr(cls, test_name)))
    if missing:
        raise RuntimeError(
            "django-smartcache skip list names tests that do not exist in "
            + __name__ + ": " + ", ".join(missing)
            + " (update SKIPS in tests/django_upstream/run.py)"
        )


_smartcache_apply_skips({skips!r})
"""


def log(message: str) -> None:
    print(f"[django_upstream] {message}", flush=True)


def django_version() -> str:
    return importlib.metadata.version("django")


def sdist_dir() -> Path:
    env = os.environ.get("SMARTCACHE_DJANGO_SDIST_DIR")
    return Path(env) if env else ROOT / ".nox" / "_django-sdists"


def django_tests_tree(version: str) -> Path:
    """The pristine ``tests/`` of Django's sdist for ``version``, downloaded once."""
    cache = sdist_dir()
    tree = cache / f"django-{version}" / "tests"
    if (tree / "runtests.py").exists():
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    archives = list(cache.glob(f"[dD]jango-{version}.tar.gz"))
    if not archives:
        log(f"downloading Django {version}'s sdist into {cache}")
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--quiet",
                "--no-binary", ":all:", "--no-deps", f"django=={version}",
                "-d", str(cache),
            ],
            check=True,
        )  # fmt: skip
        archives = list(cache.glob(f"[dD]jango-{version}.tar.gz"))
    if len(archives) != 1:
        raise SystemExit(
            f"expected one Django {version} sdist in {cache}, found {archives}"
        )
    staging = Path(tempfile.mkdtemp(dir=cache))
    with tarfile.open(archives[0]) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.name.split("/")[1:2] == ["tests"] and (m.isfile() or m.isdir())
        ]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(staging, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tar.extractall(staging, members=members)
    extracted = next(staging.iterdir()) / "tests"
    tree.parent.mkdir(exist_ok=True)
    try:
        extracted.rename(tree)
    except OSError:
        if not (tree / "runtests.py").exists():  # else: a concurrent run won
            raise
    shutil.rmtree(staging)
    return tree


def _replace_once(text: str, old: str, new: str, where: str) -> str:
    if text.count(old) != 1:
        raise SystemExit(
            f"{where}: expected exactly one {old!r}; Django changed, update run.py"
        )
    return text.replace(old, new)


def prepare_tree(
    pristine: Path, dest: Path, backend: str, skip: bool
) -> dict[str, str]:
    """Copy Django's tests to ``dest`` and patch them for ``backend``; return the skips."""
    shutil.copytree(pristine, dest, symlinks=True)
    target = BACKENDS[backend]
    for rel in PATCHED_FILES:
        path = dest / rel
        text = path.read_text()
        if LOCMEM not in text:
            raise SystemExit(
                f"{rel}: no {LOCMEM} to replace; Django changed, update run.py"
            )
        path.write_text(text.replace(LOCMEM, target))

    # LocMemCacheTests.setUp makes the "prefix", "v2", "custom_key" and
    # "custom_key2" caches share the default cache's LocMem dicts. Our backends
    # share a store by LOCATION (all "" here), so those lines are removed.
    path = dest / "cache" / "tests.py"
    text = path.read_text()
    for alias in ["prefix", "v2", "custom_key", "custom_key2"]:
        for attr in ["_cache", "_expire_info"]:
            line = f'        caches["{alias}"].{attr} = cache.{attr}\n'
            text = _replace_once(
                text, line, "", "cache/tests.py LocMemCacheTests.setUp"
            )
    path.write_text(text)

    skips = SKIPS[backend] if skip else {}
    by_module: dict[str, dict[str, str]] = {}
    for test_id, reason in skips.items():
        module, class_name, test_name = test_id.rsplit(".", 2)
        by_module.setdefault(module, {})[f"{class_name}.{test_name}"] = reason
    for module, entries in by_module.items():
        path = dest.joinpath(*module.split(".")).with_suffix(".py")
        with path.open("a") as f:
            f.write(_SKIP_BLOCK.format(skips=entries))
    for test_class, error in INCR_DECR_ERRORS.get(backend, {}).items():
        module, class_name = test_class.rsplit(".", 1)
        path = dest.joinpath(*module.split(".")).with_suffix(".py")
        with path.open("a") as f:
            f.write(_ERROR_BLOCK.format(cls=class_name, error=error))

    for name in ["smartcache_settings.py", "smartcache_shims.py"]:
        shutil.copy(HERE / name, dest / name)
    return skips


@contextmanager
def redis_url(required: bool) -> Iterator[str | None]:
    """A fresh redis-server on a free loopback port, or None where there is none."""
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.servers import (
        REDIS_INSTALL_HINT as INSTALL_HINT,
        RedisServer,
        find_binary,
        free_port,
    )

    binary = find_binary("redis-server")
    if binary is None:
        if required:
            raise SystemExit(f"{INSTALL_HINT} (SMARTCACHE_REQUIRE_REDIS=1)")
        log(f"SKIPPED multilevel-redis: {INSTALL_HINT}")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="smartcache-upstream-redis-") as workdir:
        server = RedisServer(binary, free_port(), Path(workdir))
        server.start()
        try:
            yield f"redis://127.0.0.1:{server.port}"
        finally:
            server.stop()


def run_backend(
    backend: str,
    pristine: Path,
    workdir: Path,
    skip: bool,
    extra: list[str],
    capture: bool,
) -> bool | None:
    """Run MODULES against ``backend``: True passed, False failed, None skipped.

    With ``capture`` the output goes to a log printed in one piece at the end,
    so that backends run side by side do not interleave.
    """
    tree = workdir / backend / "tests"
    skips = prepare_tree(pristine, tree, backend, skip)
    env = {
        **os.environ,
        "SMARTCACHE_UPSTREAM_BACKEND": BACKENDS[backend],
        "SMARTCACHE_UPSTREAM_DIR": str(workdir / backend / "data"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    command = [
        sys.executable, "runtests.py", "--settings=smartcache_settings",
        "--parallel=1", "--noinput", *extra, *MODULES,
    ]  # fmt: skip
    with (
        redis_url(os.environ.get("SMARTCACHE_REQUIRE_REDIS") == "1")
        if backend == "multilevel-redis"
        else _nothing()
    ) as url:
        if backend == "multilevel-redis":
            if url is None:
                return None
            env["SMARTCACHE_UPSTREAM_REDIS"] = url
        header = f"{backend}: Django {django_version()}, {BACKENDS[backend]}, {len(skips)} skipped by SKIPS"
        started = time.monotonic()
        if capture:
            log(f"{header} (started)")
            output = workdir / backend / "output.log"
            with output.open("w") as out:
                result = subprocess.run(
                    command,
                    cwd=tree,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
        else:
            log(header)
            result = subprocess.run(command, cwd=tree, env=env, check=False)
        elapsed = time.monotonic() - started
    verdict = "passed" if result.returncode == 0 else "FAILED"
    with _PRINT_LOCK:
        if capture:
            log(f"---- {header}: output of runtests.py ----")
            sys.stdout.write(output.read_text())
        log(f"{backend}: {verdict} in {elapsed:.0f}s")
    return result.returncode == 0


_PRINT_LOCK = threading.Lock()


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "backends", nargs="*", help=f"any of {', '.join(BACKENDS)} (default: all)"
    )
    parser.add_argument("--no-skip", action="store_true", help="ignore SKIPS")
    parser.add_argument("--keep", action="store_true", help="keep the patched trees")
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=int(os.environ.get("SMARTCACHE_UPSTREAM_JOBS", "4")),
        help="backends run side by side (default 4: the suites mostly sleep)",
    )
    args = parser.parse_args(argv)
    backends = args.backends or list(BACKENDS)
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(
            f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}"
        )

    pristine = django_tests_tree(django_version())
    workdir = Path(tempfile.mkdtemp(prefix="smartcache-django-upstream-"))
    jobs = max(1, min(args.jobs, len(backends)))
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(jobs) as pool:
            futures = {
                backend: pool.submit(
                    run_backend,
                    backend,
                    pristine,
                    workdir,
                    not args.no_skip,
                    extra,
                    jobs > 1,
                )
                for backend in backends
            }
            results = {backend: future.result() for backend, future in futures.items()}
    finally:
        if args.keep:
            log(f"patched trees kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        True: "passed",
        False: "FAILED",
        None: "SKIPPED: redis-server not found (apt-get install redis-server)",
    }
    log(
        f"Django {django_version()}, {len(backends)} backend(s), {jobs} at a time, {time.monotonic() - started:.0f}s:"
    )
    for backend, ok in results.items():
        log(f"  {backend:17} {summary[ok]}")
    return 0 if all(ok is not False for ok in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
