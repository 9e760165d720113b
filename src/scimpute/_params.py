"""Typed parameter specs: every parameter of a method or entry point is declared once.

A spec is a frozen dataclass that subclasses :class:`Params`. Each field carries its type (the
annotation), its default, and its constraints (:func:`param`: ranges, choices, finiteness).
:meth:`Params.from_kwargs` is the one place where user input is checked; every message has
the same shape, ``"<owner>: <name> must be <what>, got <value>."``, and the typed instance is
what travels down to the numerics, so no layer below re-checks it.

Specs compose by inheritance: a method whose training block is :class:`scimpute.nn.TrainConfig`
subclasses it, and :meth:`Params.pick` extracts the block again.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo(Params):
...     rank: int = param(5, ge=1, doc="Number of components.")
...     rule: str = param("mean", choices=("mean", "median"))
>>> Demo.from_kwargs("demo", {"rank": 3})
Demo(rank=3, rule='mean')
>>> Demo.from_kwargs("demo", {"rank": 0})
Traceback (most recent call last):
...
scimpute._params.ParamError: demo: rank must be an integer >= 1, got 0.

"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

import numpy as np

__all__ = [
    "ParamError",
    "Params",
    "check_choice",
    "check_random_state_value",
    "param",
]

P = TypeVar("P", bound="Params")


class ParamError(ValueError):
    """A parameter has a value of the wrong type or outside its range (a :class:`ValueError`)."""


@dataclass(frozen=True)
class Spec:
    """Constraints of one parameter beyond its type."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    finite: bool = True
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


def param(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    finite: bool = True,
    check: Callable[[Any], str | None] | None = None,
    doc: str = "",
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare a parameter field of a :class:`Params` spec.

    Parameters
    ----------
    default
        The default value.
    ge, gt, le, lt
        Bounds for numbers (and for every number inside a tuple).
    choices
        Allowed values (for strings and other discrete options).
    finite
        Reject NaN and infinite floats (default).
    check
        Extra check: a function of the value returning an error phrase ("must be ...") or
        ``None``.
    doc
        One line for listings and docs.
    default_factory
        As in :func:`dataclasses.field`, for mutable defaults.

    """
    spec = Spec(
        ge=ge,
        gt=gt,
        le=le,
        lt=lt,
        choices=None if choices is None else tuple(choices),
        finite=finite,
        check=check,
        doc=doc,
    )
    if default_factory is not None:
        return field(default_factory=default_factory, metadata={"spec": spec})
    return field(default=default, metadata={"spec": spec})


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)


def _type_name(tp: Any, bounds: str = "") -> str:
    """Phrase for a type; ``bounds`` (``">= 0"``) is attached to its number members."""
    origin = get_origin(tp)
    b = f" {bounds}" if bounds else ""
    if tp is int:
        return "an integer" + b
    if tp is float:
        return "a number" + b
    if tp is bool:
        return "True or False"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "None"
    if tp is Any:
        return "any value"
    if origin is Literal:
        return _one_of(get_args(tp))
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        literals = [x for a in args if get_origin(a) is Literal for x in get_args(a)]
        parts = []
        for a in args:
            if a is int and float in args:
                continue  # "a number" covers it
            if get_origin(a) is Literal:
                if literals:  # every literal member listed once, where the first one stood
                    parts.append(_one_of(literals))
                    literals = []
                continue
            parts.append(_type_name(a, bounds if _has_number(a) else ""))
        return " or ".join(parts)
    if origin in (tuple, Sequence, list):
        args = get_args(tp)
        items = [a for a in args if a is not Ellipsis]
        inner = _type_name(items[0], bounds) if items else "any values"
        if origin is tuple and items and Ellipsis not in args:
            return f"a sequence of {len(items)} items ({inner})"
        return f"a sequence (items: {inner})"
    if origin in (dict, Mapping):
        args = get_args(tp)
        return (
            f"a mapping (values: {_type_name(args[1], bounds)})" if len(args) == 2 else "a mapping"
        )
    if isinstance(tp, type) and tp.__module__ not in ("builtins",):
        return f"a {tp.__module__.split('.')[0]}.{tp.__name__}"
    return getattr(tp, "__name__", str(tp)) + b


def _one_of(values: Sequence[Any]) -> str:
    return _fmt(values[0]) if len(values) == 1 else "one of " + ", ".join(map(_fmt, values))


def _has_number(tp: Any) -> bool:
    """Whether a type is or contains ``int`` or ``float`` (where bounds apply)."""
    return tp in (int, float) or any(_has_number(a) for a in get_args(tp) if a is not Ellipsis)


_NO = object()


def _coerce(tp: Any, v: Any) -> Any:
    """``v`` converted to type ``tp``, or ``_NO`` when it is not of that type."""
    if tp is Any:
        return v
    origin = get_origin(tp)
    if tp is type(None):
        return None if v is None else _NO
    if tp is bool:
        return bool(v) if isinstance(v, bool | np.bool_) else _NO
    if tp is int:
        return int(v) if _is_int(v) else _NO
    if tp is float:
        return float(v) if _is_real(v) else _NO
    if tp is str:
        return str(v) if isinstance(v, str) else _NO
    if origin is Literal:
        for a in get_args(tp):
            if type(a) is type(v) and a == v:
                return a
            if isinstance(a, str) and isinstance(v, str) and a == v:
                return a
        return _NO
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        # exact types first, so that 3 stays an int in ``int | float``
        for a in args:
            if a is int and _is_int(v):
                return int(v)
        for a in args:
            out = _coerce(a, v)
            if out is not _NO:
                return out
        return _NO
    if origin in (tuple, list, Sequence):
        if isinstance(v, str | bytes | Mapping) or not isinstance(v, Sequence | np.ndarray):
            return _NO
        args = get_args(tp)
        if origin is tuple and args and Ellipsis not in args:  # fixed length
            if len(v) != len(args):
                return _NO
            out = [_coerce(a, x) for a, x in zip(args, v, strict=True)]
        else:
            inner = args[0] if args else Any
            out = [_coerce(inner, x) for x in v]
        if any(o is _NO for o in out):
            return _NO
        return tuple(out)
    if origin in (dict, Mapping):
        if not isinstance(v, Mapping):
            return _NO
        args = get_args(tp)
        if len(args) != 2:
            return dict(v)
        out = {}
        for k, x in v.items():
            ck, cx = _coerce(args[0], k), _coerce(args[1], x)
            if ck is _NO or cx is _NO:
                return _NO
            out[ck] = cx
        return out
    if isinstance(tp, type):
        return v if isinstance(v, tp) else _NO
    return v


def _bounds_phrase(s: Spec) -> str:
    parts = []
    if s.ge is not None:
        parts.append(f">= {s.ge:g}")
    if s.gt is not None:
        parts.append(f"> {s.gt:g}")
    if s.le is not None:
        parts.append(f"<= {s.le:g}")
    if s.lt is not None:
        parts.append(f"< {s.lt:g}")
    return " and ".join(parts)


def _check_number(x: float, s: Spec) -> bool:
    if isinstance(x, float) and not math.isfinite(x):
        if s.finite or math.isnan(x):
            return False  # NaN never; infinities only with finite=False, and within bounds
    if s.ge is not None and not x >= s.ge:
        return False
    if s.gt is not None and not x > s.gt:
        return False
    if s.le is not None and not x <= s.le:
        return False
    return not (s.lt is not None and not x < s.lt)


def _numbers_in(v: Any):
    """The numbers of a value: itself, or those inside a tuple or a mapping's values."""
    if _is_real(v):
        yield v
    elif isinstance(v, tuple | Mapping):
        for x in v.values() if isinstance(v, Mapping) else v:
            yield from _numbers_in(x)


def _items(v: Any) -> tuple[Any, ...]:
    """What ``choices`` applies to: the value, or each item of a tuple."""
    return v if isinstance(v, tuple) else (v,)


def _in_choices(x: Any, choices: tuple[Any, ...]) -> bool:
    # type-aware: True is not 1, and 1.0 matches 1 only among numbers
    for c in choices:
        if isinstance(c, bool | np.bool_) or isinstance(x, bool | np.bool_):
            if type(c) is type(x) and c == x:
                return True
        elif _is_real(c) and _is_real(x):
            if c == x:
                return True
        elif type(c) is type(x) and c == x:
            return True
        elif isinstance(c, str) and isinstance(x, str) and c == x:
            return True
    return False


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_choice(owner: str, name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``; raise the house message otherwise."""
    if isinstance(value, str | int | float | bool | type(None)) and value in choices:
        return value
    opts = ", ".join(_fmt(c) for c in choices)
    raise ParamError(f"{owner}: {name} must be one of {opts}, got {_fmt(value)}.")


def check_random_state_value(owner: str, value: Any) -> Any:
    """Check a ``random_state``: a non-negative int, a numpy ``Generator`` or ``None``."""
    if value is None or isinstance(value, np.random.Generator):
        return value
    if _is_int(value) and value >= 0:
        return int(value)
    raise ParamError(
        f"{owner}: random_state must be a non-negative integer, a numpy Generator or None, "
        f"got {_fmt(value)}."
    )


@dataclass(frozen=True)
class Params:
    """Base class of typed parameter specs (subclass it as a frozen dataclass)."""

    #: name used in messages when the spec is built outside a method.
    owner: ClassVar[str] = "parameters"

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        """The declared parameters, in order."""
        return dataclasses.fields(cls)

    @classmethod
    def names(cls) -> list[str]:
        """Names of the declared parameters."""
        return [f.name for f in cls.fields()]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Name -> default of every parameter."""
        out = {}
        for f in cls.fields():
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
        return out

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """One row per parameter: name, type, default, constraints, doc (for listings)."""
        hints = _hints(cls)
        rows = []
        for f in cls.fields():
            s: Spec = f.metadata.get("spec", Spec())
            rows.append(
                {
                    "name": f.name,
                    "type": _type_name(hints.get(f.name, Any)),
                    "default": cls.defaults().get(f.name),
                    "constraint": _bounds_phrase(s)
                    or (", ".join(map(_fmt, s.choices)) if s.choices else ""),
                    "doc": s.doc,
                }
            )
        return rows

    @classmethod
    def check_value(cls, owner: str, name: str, value: Any) -> Any:
        """Check and coerce one parameter's value; raise :class:`ParamError` if invalid."""
        f = {x.name: x for x in cls.fields()}[name]
        tp = _hints(cls).get(name, Any)
        s: Spec = f.metadata.get("spec", Spec())
        out = _coerce(tp, value)
        what = _type_name(tp, _bounds_phrase(s))
        if out is _NO:
            raise ParamError(f"{owner}: {name} must be {what}, got {_fmt(value)}.")
        if s.choices is not None and not all(_in_choices(x, s.choices) for x in _items(out)):
            opts = ", ".join(_fmt(c) for c in s.choices)
            raise ParamError(f"{owner}: {name} must be one of {opts}, got {_fmt(value)}.")
        for x in _numbers_in(out):
            if not _check_number(x, s):
                if isinstance(x, float) and math.isnan(x):
                    what = what + " (not NaN)"
                raise ParamError(f"{owner}: {name} must be {what}, got {_fmt(value)}.")
        if s.check is not None:
            msg = s.check(out)
            if msg:
                raise ParamError(f"{owner}: {name} {msg}, got {_fmt(value)}.")
        return out

    @classmethod
    def from_kwargs(cls: type[P], owner: str, kwargs: Mapping[str, Any] | None = None) -> P:
        """Build the spec from user keyword arguments, checking every one of them.

        Raises
        ------
        TypeError
            For a name the spec does not declare (the message lists the accepted names).
        ParamError
            For a value of the wrong type or outside its range.

        """
        kwargs = dict(kwargs or {})
        names = cls.names()
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            from ._validate import _suggest

            hint = _suggest(unknown[0], names) if names else " It takes no parameters."
            raise TypeError(
                f"{owner}: unexpected parameter(s) {', '.join(map(repr, unknown))}.{hint}"
            )
        values = {k: cls.check_value(owner, k, v) for k, v in kwargs.items()}
        obj = cls(**values)
        obj.validate(owner)
        return obj

    def validate(self, owner: str) -> None:
        """Checks that involve several parameters (override; raise :class:`ParamError`)."""

    def to_dict(self) -> dict[str, Any]:
        """Name -> value of every parameter (for ``.uns[key]["params"]``)."""
        return {f.name: getattr(self, f.name) for f in self.fields()}

    def replace(self: P, **changes: Any) -> P:
        """A copy with ``changes`` applied (checked like user input)."""
        owner = type(self).owner
        checked = {k: type(self).check_value(owner, k, v) for k, v in changes.items()}
        return dataclasses.replace(self, **checked)

    @classmethod
    def pick(cls: type[P], other: Params) -> P:
        """The ``cls`` block of a spec that inherits from ``cls`` (e.g. its training block)."""
        return cls(**{n: getattr(other, n) for n in cls.names()})


@dataclass(frozen=True)
class NoParams(Params):
    """Spec of a method without parameters."""
