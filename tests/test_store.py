"""``tl.impute(..., out_store=PATH)``: completed layers streamed to a zarr store (issue 12)."""

import anndata as ad
import numpy as np
import pytest

import scimpute as si
from scimpute.tl import _store


@pytest.fixture
def grid():
    g = si.datasets.simulate_grid(4, 9, 7, fraction_measured=0.6, control="ctrl", random_state=1)
    # one context without a measured control: its control row is filled, its effects NaN
    row = np.flatnonzero((g.obs["context"] == "c0") & (g.obs["perturbation"] == "ctrl"))
    g.obs.loc[g.obs_names[row], "measured"] = False
    return g


def test_round_trip_equals_in_memory(grid, tmp_path, monkeypatch):
    monkeypatch.setattr(_store, "_CHUNK_BYTES", 4 * 7 * 5)  # blocks of 5 rows
    mem = si.tl.impute(grid, method="context_mean", copy=True)
    path = tmp_path / "out.zarr"
    disk = si.tl.impute(grid, method="context_mean", copy=True, out_store=path)
    key = "imputed_context_mean"
    assert key not in disk.layers and disk.uns[key]["out_store"] == str(path)
    back = ad.read_zarr(path)
    for name in (key, f"{key}_effect"):
        np.testing.assert_array_equal(np.asarray(back.layers[name]), mem.layers[name])
    assert np.isnan(mem.layers[f"{key}_effect"]).any()  # the NaN effect rows survive
    assert (back.obs[f"{key}_source"] == mem.obs[f"{key}_source"]).all()
    assert "control_mean" in set(back.obs[f"{key}_source"])
    assert list(back.obs_names) == list(grid.obs_names)
    assert back.uns[key]["n_imputed"] == mem.uns[key]["n_imputed"]
    lazy = ad.experimental.read_lazy(path)
    import dask.array as da

    assert isinstance(lazy.layers[key], da.Array)
    np.testing.assert_array_equal(lazy.layers[key][3:11].compute(), mem.layers[key][3:11])


def test_existing_store_is_never_overwritten(grid, tmp_path):
    path = tmp_path / "out.zarr"
    path.mkdir()
    (path / "keep.txt").write_text("x")
    before = grid.copy()
    with pytest.raises(FileExistsError, match="overwrite_store=True"):
        si.tl.impute(grid, method="context_mean", out_store=path)
    assert (path / "keep.txt").exists()
    assert set(grid.obs.columns) == set(before.obs.columns) and set(grid.uns) == set(before.uns)
    si.tl.impute(grid, method="context_mean", out_store=path, overwrite_store=True)
    assert not (path / "keep.txt").exists()
    assert "imputed_context_mean" in ad.read_zarr(path).layers


def test_bad_store_path(grid):
    with pytest.raises(TypeError, match="out_store must be a path"):
        si.tl.impute(grid, method="context_mean", out_store=3)
