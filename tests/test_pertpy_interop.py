"""Interoperability with pertpy (optional extra): runs where pertpy is installed.

CI installs it with ``pip install -e ".[interop]"`` and sets ``SCIMPUTE_REQUIRE_PERTPY=1`` so
that a broken install fails instead of skipping.
"""

import os

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scimpute as si

if os.environ.get("SCIMPUTE_REQUIRE_PERTPY") == "1":  # CI installs the extra: never skip there
    import pertpy as pt
else:
    pt = pytest.importorskip(
        "pertpy", reason='pertpy is an optional extra: pip install -e ".[interop]"'
    )


def test_pseudobulk_space_output_builds_a_grid(cells, fast):
    ps = pt.tl.PseudobulkSpace().compute(
        cells, target_col="perturbation", groups_col="cell_type", mode="mean"
    )
    grid = si.pp.perturbation_grid(ps, "cell_type", "perturbation")
    assert grid.obs["measured"].all()
    ref = (
        pd.DataFrame(cells.X, index=cells.obs_names)
        .groupby([cells.obs["cell_type"].to_numpy(), cells.obs["perturbation"].to_numpy()])
        .mean()
    )
    row = grid[(grid.obs["cell_type"] == "ct2") & (grid.obs["perturbation"] == "p1")].X[0]
    np.testing.assert_allclose(row, ref.loc[("ct2", "p1")].to_numpy(), rtol=1e-5)
    grid.obs.loc[
        grid.obs_names[(grid.obs["cell_type"] == "ct0") & (grid.obs["perturbation"] == "p0")],
        "measured",
    ] = False
    si.tl.impute(
        grid,
        method="autoencoder",
        max_epochs=20,
        validation_fraction=0.0,
        **{k: fast[k] for k in ("width", "depth", "latent_dim")},
    )
    assert np.isfinite(grid.layers["imputed_autoencoder"]).all()


@pytest.fixture(scope="module")
def transferred(cells, fast):
    """(predicted, real, control) cells of (ct0, p0), held out of the transfer network."""
    hide = ((cells.obs["cell_type"] == "ct0") & (cells.obs["perturbation"] == "p0")).to_numpy()
    train = cells[~hide].copy()
    si.tl.fit_transfer(train, progress=False, **fast)
    pred = si.tl.transfer(train, target_context="ct0", target_perturbation="p0")
    ctrl = cells[
        ((cells.obs["cell_type"] == "ct0") & (cells.obs["perturbation"] == "control")).to_numpy()
    ].copy()
    return pred, cells[hide].copy(), ctrl


def test_transfer_output_feeds_pertpy_distances(cells, transferred):
    pred, real, ctrl = (a.copy() for a in transferred)
    real.obs["predicted"] = False
    ctrl.obs["predicted"] = False
    both = ad.concat([real, pred, ctrl], join="inner", index_unique="-")
    both.obs["group"] = np.where(
        both.obs["predicted"].astype(bool), "predicted", both.obs["perturbation"].astype(str)
    )
    both.layers["expr"] = np.asarray(both.X)
    dist = pt.tl.Distance(metric="edistance", layer_key="expr")
    table = dist.pairwise(both, groupby="group", show_progressbar=False, n_jobs=1)
    assert table.loc["predicted", "p0"] < table.loc["control", "p0"]
    assert set(both.var_names) == set(cells.var_names)
    d = si.tl.compare_transfer(pred, real, control=ctrl)
    assert set(d.index) == {"predicted", "real", "control"}
    assert d.loc["predicted", "real"] < d.loc["control", "real"]


def _cells_from_grid(grid, n_per_pair=6, noise=0.05, seed=0):
    """Cells around each profile of a simulated grid (its truth layer), labelled as in pertpy."""
    rng = np.random.default_rng(seed)
    rep = np.repeat(np.arange(grid.n_obs), n_per_pair)
    x = grid.layers["truth"][rep] + noise * rng.standard_normal((rep.size, grid.n_vars))
    obs = grid.obs.iloc[rep][["context", "perturbation"]].reset_index(drop=True)
    obs.index = [f"cell{i}" for i in range(rep.size)]
    return ad.AnnData(x.astype(np.float32), obs=obs, var=grid.var.copy())


@pytest.fixture(scope="module")
def combo_cells():
    """Additive truth (no interaction): 4 contexts x (control, 4 singles, 3 "A+B" pairs)."""
    truth = si.datasets.simulate_grid(
        4, 4, 40, n_combinations=3, fraction_measured=1.0, noise=0.0, random_state=0
    )
    return truth, _cells_from_grid(truth)


def test_pseudobulk_space_with_combinations_round_trips_through_impute(combo_cells):
    """pertpy's PseudobulkSpace output (one row per (perturbation, context), "A+B" labels,
    "control") is a grid input as it is; the additive combination of the two singles
    recovers the held-out pair, and pertpy's distances and control differences agree."""
    truth, cells = combo_cells
    combo = next(p for p in truth.obs["perturbation"].unique() if "+" in p)
    a, b = combo.split("+")
    hide = ((cells.obs["context"] == "c0") & (cells.obs["perturbation"] == combo)).to_numpy()
    ps = pt.tl.PseudobulkSpace().compute(
        cells[~hide].copy(), target_col="perturbation", groups_col="context", mode="mean"
    )
    assert len(ps) == truth.n_obs - 1  # pertpy's own object: one row per measured pair
    grid = si.pp.perturbation_grid(ps, "context", "perturbation", control="control")
    key = f"c0|{combo}"
    assert grid.n_obs == truth.n_obs and list(grid.obs_names[~grid.obs["measured"]]) == [key]
    assert grid.uns["perturbation_grid"]["combination_sep"] == "+"
    np.testing.assert_allclose(  # measured rows are pertpy's means, unchanged
        grid["c1|control"].X[0], ps[(ps.obs["context"] == "c1").to_numpy()
                                    & (ps.obs["perturbation"] == "control").to_numpy()].X[0],
        rtol=1e-6,
    )  # fmt: skip
    si.tl.impute(grid, method="additive_combination")
    layer = "imputed_additive_combination"
    pred = grid[key].layers[layer][0]
    want = grid[f"c0|{a}"].X[0] + grid[f"c0|{b}"].X[0] - grid["c0|control"].X[0]
    np.testing.assert_allclose(pred, want, rtol=1e-5, atol=1e-5)
    assert np.abs(pred - truth[key].layers["truth"][0]).max() < 0.2

    # scimpute's profiles handed to pertpy's Distance: the prediction is nearest to the truth
    c0 = grid[(grid.obs["context"] == "c0").to_numpy()]
    prof = ad.AnnData(
        np.vstack([c0.layers[layer], truth[key].layers["truth"]]).astype(np.float64),
        obs=pd.DataFrame(
            {"group": [*(f"imputed {p}" for p in c0.obs["perturbation"]), "truth"]},
            index=[*c0.obs_names, "truth"],
        ),
    )
    prof.layers["profile"] = prof.X
    d = pt.tl.Distance(metric="euclidean", layer_key="profile").onesided_distances(
        prof, groupby="group", selected_group="truth", show_progressbar=False, n_jobs=1
    )
    assert d.drop("truth").idxmin() == f"imputed {combo}"

    # pertpy's control difference of the imputed grid is scimpute's effect layer
    full = ad.AnnData(grid.layers[layer].copy(), obs=grid.obs[["context", "perturbation"]].copy())
    diff = pt.tl.PseudobulkSpace().compute_control_diff(
        full, target_col="perturbation", group_col="context", reference_key="control", copy=True
    )
    np.testing.assert_allclose(diff.X, grid.layers[f"{layer}_effect"], rtol=1e-5, atol=1e-5)


def test_distance_test_on_transfer_predicted_cells(transferred):
    """pertpy's permutation DistanceTest on scimpute's predicted cells: against the real
    held-out cells, the control cells differ significantly, and lie farther than the
    predicted ones."""
    pred, real, ctrl = transferred
    both = ad.concat(
        {"real": real, "predicted": pred, "control": ctrl},
        label="group",
        join="inner",
        index_unique="-",
    )
    both.layers["expr"] = np.asarray(both.X, dtype=np.float64)
    test = pt.tl.DistanceTest("edistance", n_perms=200, layer_key="expr")
    res = test(both, groupby="group", contrast="real", show_progressbar=False)
    res = res.set_index("comparison") if "comparison" in res else res
    assert res.loc["control", "significant"]
    assert res.loc["predicted", "distance"] < res.loc["control", "distance"]
