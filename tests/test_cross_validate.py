import numpy as np
import pandas as pd
import pytest

import scimpute as si
from scimpute.methods import baselines
from scimpute.metrics import score_pairs
from scimpute.tl._cross_validate import make_folds
from scimpute.tl._data import to_grid_data


@pytest.fixture
def grid():
    return si.datasets.simulate_grid(6, 8, 20, noise=0.3, random_state=3)


@pytest.mark.parametrize("holdout", ["leave_one_out", "random", "contexts", "perturbations"])
def test_folds_partition_the_measured_pairs(grid, holdout):
    data, _ = to_grid_data(grid)
    folds = make_folds(data, holdout, 3, 0)
    allp = np.concatenate(folds)
    cand = np.argwhere(data.treated_mask())
    assert len(allp) == len(cand)
    assert {tuple(x) for x in allp} == {tuple(x) for x in cand}
    if holdout == "contexts":
        ctx_sets = [set(f[:, 0]) for f in folds]
        assert all(a.isdisjoint(b) for i, a in enumerate(ctx_sets) for b in ctx_sets[i + 1 :])
    if holdout == "leave_one_out":
        assert all(len(f) == 1 for f in folds)


def test_scores_match_direct_computation(grid):
    df = si.tl.cross_validate(grid, methods=["perturbation_mean", "context_mean"], progress=False)
    data, _ = to_grid_data(grid)
    row = df[df.method == "perturbation_mean"].iloc[5]
    c = list(data.contexts).index(row.context)
    a = list(data.perturbations).index(row.perturbation)
    mask = data.measured.copy()
    mask[c, a] = False
    fold = data.with_measured(mask)
    pred = baselines.perturbation_mean(fold, [[c, a]]).prediction
    ref = baselines.context_mean(fold, [[c, a]]).prediction
    s = score_pairs(data.Y[c, a][None], pred, baseline=data.Y[c, 0][None], reference_pred=ref)
    for k, v in s.items():
        np.testing.assert_allclose(row[k], v[0], rtol=1e-8)
    np.testing.assert_allclose(df.loc[df.method == "context_mean", "relative_mse"], 1.0)


def test_method_variants_and_params(grid):
    df = si.tl.cross_validate(
        grid,
        methods={"cm": "context_mean", "add": {"method": "additive"}},
        holdout="random",
        n_folds=3,
        progress=False,
    )
    assert set(df.method) == {"cm", "add"}
    summary = si.tl.summarize_cross_validation(grid)
    assert list(summary.index)[0] == "add"  # additive truth: the fixed-effect model wins
    assert summary.loc["cm", "frac_better_than_context_mean"] == 0
    assert {"median_r2", "mean_r2", "n_pairs"} <= set(summary.columns)


def test_deterministic(grid):
    a = si.tl.cross_validate(
        grid, methods=["additive"], holdout="random", random_state=4, progress=False
    )
    b = si.tl.cross_validate(
        grid, methods=["additive"], holdout="random", random_state=4, progress=False
    )
    pd.testing.assert_frame_equal(a, b)
    c = si.tl.cross_validate(
        grid, methods=["additive"], holdout="random", random_state=5, progress=False
    )
    assert not a[["context", "perturbation", "fold"]].equals(c[["context", "perturbation", "fold"]])


def test_errors(grid):
    with pytest.raises(ValueError, match="holdout must be one of"):
        si.tl.cross_validate(grid, methods=["additive"], holdout="bogus", progress=False)
    with pytest.raises(TypeError, match="not accepted by any"):
        si.tl.cross_validate(grid, methods=["additive"], rank=3, progress=False)
    with pytest.raises(ValueError, match="Unknown method"):
        si.tl.cross_validate(grid, methods=["nope"], progress=False)
    with pytest.raises(ValueError, match="n_folds"):
        si.tl.cross_validate(
            grid, methods=["additive"], holdout="random", n_folds=1, progress=False
        )
    assert "cross_validation" not in grid.uns


def test_recovery_improves_as_noise_falls():
    med = []
    for noise in [1.0, 0.3, 0.05]:
        g = si.datasets.simulate_grid(10, 12, 40, noise=noise, shared_effect=3.0, random_state=0)
        df = si.tl.cross_validate(g, methods=["additive"], progress=False, key_added=None)
        med.append(df.r2.median())
    assert med[0] < med[1] < med[2]
