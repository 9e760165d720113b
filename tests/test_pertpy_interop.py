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


def test_transfer_output_feeds_pertpy_distances(cells, fast):
    hide = ((cells.obs["cell_type"] == "ct0") & (cells.obs["perturbation"] == "p0")).to_numpy()
    train = cells[~hide].copy()
    si.tl.fit_transfer(train, progress=False, **fast)
    pred = si.tl.transfer(train, target_context="ct0", target_perturbation="p0")
    real = cells[hide].copy()
    real.obs["predicted"] = False
    ctrl = cells[
        ((cells.obs["cell_type"] == "ct0") & (cells.obs["perturbation"] == "control")).to_numpy()
    ].copy()
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
