"""Public functions follow scanpy's conventions (a signature test, as scanpy has)."""

import inspect

import pytest

import scimpute as si

PUBLIC = [
    si.pp.perturbation_grid,
    si.tl.impute,
    si.tl.cross_validate,
    si.pl.grid,
    si.pl.cross_validation,
    si.pl.prediction,
]


@pytest.mark.parametrize("fn", PUBLIC, ids=lambda f: f"{f.__module__}.{f.__name__}")
def test_signature_conventions(fn):
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional[0].name in {"adata", "grid", "scores", "mdata"}
    assert len(positional) <= 3, "at most a few positional arguments; options are keyword-only"
    assert fn.__doc__ and "Returns" in fn.__doc__


def test_tl_functions_take_key_added_and_copy():
    for fn in [si.tl.impute]:
        sig = inspect.signature(fn).parameters
        assert "key_added" in sig and "copy" in sig and sig["copy"].default is False
    assert "key_added" in inspect.signature(si.tl.cross_validate).parameters
