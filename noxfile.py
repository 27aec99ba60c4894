"""Sessions: ``nox`` runs lint, mypy, the test suite and Django's own cache tests on
Django 5.2; ``nox -s matrix`` the support matrix."""

from __future__ import annotations

import glob
import os

import nox

nox.options.sessions = ["lint", "mypy", "tests", "django_suite(5.2)"]
nox.options.reuse_existing_virtualenvs = True

# pyenv's shims answer only for the selected version; put every installed
# interpreter's own directory first so nox finds python3.12, python3.13, ...
_PYENV_BINS = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin")))
os.environ["PATH"] = os.pathsep.join([*_PYENV_BINS, os.environ.get("PATH", "")])

#: Django series -> Python versions it is supported on here.
MATRIX = {
    "5.2": ["3.11", "3.12", "3.13"],
    "6.0": ["3.12", "3.13"],
    "6.1": ["3.12", "3.13"],
}


def _install_for_tests(session: nox.Session, django: str) -> None:
    session.install(f"django~={django}.0", "-e", ".[redis,toolbar]", "--group", "test")


@nox.session
def lint(session: nox.Session) -> None:
    session.install("--group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def mypy(session: nox.Session) -> None:
    session.install("--group", "typing")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite on this interpreter with Django 5.2 LTS, with coverage."""
    _install_for_tests(session, os.environ.get("DJANGO_SERIES", "5.2"))
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report")


@nox.session
@nox.parametrize(
    "python,django", [(py, dj) for dj, pys in MATRIX.items() for py in pys]
)
def matrix(session: nox.Session, django: str) -> None:
    """Django 5.2 on Python 3.11-3.13, Django 6.0 and 6.1 on 3.12/3.13."""
    _install_for_tests(session, django)
    session.run("pytest", "-m", "not e2e", *session.posargs)


@nox.session
def example(session: nox.Session) -> None:
    """Run the example shop on the embedded default (SQLite L2, no server)."""
    session.install("-e", ".[toolbar]")
    manage = ["python", "example_project/manage.py"]
    session.run(*manage, "migrate", "--noinput")
    session.run(*manage, "seed")
    session.run(*manage, "smartcache_warm")
    session.run(*manage, *(session.posargs or ["runserver", "127.0.0.1:8000"]))


@nox.session
def bench(session: nox.Session) -> None:
    """Print the benchmark tables (every suite of ``python -m benchmarks``; arguments
    after ``--`` pick suites and options, e.g. ``nox -s bench -- latency``)."""
    session.install("-e", ".[redis]", "--group", "bench")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
@nox.parametrize(
    "python,django", [nox.param(pys[0], dj, id=dj) for dj, pys in MATRIX.items()]
)
def django_suite(session: nox.Session, django: str) -> None:
    """Django's own cache, session and {% cache %} tests against our four backends.

    ``nox -s "django_suite(5.2)"`` for one series; what follows ``--`` goes to
    tests/django_upstream/run.py: backend names, ``--no-skip``, ``--keep``, ...
    """
    # pytest only for tests/fixtures/redis_server.py, which starts redis-server.
    session.install(f"django~={django}.0", "-e", ".[redis]", "pytest")
    session.run("python", "tests/django_upstream/run.py", *session.posargs)
