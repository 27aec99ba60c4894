"""How ``@cached`` names a function and its arguments in keys: one name per function, one identity per value."""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import AsyncToSync, SyncToAsync
from django.db import models
from django.utils.functional import Promise

from ._memo_options import _invalid
from .core import keys


def _name_of(func: Callable[..., Any]) -> str:
    """``module.qualname``: what tells ``func``'s entries apart from other functions'.

    Refused where it does not: a lambda, a ``partial`` or another callable object (their
    name is their type's), and a closure made inside a function (every closure its
    factory makes has the same name, whatever it captured). Their entries would be
    shared, and one function would silently return another's results.

    A wrapper made with ``functools.wraps`` copies the name of the function it wraps,
    so each wrapper in the chain adds its own identity (see :func:`_wrapper_name`):
    two wrappers of one function are two functions.
    """
    layers = _layers(func)
    inner = layers[-1]
    qualname = getattr(inner, "__qualname__", None)
    # Captured: free variables but __class__ (super()) and the function's own name
    # (a recursive function calls itself: nothing that differs between closures).
    captured = (
        sorted(set(inner.__code__.co_freevars) - {"__class__", inner.__name__})
        if inspect.isfunction(inner)
        else []
    )
    if not inspect.isfunction(inner) or qualname is None:
        why = f"{func!r} is not a function: its name is its type's"
    elif "<lambda>" in qualname:
        why = f"{qualname} is a lambda: every lambda has that name"
    elif "<locals>" in qualname and captured:
        why = (
            f"{qualname} is a closure over {', '.join(captured)}: every function its "
            f"factory makes has that name, whatever it captured"
        )
    else:
        wrappers = [
            _wrapper_name(layer, wrapped)
            for layer, wrapped in itertools.pairwise(layers)
            if not _transparent(layer)
        ]
        return "@".join([f"{inner.__module__}.{qualname}", *reversed(wrappers)])
    raise _invalid("name", f"{why}, {_SHARED}")


def _warn_if_unnamed_script(func: Callable[..., Any], name: str) -> None:
    """Warn, at decoration, that ``func`` has no module of its own to be named by.

    A script's functions (``python script.py``, ``python -m``, a notebook) live in
    ``__main__``, and code compiled from a string (``python -c``, ``manage.py shell``,
    ``exec()``) has no module (``None``) or borrows another's, so two unrelated
    scripts defining ``lookup`` would read each other's entries of a shared cache.
    A warning rather than a refusal: a one-off script on a private cache is fine,
    and it stays quiet once the function has a ``name=``."""
    inner = _layers(func)[-1]
    module = getattr(inner, "__module__", None)
    code = getattr(inner, "__code__", None)
    from_string = code is not None and code.co_filename.startswith("<")
    if module not in (None, "__main__") and not from_string:
        return
    where = (
        "was compiled from a string (python -c, a shell, exec())"
        if from_string and module != "__main__"
        else "is defined in __main__ (a script, python -m, a notebook)"
    )
    warnings.warn(
        f"@cached {name} {where}: its entries are named by a module every such "
        f"script shares, so another script's function of that name would read "
        f"them on a shared cache. Pass name= unique to this function, e.g. "
        f'@cached(name="myscript.{getattr(inner, "__qualname__", "?")}").',
        RuntimeWarning,
        stacklevel=_outside_our_files(),
    )


def _outside_our_files() -> int:
    """The ``stacklevel`` of the first caller outside @cached's files (the decorated
    line): this one, and decorators.py, whose ``CachedFunction`` warns through it."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename in _OUR_FILES:
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


_OUR_FILES = frozenset(
    (__file__, os.path.join(os.path.dirname(__file__), "decorators.py"))
)


_SHARED = (
    "so functions sharing it would share entries. Pass name= unique to this "
    "function (or define it at module level)."
)


def _layers(func: Any) -> list[Any]:
    """``func`` and the callables it wraps (``__wrapped__``), outermost first."""
    layers, seen = [func], {id(func)}
    while (wrapped := getattr(layers[-1], "__wrapped__", None)) is not None:
        if id(wrapped) in seen:
            break
        seen.add(id(wrapped))
        layers.append(wrapped)
    return layers


def _transparent(obj: Any) -> bool:
    """A wrapper returning what it wraps returns, whatever its state: ``lru_cache``,
    asgiref's ``sync_to_async``/``async_to_sync``, a memoized function."""
    from .decorators import CachedFunction, _Bound  # (decorators imports this module)

    return isinstance(
        obj, _LRU_WRAPPER | SyncToAsync | AsyncToSync | CachedFunction | _Bound
    )


_LRU_WRAPPER = type(functools.lru_cache(len))


def _wrapper_name(layer: Any, wrapped: Any) -> str:
    """The identity of a wrapper of ``wrapped``: its own function's name (its code's,
    since ``functools.wraps`` replaced ``__qualname__``) and a digest of what it
    captures besides ``wrapped``; for a ``partial`` of ``wrapped``, a digest of what it
    binds (``method_decorator`` binds the instance), refused when that has no stable
    encoding; a captured value without one counts by its type (:func:`_keyable_or_type`)."""
    state: list[tuple[str, Any]] = []
    if inspect.isfunction(layer):
        module = layer.__globals__.get("__name__", layer.__module__)
        name = f"{module}.{layer.__code__.co_qualname}"
        cells = zip(layer.__code__.co_freevars, layer.__closure__ or (), strict=True)
        for variable, cell in cells:
            try:
                value = cell.cell_contents
            except ValueError:  # not assigned yet
                continue
            if variable != "__class__" and value is not wrapped and value is not layer:
                state.append((variable, value))
    elif isinstance(layer, functools.partial):
        name = "functools.partial"
        bound = layer.func
        if inspect.ismethod(bound) and bound.__func__ is wrapped:
            state.append(("self", bound.__self__))
        elif bound is not wrapped:
            raise _invalid(
                "name",
                f"{layer!r} wraps {wrapped!r} but calls {bound!r}, {_SHARED}",
            )
        state += [("args", layer.args), ("keywords", layer.keywords)]
    else:
        raise _invalid(
            "name",
            f"{layer!r} wraps {wrapped!r}, and its state (its type's) is not known, "
            f"{_SHARED}",
        )
    if not state:
        return name
    try:
        return f"{name}[{keys.digest(tuple(state), _django_identity)}]"
    except TypeError as exc:
        if isinstance(layer, functools.partial):  # it binds arguments: they must key
            raise _invalid(
                "name",
                f"{name} wraps {wrapped!r} with {', '.join(v for v, _ in state)} "
                f"that cannot be keyed ({exc}): wrappers holding other values would "
                f"share entries. Give that value a __cache_key__() method, or "
                f"{_SHARED[3:]}",
            ) from None
    # A captured value with no key encoding (the Atomic of @transaction.atomic, a
    # Logger, a Lock) counts by its type: refusing it refused those everyday
    # decorators; two wrappers differing only by such a value share entries.
    keyed = [(variable, _keyable_or_type(value)) for variable, value in state]
    return f"{name}[{keys.digest(tuple(keyed), _django_identity)}]"


def _keyable_or_type(value: Any) -> Any:
    """``value`` when it has a key encoding, else its type's qualified name."""
    try:
        keys.digest(value, _django_identity)
    except TypeError:
        kind = type(value)
        return f"<{kind.__module__}.{kind.__qualname__}>"
    return value


def _signature_of(func: Callable[..., Any]) -> inspect.Signature:
    """The signature of what is called: not of what a ``functools.wraps`` wrapper
    wraps (``inspect.signature`` follows ``__wrapped__``), since the wrapper may take
    other arguments (``method_decorator`` binds ``self``; a decorator may add one).
    Wrappers that pass their arguments on (``lru_cache``) are looked through."""
    for layer in _layers(func):
        if _transparent(layer):
            continue
        signature = inspect.signature(layer, follow_wrapped=False)
        if _passes_on(signature) and getattr(layer, "__wrapped__", None) is not None:
            # ``(*args, **kwargs)``: what it wraps says what the arguments mean, so
            # f("x"), f(item="x") and f("x", rate=1.0) stay one entry (bound to the
            # wrapper's own signature they were three, and invalidate() missed two).
            continue
        return signature
    return inspect.signature(func)


def _passes_on(signature: inspect.Signature) -> bool:
    """Whether ``signature`` is ``(*args, **kwargs)``: a wrapper passing everything on."""
    kinds = [p.kind for p in signature.parameters.values()]
    return kinds == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]


def _django_identity(obj: Any) -> Any:
    """Key extension for Django types the pure core cannot know."""
    if isinstance(obj, models.Model):
        if obj.pk is None:
            raise TypeError(
                f"cannot build a cache key from an unsaved {obj._meta.label} (it has no pk yet)"
            )
        return ("model", obj._meta.label, obj.pk)
    if isinstance(obj, Promise):  # lazy strings, in the active language
        return str(obj)
    auth = sys.modules.get("django.contrib.auth.models")  # (never imported for this)
    if (
        auth is not None
        and isinstance(obj, auth.AnonymousUser)
        and obj.__class__.__eq__ is auth.AnonymousUser.__eq__
    ):
        # request.user of every visitor not logged in: all equal in Django
        # (AnonymousUser.__eq__), so one constant, by the class (a subclass may differ).
        # A subclass with an equality of its own (per-visitor state) is not: it needs
        # a __cache_key__(), or its instances would all share one key.
        cls = obj.__class__
        return ("anonymous user", f"{cls.__module__}.{cls.__qualname__}")
    return NotImplemented


def _defaults_identity(params: Iterable[inspect.Parameter]) -> keys.Extension | None:
    """Key extension for defaults without an encoding (a sentinel ``object()``,
    ``str.lower``): the default is fixed at decoration, so it stands for itself by
    the name of (the first) parameter it is the default of; passing that very object
    is the same call as leaving it out. None when every default has an encoding."""
    stand_ins: dict[int, tuple[Any, tuple[str, str]]] = {}
    for param in params:
        default = param.default
        if default is param.empty or id(default) in stand_ins:
            continue
        try:
            keys.encode(default, _django_identity)
        except TypeError:
            stand_ins[id(default)] = (default, ("default of", param.name))
    if not stand_ins:
        return None

    def identity(obj: Any) -> Any:
        found = stand_ins.get(id(obj))
        if found is not None and found[0] is obj:
            return found[1]
        return _django_identity(obj)

    return identity
