"""Typed parameter specs (scimpute._params): unit tests and property-based tests."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scimpute._params import (
    NoParams,
    ParamError,
    Params,
    check_random_state_value,
    param,
)
from scimpute._utils import h5ad_safe


def _positive(x):
    return None if x != 3 else "must not be 3"


@dataclass(frozen=True)
class Demo(Params):
    """A spec with one field of every kind the package uses."""

    rank: int = param(5, ge=1, le=50)
    rate: float = param(0.5, gt=0, lt=1)
    scale: float = param(1.0, ge=0, finite=False)
    flag: bool = param(False)
    rule: Literal["mean", "median"] = param("mean")
    width: int | None = param(None, ge=1)
    reg: float | Literal["auto"] = param(1e-6, ge=0)
    blocks: tuple[Literal["a", "b"], ...] = param(("a",))
    weights: Mapping[str, float] | None = param(None, ge=0)
    level: int = param(1, choices=(1, 2, 4))
    odd: int = param(1, check=_positive)


OWNER = "demo"
HOUSE = re.compile(r"^demo: (\w+) (must|must not) ")


def _raises_house(name, value):
    with pytest.raises(ParamError) as err:
        Demo.from_kwargs(OWNER, {name: value})
    msg = str(err.value)
    assert HOUSE.match(msg), msg
    assert msg.startswith(f"{OWNER}: {name} must")
    assert msg.endswith(".")
    assert "{" not in msg.split("got")[0] and "Available: ." not in msg
    return msg


# ----------------------------------------------------------------------------- unit tests
def test_defaults_and_round_trip():
    d = Demo()
    assert Demo.from_kwargs(OWNER, {}) == d
    assert Demo.from_kwargs(OWNER, d.to_dict()) == d
    assert Demo.names() == list(d.to_dict())
    assert Demo.defaults()["rank"] == 5
    rows = {r["name"]: r for r in Demo.describe()}
    assert rows["rank"]["constraint"] == ">= 1 and <= 50"
    assert rows["rule"]["type"] == "one of 'mean', 'median'"


def test_coercions():
    d = Demo.from_kwargs(
        OWNER,
        {
            "rank": np.int64(3),
            "rate": np.float32(0.25),
            "scale": 2,
            "flag": np.bool_(True),
            "reg": 1,
            "blocks": ["a", "b"],
            "weights": {"x": 1},
            "level": 2,
        },
    )
    assert d.rank == 3 and type(d.rank) is int
    assert type(d.rate) is float and d.rate == 0.25
    assert d.scale == 2.0 and type(d.scale) is float
    assert d.flag is True
    assert d.reg == 1.0 and type(d.reg) is float
    assert d.blocks == ("a", "b")
    assert d.weights == {"x": 1.0}
    assert Demo.from_kwargs(OWNER, {"reg": "auto"}).reg == "auto"
    assert Demo.from_kwargs(OWNER, {"scale": math.inf}).scale == math.inf  # finite=False


@pytest.mark.parametrize(
    ("name", "value", "phrase"),
    [
        ("rank", 0, "an integer >= 1 and <= 50, got 0."),
        ("rank", 2.5, "an integer >= 1 and <= 50, got 2.5."),
        ("rank", "3", "an integer"),
        ("rank", True, "an integer"),
        ("rate", 1.0, "a number > 0 and < 1"),
        ("rate", math.nan, "(not NaN)"),
        ("rate", math.inf, "a number > 0 and < 1"),
        ("scale", math.nan, "(not NaN)"),
        ("flag", 1, "True or False"),
        ("rule", "mode", "one of 'mean', 'median'"),
        ("width", 0, "an integer >= 1 or None"),
        ("reg", -1.0, "a number >= 0 or 'auto'"),
        ("reg", "best", "a number >= 0 or 'auto'"),
        ("blocks", ["a", "c"], "a sequence (items: one of 'a', 'b')"),
        ("blocks", "a", "a sequence"),
        ("weights", {"x": -1}, "a mapping (values: a number >= 0) or None"),
        ("weights", {"x": "big"}, "a mapping"),
        ("level", 3, "one of 1, 2, 4, got 3."),
        ("odd", 3, "must not be 3, got 3."),
    ],
)
def test_invalid_values_name_the_parameter(name, value, phrase):
    msg = _raises_house(name, value)
    assert phrase in msg, msg


def test_unknown_names_are_type_errors():
    with pytest.raises(TypeError, match=r"demo: unexpected parameter\(s\) 'rnak'.*'rank'"):
        Demo.from_kwargs(OWNER, {"rnak": 3})
    with pytest.raises(TypeError, match="It takes no parameters"):
        NoParams.from_kwargs("context_mean", {"rank": 3})


def test_validate_hook_and_replace():
    @dataclass(frozen=True)
    class Pair(Params):
        lo: int = param(0)
        hi: int = param(1)

        def validate(self, owner):
            if self.lo >= self.hi:
                raise ParamError(f"{owner}: lo must be < hi, got lo={self.lo}, hi={self.hi}.")

    with pytest.raises(ParamError, match="pair: lo must be < hi"):
        Pair.from_kwargs("pair", {"lo": 2})
    assert Pair().replace(hi=5).hi == 5
    with pytest.raises(ParamError, match="hi must be an integer"):
        Pair().replace(hi=1.5)


@pytest.mark.parametrize("bad", ["abc", 1.5, True, -1, np.float64(2.0), [1]])
def test_random_state_values(bad):
    with pytest.raises(ParamError, match=r"^ntk: random_state must be a non-negative integer"):
        check_random_state_value("ntk", bad)


def test_random_state_accepts_seeds_generators_none():
    g = np.random.default_rng(0)
    assert check_random_state_value("x", g) is g
    assert check_random_state_value("x", None) is None
    assert check_random_state_value("x", np.int32(7)) == 7


# ----------------------------------------------------------------------------- properties
ints = st.integers(min_value=1, max_value=50)
rates = st.floats(min_value=0, max_value=1, exclude_min=True, exclude_max=True)
valid = st.fixed_dictionaries(
    {},
    optional={
        "rank": ints,
        "rate": rates,
        "scale": st.floats(min_value=0, allow_nan=False),
        "flag": st.booleans(),
        "rule": st.sampled_from(["mean", "median"]),
        "width": st.none() | st.integers(min_value=1, max_value=10**6),
        "reg": st.just("auto") | st.floats(min_value=0, allow_nan=False, allow_infinity=False),
        "blocks": st.lists(st.sampled_from(["a", "b"]), max_size=4),
        "weights": st.none()
        | st.dictionaries(
            st.text(max_size=5), st.floats(min_value=0, allow_nan=False, allow_infinity=False)
        ),
        "level": st.sampled_from([1, 2, 4]),
        "odd": st.integers().filter(lambda x: x != 3),
    },
)


@settings(max_examples=200, deadline=None)
@given(valid)
def test_valid_values_round_trip(kwargs):
    d = Demo.from_kwargs(OWNER, kwargs)
    again = Demo.from_kwargs(OWNER, d.to_dict())
    assert again == d
    safe = h5ad_safe(d.to_dict())
    assert set(safe) == set(Demo.names())
    for k, v in kwargs.items():
        got = getattr(d, k)
        if isinstance(v, list):
            assert got == tuple(v)
        else:
            assert got == v


#: for each field, values of a wrong type or outside its range.
invalid = {
    "rank": st.integers(max_value=0)
    | st.integers(min_value=51)
    | st.floats()
    | st.booleans()
    | st.text(),
    "rate": st.floats(min_value=1)
    | st.floats(max_value=0)
    | st.just(math.nan)
    | st.booleans()
    | st.text()
    | st.none(),
    "scale": st.floats(max_value=0, exclude_max=True) | st.just(math.nan) | st.booleans(),
    "flag": st.integers() | st.floats() | st.text() | st.none(),
    "rule": st.text().filter(lambda s: s not in ("mean", "median")) | st.integers(),
    "width": st.integers(max_value=0) | st.floats() | st.booleans() | st.text(),
    "reg": st.floats(max_value=0, exclude_max=True)
    | st.just(math.nan)
    | st.just(math.inf)
    | st.text().filter(lambda s: s != "auto")
    | st.booleans(),
    "blocks": st.lists(st.sampled_from(["a", "b", "c", 1]), min_size=1).filter(
        lambda v: any(x not in ("a", "b") for x in v)
    )
    | st.integers(),
    "weights": st.dictionaries(st.text(max_size=3), st.floats(max_value=-1e-9), min_size=1)
    | st.dictionaries(st.text(max_size=3), st.just(math.nan), min_size=1)
    | st.dictionaries(st.text(max_size=3), st.text(), min_size=1)
    | st.integers(),
    "level": st.integers().filter(lambda x: x not in (1, 2, 4)) | st.booleans(),
    "odd": st.just(3) | st.booleans() | st.floats(),
}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(invalid)).flatmap(lambda n: st.tuples(st.just(n), invalid[n])))
def test_invalid_values_always_raise_the_house_message(case):
    name, value = case
    _raises_house(name, value)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1).filter(lambda s: s not in Demo.names()), st.integers())
def test_unknown_names_always_type_error(name, value):
    with pytest.raises(TypeError, match="unexpected parameter"):
        Demo.from_kwargs(OWNER, {name: value})


@settings(max_examples=100, deadline=None)
@given(st.booleans())
def test_bools_are_never_integers(b):
    for name in ("rank", "width", "level", "odd"):
        _raises_house(name, b)
    for name in ("rate", "reg"):
        _raises_house(name, b)
