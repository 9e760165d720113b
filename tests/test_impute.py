import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scimpute as si
from scimpute.methods import baselines


@pytest.fixture
def grid():
    return si.datasets.simulate_grid(8, 10, 25, noise=0.2, fraction_measured=0.5, random_state=0)


def _snapshot(a):
    return (
        a.X.copy(),
        a.obs.copy(),
        set(a.layers.keys()),
        set(a.uns.keys()),
        set(a.obsm.keys()),
    )


def _same(a, snap):
    X, obs, layers, uns, obsm = snap
    np.testing.assert_array_equal(a.X, X)
    pd.testing.assert_frame_equal(a.obs, obs)
    assert set(a.layers.keys()) == layers and set(a.uns.keys()) == uns
    assert set(a.obsm.keys()) == obsm


def test_impute_writes_documented_fields(grid):
    si.tl.impute(grid, method="two_way_mean")
    key = "imputed_two_way_mean"
    meas = grid.obs["measured"].to_numpy()
    L = grid.layers[key]
    np.testing.assert_array_equal(L[meas], grid.X[meas])
    assert np.isfinite(L).all()
    # the effect layer subtracts the context's control
    ctrl = grid.obs["perturbation"] == "control"
    for c in grid.obs["context"].cat.categories:
        rows = (grid.obs["context"] == c).to_numpy()
        base = L[rows & ctrl.to_numpy()][0]
        np.testing.assert_allclose(
            grid.layers[f"{key}_effect"][rows], L[rows] - base, rtol=1e-5, atol=1e-5
        )
    src = grid.obs[f"{key}_source"]
    assert (src[meas] == "measured").all() and (src[~meas] != "measured").all()
    rec = grid.uns[key]
    assert rec["method"] == "two_way_mean" and rec["n_imputed"] == int((~meas).sum())
    assert sum(rec["fallbacks"].values()) == rec["n_imputed"]
    assert rec["params"]["random_state"] == 0
    diag = grid.obs[f"{key}_n_averaged"]
    assert diag[meas].isna().all() and (diag[~meas] > 0).all()


def test_predictions_equal_array_method(grid):
    si.tl.impute(grid, method="additive")
    data, _ = si.tl._data.to_grid_data(grid)
    t = si.tl._data.default_targets(data)
    ref = baselines.additive(data, t).prediction
    L = grid.layers["imputed_additive"].reshape(data.Y.shape)
    np.testing.assert_allclose(L[t[:, 0], t[:, 1]], ref, rtol=1e-6)


def test_row_order_does_not_matter(grid):
    perm = np.random.default_rng(1).permutation(grid.n_obs)
    shuffled = grid[perm].copy()
    si.tl.impute(grid, method="additive")
    si.tl.impute(shuffled, method="additive")
    np.testing.assert_allclose(
        shuffled.layers["imputed_additive"], grid.layers["imputed_additive"][perm], rtol=1e-6
    )


def test_copy_and_determinism(grid):
    snap = _snapshot(grid)
    out = si.tl.impute(grid, method="context_mean", copy=True, key_added="cm")
    _same(grid, snap)
    assert "cm" in out.layers
    out2 = si.tl.impute(grid, method="context_mean", copy=True, key_added="cm")
    np.testing.assert_array_equal(out.layers["cm"], out2.layers["cm"])


def test_hidden_pairs_are_predicted(grid):
    names = grid.obs_names[grid.obs["measured"] & (grid.obs["perturbation"] != "control")][:3]
    truth = grid[names].X.copy()
    grid.obs.loc[names, "measured"] = False
    si.tl.impute(grid, method="context_mean")
    pred = grid[names].layers["imputed_context_mean"]
    assert not np.allclose(pred, truth)  # the hidden values were not copied through
    np.testing.assert_array_equal(grid[names].X, truth)  # X itself untouched


def test_roundtrip_h5ad(grid, tmp_path):
    si.tl.impute(grid, method="additive")
    si.tl.cross_validate(
        grid, methods=["context_mean", "additive"], holdout="random", progress=False
    )
    grid.write_h5ad(tmp_path / "g.h5ad")
    back = ad.read_h5ad(tmp_path / "g.h5ad")
    for k in ["imputed_additive", "imputed_additive_effect"]:
        np.testing.assert_array_equal(back.layers[k], grid.layers[k])
    pd.testing.assert_series_equal(
        back.obs["imputed_additive_source"], grid.obs["imputed_additive_source"]
    )
    assert back.uns["imputed_additive"]["fallbacks"] == grid.uns["imputed_additive"]["fallbacks"]
    pd.testing.assert_frame_equal(
        back.uns["cross_validation"]["scores"],
        grid.uns["cross_validation"]["scores"],
        check_dtype=False,
    )


def test_control_none_effects_are_profiles():
    g = si.datasets.simulate_grid(5, 6, 10, control=None, random_state=2)
    si.tl.impute(g, method="additive")
    np.testing.assert_array_equal(g.layers["imputed_additive_effect"], g.layers["imputed_additive"])


def test_unmeasured_control_is_filled_and_counted(grid):
    name = grid.obs_names[(grid.obs["perturbation"] == "control").to_numpy()][0]
    grid.obs.loc[name, "measured"] = False
    si.tl.impute(grid, method="context_mean")
    assert grid.uns["imputed_context_mean"]["n_control_filled"] == 1
    assert grid.obs.loc[name, "imputed_context_mean_source"] == "control_mean"
    ctx = grid.obs.loc[name, "context"]
    rows = (grid.obs["context"] == ctx).to_numpy()
    assert np.isnan(grid.layers["imputed_context_mean_effect"][rows]).all()


@pytest.mark.parametrize(
    ("setup", "kwargs", "err", "match"),
    [
        (None, {"method": "contxt_mean"}, ValueError, "Did you mean 'context_mean'"),
        (None, {"method": "context_mean", "rank": 3}, TypeError, "unexpected parameter"),
        ("nan", {"method": "context_mean"}, ValueError, "hold NaN or inf"),
        (
            "none_measured",
            {"method": "context_mean"},
            ValueError,
            "No pair of the grid is measured",
        ),
        ("not_grid", {"method": "context_mean"}, ValueError, "not a perturbation grid"),
        ("rows_removed", {"method": "context_mean"}, ValueError, "rows were removed"),
        (None, {"method": "context_mean", "key_added": ""}, ValueError, "non-empty"),
    ],
)
def test_errors_leave_grid_untouched(grid, setup, kwargs, err, match):
    if setup == "nan":
        i = np.flatnonzero(grid.obs["measured"].to_numpy())[4]
        grid.X[i, 0] = np.nan
    elif setup == "none_measured":
        grid.obs["measured"] = False
    elif setup == "not_grid":
        del grid.uns["perturbation_grid"]
    elif setup == "rows_removed":
        grid = grid[3:].copy()
    snap = _snapshot(grid)
    with pytest.raises(err, match=match):
        si.tl.impute(grid, **kwargs)
    _same(grid, snap)


def test_not_anndata():
    with pytest.raises(TypeError, match="Expected an AnnData"):
        si.tl.impute(np.zeros((3, 3)), method="context_mean")


# ----------------------------------------------------------------------------- defects (issue 9)
@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("perturbation_grid", "reserved"),  # defect 4: the grid's own record
        ("cross_validation", "reserved"),
        ("context", "the grid's own obs columns"),  # a label column
        ("measured", "the grid's own obs columns"),
        ("truth", r"layers\['truth'\]"),  # a layer impute did not write
        ("simulation", "was not written by impute"),  # a foreign .uns entry
    ],
)
def test_key_added_cannot_overwrite_the_grid(grid, key, match):
    snap = _snapshot(grid)
    truth = grid.layers["truth"].copy()
    rec = dict(grid.uns["perturbation_grid"])
    with pytest.raises(ValueError, match=match):
        si.tl.impute(grid, method="context_mean", key_added=key)
    _same(grid, snap)
    np.testing.assert_array_equal(grid.layers["truth"], truth)
    assert dict(grid.uns["perturbation_grid"]) == rec
    si.tl.impute(grid, method="context_mean")  # the grid still works


def test_rerunning_with_the_same_key_replaces_own_results(grid):
    si.tl.impute(grid, method="context_mean", key_added="x")
    si.tl.impute(grid, method="additive", key_added="x")
    assert grid.uns["x"]["method"] == "additive"


def test_unused_categories_are_ignored(grid):
    # defect 6: a context column with an unused category (e.g. after subsetting) gave IndexError
    ref = si.tl.impute(grid, method="additive", copy=True)
    g = grid.copy()
    g.obs["context"] = g.obs["context"].cat.add_categories(["ghost"])
    g.obs["perturbation"] = g.obs["perturbation"].cat.add_categories(["never"])
    si.tl.impute(g, method="additive")
    np.testing.assert_array_equal(g.layers["imputed_additive"], ref.layers["imputed_additive"])


def test_subset_of_contexts_is_a_grid(grid):
    keep = grid.obs["context"].isin(grid.obs["context"].cat.categories[:4]).to_numpy()
    sub = grid[keep].copy()
    sub.obs["context"] = sub.obs["context"].cat.set_categories(grid.obs["context"].cat.categories)
    si.tl.impute(sub, method="context_mean")
    assert np.isfinite(sub.layers["imputed_context_mean"]).all()


def test_float16_profiles(grid):
    # defect 6: float16 X failed inside scipy
    g16 = grid.copy()
    g16.X = grid.X.astype(np.float16)
    g32 = grid.copy()
    g32.X = g16.X.astype(np.float32)
    si.tl.impute(g16, method="additive")
    si.tl.impute(g32, method="additive")
    assert g16.layers["imputed_additive"].dtype == np.float32
    np.testing.assert_array_equal(g16.layers["imputed_additive"], g32.layers["imputed_additive"])


def test_params_record_is_the_typed_spec(grid):
    si.tl.impute(grid, method="ntk", prior=["onehot"], reg=1, key_added="n")
    params = grid.uns["n"]["params"]
    assert list(params["prior"]) == ["onehot"]  # a list is stored as the typed tuple
    assert params["reg"] == 1.0 and isinstance(params["reg"], float)
    assert params["center"] == "control" and params["weights"] == "None"
    assert params["random_state"] == 0


def test_method_that_does_not_apply_warns_once(grid):
    with pytest.warns(UserWarning, match="no perturbation label is a combination") as rec:
        si.tl.impute(grid, method="additive_combination")
    assert len([w for w in rec if issubclass(w.category, UserWarning)]) == 1
    with pytest.warns(UserWarning, match="positive dose"):
        si.tl.impute(grid, method="dose_interpolation")
    # the fallback filled every target, and says so
    src = grid.obs["imputed_additive_combination_source"]
    assert not src.str.startswith("additive_combination").any()
