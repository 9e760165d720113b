"""Contract tests over the whole method registry (scanpy's ``test_sig_conventions`` in spirit).

Every registered method, on the same small seeded simulated grid: predictions of the right
shape, finite, with ``source`` strings and per-target diagnostics of the right length; the
records written by ``impute`` survive an h5ad round trip; an unknown parameter is a
``TypeError`` and an ill-typed one a ``ParamError``; the input grid is unchanged by
``impute(copy=True)`` and by a failing call; the same seed gives the same numbers.
"""

from __future__ import annotations

import subprocess
import sys
import typing

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scimpute as si
from scimpute._params import ParamError
from scimpute.methods import _registry
from scimpute.tl._data import default_targets, to_grid_data
from scimpute.tl._run import prepare_method, run_method

#: tiny settings for the methods that train (the contract, not the accuracy, is tested).
FAST = {
    "autoencoder": {"width": 16, "max_epochs": 2, "batch_size": 16, "patience": 1},
    "vae": {"width": 16, "latent_dim": 4, "max_epochs": 2, "batch_size": 16, "patience": 1},
}
#: methods that take longer than a few seconds even with FAST settings.
SLOW = {"auto", "autoencoder", "vae", "synthetic_interventions"}

METHODS = sorted(_registry._REGISTRY)  # reading _REGISTRY discovers every method module


def _marks(name):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


ALL = [_marks(n) for n in METHODS]


@pytest.fixture(scope="module")
def grid():
    return si.datasets.simulate_grid(
        3, 4, 12, n_combinations=2, doses=[1.0, 10.0], fraction_measured=0.7, random_state=0
    )


def _snapshot(a):
    return a.copy()


def _assert_same(a, before):
    """``a`` equals the copy ``before``: X, obs, every layer, and the uns/obsm keys."""
    for attr in ("layers", "uns", "obsm"):
        assert set(getattr(a, attr).keys()) == set(getattr(before, attr).keys()), attr
    pd.testing.assert_frame_equal(a.obs, before.obs)
    for k in [None, *before.layers]:
        now, then = (a.X, before.X) if k is None else (a.layers[k], before.layers[k])
        np.testing.assert_array_equal(now, then)


def test_registry_is_not_empty_and_lists_every_method():
    assert {"context_mean", "additive", "ntk", "additive_combination"} <= set(METHODS)
    table = si.methods.available_methods()
    assert sorted(table.index) == METHODS


@pytest.mark.parametrize("name", ALL)
def test_array_contract(grid, name):
    data, _ = to_grid_data(grid)
    targets = default_targets(data)
    m, params = prepare_method(name, FAST.get(name))
    res = run_method(m, data, targets, random_state=0, params=params)
    assert res.prediction.shape == (len(targets), data.n_features)
    assert np.isfinite(res.prediction).all()
    assert res.source.shape == (len(targets),)
    assert all(isinstance(s, str) and s for s in res.source)
    for k, v in res.per_target.items():
        assert np.asarray(v).shape[0] == len(targets), k
    # same seed, same numbers
    again = run_method(m, data, targets, random_state=0, params=params)
    np.testing.assert_array_equal(again.prediction, res.prediction)


@pytest.mark.parametrize("name", ALL)
def test_impute_records_survive_h5ad_and_leave_input_unchanged(grid, name, tmp_path):
    snap = _snapshot(grid)
    out = si.tl.impute(grid, method=name, copy=True, random_state=3, **FAST.get(name, {}))
    _assert_same(grid, snap)
    key = f"imputed_{name}"
    rec = out.uns[key]
    assert rec["method"] == name
    m = si.methods.get_method(name)
    assert set(rec["params"]) == {*m.params.names(), "random_state"}
    assert rec["params"]["random_state"] == 3
    out.write_h5ad(tmp_path / "g.h5ad")
    back = ad.read_h5ad(tmp_path / "g.h5ad")
    for k in (key, f"{key}_effect"):
        np.testing.assert_array_equal(back.layers[k], out.layers[k])
    pd.testing.assert_series_equal(back.obs[f"{key}_source"], out.obs[f"{key}_source"])
    assert set(back.uns[key]["params"]) == set(rec["params"])
    assert back.uns[key]["n_imputed"] == rec["n_imputed"]


@pytest.mark.parametrize("name", METHODS)
def test_unknown_parameter_is_a_type_error_and_changes_nothing(grid, name):
    snap = _snapshot(grid)
    with pytest.raises(TypeError, match=f"{name}: unexpected parameter"):
        si.tl.impute(grid, method=name, not_a_parameter=1)
    _assert_same(grid, snap)


def _wrong_values(spec, field: str) -> list:
    """Values no declared type of ``field`` accepts."""
    hints = typing.get_type_hints(spec)
    text = repr(hints[field])
    out = [object()]
    if "str" not in text and "Literal" not in text:
        out.append("abc")
    if ("float" in text or "int" in text) and "bool" not in text:
        out.append(True)  # bools are never numbers
    return out


@pytest.mark.parametrize("name", METHODS)
def test_ill_typed_parameters_are_param_errors(grid, name):
    m = si.methods.get_method(name)
    snap = _snapshot(grid)
    for field in m.params.names():
        for value in _wrong_values(m.params, field):
            with pytest.raises(ParamError, match=f"^{name}: {field} must"):
                si.tl.impute(grid, method=name, **{field: value})
    _assert_same(grid, snap)


@pytest.mark.parametrize("name", ["context_mean", "ntk"])
@pytest.mark.parametrize("bad", ["abc", 1.5, True, -1])
def test_bad_random_state_is_rejected_before_any_work(grid, name, bad):
    snap = _snapshot(grid)
    with pytest.raises(ParamError, match=f"^{name}: random_state must be a non-negative"):
        si.tl.impute(grid, method=name, random_state=bad)
    _assert_same(grid, snap)


def test_method_modules_load_on_first_use():
    code = (
        "import sys, scimpute.methods as m\n"
        "assert 'scimpute.methods.ntk' not in sys.modules, 'ntk loaded eagerly'\n"
        "m.get_method('ntk')\n"
        "assert 'scimpute.methods.ntk' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
