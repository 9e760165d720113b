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


# ----------------------------------------------------------------------------- issue 9
@pytest.fixture
def grouped_method():
    """A method whose folds come from a ``grouped_refit`` hook (its ``fn`` must not run)."""
    from scimpute.methods import _registry, register

    calls = []

    def refit(data, folds, params, *, random_state, progress):
        calls.append((len(folds), random_state, progress))
        out = []
        for hidden in folds:
            mask = data.measured.copy()
            mask[hidden[:, 0], hidden[:, 1]] = False
            out.append(baselines.context_mean(data.with_measured(mask), hidden))
        return out

    def fn(data, targets, params=None, *, random_state=0):
        raise AssertionError("cross_validate must use grouped_refit")

    register("_grouped_test", description="test", grouped_refit=refit)(fn)
    yield calls
    _registry._METHODS.pop("_grouped_test")


def test_grouped_refit_hook_serves_every_fold(grid, grouped_method):
    df = si.tl.cross_validate(
        grid, methods=["_grouped_test", "context_mean"], holdout="random", n_folds=3,
        progress=False,
    )  # fmt: skip
    assert len(grouped_method) == 1 and grouped_method[0][0] == 3
    a = df[df.method == "_grouped_test"].reset_index(drop=True)
    b = df[df.method == "context_mean"].reset_index(drop=True)
    pd.testing.assert_frame_equal(a.drop(columns="method"), b.drop(columns="method"))


def test_grouped_refit_results_are_checked(grid, grouped_method):
    from scimpute.methods import get_method

    m = get_method("_grouped_test")
    object.__setattr__(m, "grouped_refit", lambda data, folds, params, **kw: [])
    with pytest.raises(RuntimeError, match="returned 0 results for"):
        si.tl.cross_validate(grid, methods=["_grouped_test"], holdout="random", progress=False)


@pytest.mark.parametrize("bad", ["abc", 1.5, True, -1])
def test_bad_random_state_rejected_before_work(grid, bad):
    with pytest.raises(ValueError, match="^cross_validate: random_state must be"):
        si.tl.cross_validate(grid, methods=["additive"], random_state=bad, progress=False)
    assert "cross_validation" not in grid.uns


def test_key_added_cannot_be_the_grid_record(grid):
    with pytest.raises(ValueError, match="key_added must be a string other than"):
        si.tl.cross_validate(grid, methods=["additive"], key_added="perturbation_grid")
    assert "context_key" in grid.uns["perturbation_grid"]


def test_holdout_and_n_folds_house_messages(grid):
    with pytest.raises(ValueError, match="^cross_validate: holdout must be one of 'leave_one_out'"):
        si.tl.cross_validate(grid, methods=["additive"], holdout="bogus", progress=False)
    with pytest.raises(ValueError, match="^cross_validate: n_folds must be an integer >= 2"):
        si.tl.cross_validate(grid, methods=["additive"], n_folds=2.0, progress=False)


def test_summarize_messages(grid):
    # defect 11: KeyError: 'method' / 'Column not found: auc'
    df = si.tl.cross_validate(grid, methods=["additive"], holdout="random", progress=False)
    with pytest.raises(ValueError, match="lacks the 'method' column"):
        si.tl.summarize_cross_validation(df.drop(columns="method"))
    with pytest.raises(
        ValueError, match=r"Unknown metric\(s\) 'auc'\. Metric columns of the table: 'r2', "
    ):
        si.tl.summarize_cross_validation(df, metrics=["auc"])
    with pytest.raises(ValueError, match="Did you mean 'r2_effect'"):
        si.tl.summarize_cross_validation(df, metrics=["r2_efect"])
    with pytest.raises(TypeError, match="DataFrame of cross_validate"):
        si.tl.summarize_cross_validation(df.to_dict())
    out = si.tl.summarize_cross_validation(df, metrics=["mse"])
    assert list(out.columns) == [
        "n_pairs",
        "median_mse",
        "mean_mse",
        "frac_better_than_context_mean",
    ]
    np.testing.assert_allclose(out.loc["additive", "median_mse"], df["mse"].median())


def test_record_holds_typed_params(grid):
    si.tl.cross_validate(
        grid, methods={"n": {"method": "ntk", "prior": ["onehot"], "reg": 1}},
        holdout="random", n_folds=2, progress=False,
    )  # fmt: skip
    rec = grid.uns["cross_validation"]["params"]["methods"]["n"]
    assert rec["method"] == "ntk" and rec["reg"] == 1.0 and list(rec["prior"]) == ["onehot"]
    assert set(rec) == {"method", *si.methods.get_method("ntk").params.names()}
