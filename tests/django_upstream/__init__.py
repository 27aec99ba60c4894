"""Django's own cache test modules run against our backends: see ``run.py``.

``nox -s django_suite`` runs them; docs/conformance.md describes the run and its skip list.
"""
