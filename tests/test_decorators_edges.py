"""``@cached`` at its edges: scripts' functions, pickling, a lock the cache refuses,
values that cannot be stored, arguments too deep to key."""

from __future__ import annotations

import warnings

import pytest

from django_smartcache.decorators import cached
from tests.test_decorators import memo_caches  # noqa: F401 (autouse fixture)

# -- functions without a module of their own ------------------------------------------

SCRIPT = """
@cached(timeout=60)
def lookup(item):
    return item
"""


@pytest.mark.parametrize(
    ("namespace", "says"),
    [
        ({"__name__": "__main__"}, "is defined in __main__"),  # python script.py
        ({}, "was compiled from a string"),  # manage.py shell, exec(): no module
        ({"__name__": "django.core.management.commands.shell"}, "from a string"),
    ],
)
def test_a_scripts_function_without_a_name_is_warned_about(namespace, says) -> None:
    # Two cron scripts each defining lookup() in __main__ read each other's entries.
    namespace["cached"] = cached
    with pytest.warns(RuntimeWarning, match=says) as caught:
        exec(compile(SCRIPT, "<string>", "exec"), namespace)  # noqa: S102
    message = str(caught[0].message)
    assert "lookup" in message and "name=" in message
    assert caught[0].filename == "<string>"  # points at the decorated line
    assert namespace["lookup"]("book") == "book"  # still works


def test_a_named_script_function_and_a_module_function_are_not_warned_about() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(  # noqa: S102
            compile(
                SCRIPT.replace("timeout=60", 'name="cron.prices.lookup"'), "x", "exec"
            ),
            {"__name__": "__main__", "cached": cached},
        )

        @cached
        def module_level(item):
            return item

        assert module_level("x") == "x"
