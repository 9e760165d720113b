"""additive_combination and dose_interpolation: exact on models they assume, fallbacks."""

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import scimpute as si
from scimpute.methods import get_method
from scimpute.tl._data import to_grid_data


def _grid(rows, X, control="control", n_ctx=1):
    obs = pd.DataFrame(rows, columns=["context", "perturbation", "dose"])
    obs.index = [f"r{i}" for i in range(len(obs))]
    a = AnnData(X=np.asarray(X, dtype=np.float32), obs=obs)
    return si.pp.perturbation_grid(a, "context", "perturbation", control=control, dose_key="dose")


def _predict(method, d, labels, ctx=0):
    idx = [list(d.perturbations).index(lab) for lab in labels]
    mask = d.measured.copy()
    mask[ctx, idx] = False
    t = np.array([[ctx, i] for i in idx])
    return get_method(method).fn(d.with_measured(mask), t)


def test_additive_combination_exact_on_additive_simulation():
    g = si.datasets.simulate_grid(3, 6, 40, n_combinations=8, interaction=0.0, noise=0.0,
                                  fraction_measured=1.0, random_state=0)  # fmt: skip
    d, _ = to_grid_data(g)
    pairs = [lab for lab in d.perturbations if "+" in lab]
    res = _predict("additive_combination", d, pairs, ctx=1)
    truth = g.layers["truth"].reshape(d.Y.shape)
    idx = [list(d.perturbations).index(lab) for lab in pairs]
    np.testing.assert_allclose(res.prediction, truth[1, idx], atol=1e-4)
    assert set(res.source) == {"additive_combination"}
    assert (res.per_target["n_components"] == 2).all()


def test_additive_combination_fallbacks():
    rng = np.random.default_rng(0)
    eA, eB = rng.normal(size=5), rng.normal(size=5)
    rows = [
        ("c0", "control", "0"), ("c0", "A", "1"), ("c0", "B", "2"), ("c0", "A+B", "1+2"),
        ("c0", "A+C", "1+1"),
        ("c1", "control", "0"), ("c1", "A", "3"), ("c1", "B", "2"), ("c1", "A+B", "3+2"),
    ]  # fmt: skip
    base = {"c0": rng.normal(size=5), "c1": rng.normal(size=5)}
    eff = {"control": 0 * eA, "A": eA, "B": eB, "A+B": eA + eB, "A+C": eA}
    X = [base[c] + eff[p] for c, p, _ in rows]
    d, _ = to_grid_data(_grid(rows, X))
    # c1: A measured only at dose 3 -> nearest dose for "A@1+B@2" does not exist in c1;
    # exact in c0
    r = _predict("additive_combination", d, ["A@1+B@2"], ctx=0)
    np.testing.assert_allclose(r.prediction[0], base["c0"] + eA + eB, atol=1e-5)
    assert r.source[0] == "additive_combination"
    # in c1, "A@1+B@2" needs A@1: nearest measured dose of A in c1 is 3
    r = _predict("additive_combination", d, ["A@1+B@2"], ctx=1)
    assert r.source[0] == "additive_combination_nearest_dose"
    # C is never measured alone -> missing component, the rest is summed
    r = _predict("additive_combination", d, ["A@1+C@1"], ctx=0)
    assert r.source[0] == "additive_combination_missing_component"
    np.testing.assert_allclose(r.prediction[0], base["c0"] + eA, atol=1e-5)
    # B removed in c0 -> taken from the other context
    idx = [list(d.perturbations).index(x) for x in ("B@2", "A@1+B@2")]
    mask = d.measured.copy()
    mask[0, idx] = False
    r = get_method("additive_combination").fn(d.with_measured(mask), np.array([[0, idx[1]]]))
    assert r.source[0] == "additive_combination_other_contexts"
    np.testing.assert_allclose(r.prediction[0], base["c0"] + eA + eB, atol=1e-5)
    # singles fall back to the additive baseline
    r = _predict("additive_combination", d, ["A@1"], ctx=0)
    assert r.source[0] in {"additive", "context_mean"}


def test_dose_interpolation_exact_for_log_linear_response():
    rng = np.random.default_rng(1)
    v, b = rng.normal(size=6), rng.normal(size=6)
    doses = [0.1, 0.3, 1.0, 3.0, 10.0]
    rows = [("c0", "DMSO", "0")] + [("c0", "A", str(x)) for x in doses]
    X = [b] + [b + np.log(x) * v for x in doses]
    d, _ = to_grid_data(_grid(rows, X, control="DMSO"))
    r = _predict("dose_interpolation", d, ["A@1"])
    np.testing.assert_allclose(r.prediction[0], b, atol=1e-5)
    assert r.source[0] == "dose_interpolation"
    r = _predict("dose_interpolation", d, ["A@10"])  # outside: nearest measured dose (3)
    assert r.source[0] == "dose_interpolation_nearest_dose"
    np.testing.assert_allclose(r.prediction[0], b + np.log(3.0) * v, atol=1e-5)
    np.testing.assert_allclose(r.per_target["dose_gap"], np.log(10 / 3), rtol=1e-6)


def test_impute_runs_and_records(tmp_path):
    g = si.datasets.simulate_grid(3, 5, 20, n_combinations=4, doses=[1, 10],
                                  fraction_measured=0.7, random_state=2)  # fmt: skip
    for m in ("additive_combination", "dose_interpolation"):
        si.tl.impute(g, method=m)
        assert np.isfinite(g.layers[f"imputed_{m}"]).all()
    g.write_h5ad(tmp_path / "g.h5ad")
    with pytest.raises(TypeError, match="unexpected"):
        si.tl.impute(g, method="dose_interpolation", reg=1)
