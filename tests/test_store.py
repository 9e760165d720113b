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


# --- prediction sinks: the method writes into the destination (issue 12, round 5) ---------

from scimpute.methods import get_method  # noqa: E402
from scimpute.methods.synthetic_interventions import synthetic_interventions  # noqa: E402
from scimpute.tl import _sink  # noqa: E402
from scimpute.tl._data import default_targets, to_grid_data  # noqa: E402
from scimpute.tl._run import run_method  # noqa: E402


def _old_layers(grid, method, **kw):
    """The completed and effect layers as impute built them before sinks: the method's
    array, a float32 copy of the grid, then the grid's row order."""
    data, order = to_grid_data(grid)
    t = default_targets(data)
    m = get_method(method)
    res = run_method(m, data, t, random_state=0, params=m.parse(kw))
    completed = np.array(data.Y, dtype=np.float32)
    completed[t[:, 0], t[:, 1]] = res.prediction
    ctrl = np.where(data.measured[:, data.control][:, None], completed[:, data.control], np.nan)
    eff = (completed - ctrl[:, None, :]).astype(np.float32)
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    n = data.n_contexts * data.n_perturbations
    return completed.reshape(n, -1)[inv], eff.reshape(n, -1)[inv]


@pytest.mark.parametrize("seed", [0, 1])
def test_si_sink_equals_array_path(seed, tmp_path):
    """SI writes into the completed layer (in memory) and into the out_store staging file;
    both equal the old array path to 1e-6 relative, on random grids in random row order."""
    g = si.datasets.simulate_grid(5, 24, 11, fraction_measured=0.5, random_state=seed)
    g = g[np.random.default_rng(seed).permutation(g.n_obs)].copy()
    kw = {"preset": "published"} if seed % 2 else {}
    old, old_eff = _old_layers(g, "synthetic_interventions", **kw)
    mem = si.tl.impute(g, method="synthetic_interventions", copy=True, **kw)
    key = "imputed_synthetic_interventions"
    scale = np.abs(old).max()
    np.testing.assert_allclose(mem.layers[key], old, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(mem.layers[f"{key}_effect"], old_eff, rtol=0, atol=1e-6 * scale)
    path = tmp_path / "si.zarr"
    si.tl.impute(g, method="synthetic_interventions", copy=True, out_store=path, **kw)
    lazy = ad.experimental.read_lazy(path)
    for name in (key, f"{key}_effect"):
        np.testing.assert_array_equal(lazy.layers[name].compute(), mem.layers[name])
    assert not list(tmp_path.glob(".*.f32"))  # the staging file is removed


def test_si_writes_into_the_sink_it_is_given():
    """The method fills the sink group by group (no array of its own is returned)."""
    g = si.datasets.simulate_grid(4, 12, 9, fraction_measured=0.5, random_state=3)
    data, _ = to_grid_data(g)
    t = default_targets(data)
    ref = synthetic_interventions(data, t, random_state=0)
    out = _sink.ArraySink(len(t), data.n_features)
    res = synthetic_interventions(data, t, random_state=0, out=out)
    assert res.prediction is out and out.missing() == 0
    np.testing.assert_array_equal(out.array, ref.prediction.astype(np.float32))
    with pytest.raises(ValueError, match="out has shape"):
        synthetic_interventions(data, t, out=_sink.ArraySink(len(t) + 1, data.n_features))


def test_disk_sink_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(30, 4))
    sink = _sink.DiskSink(tmp_path / "p.f32", 30, 4)
    rows = rng.permutation(30)
    sink[rows[:10]] = vals[rows[:10]]
    sink[rows[10:]] = vals[rows[10:]]
    sink[np.array([3, 3])] = np.stack([vals[3] + 1, vals[3]])  # a repeated row keeps its last
    assert sink.missing() == 0 and sink.n_nonfinite == 0
    np.testing.assert_array_equal(sink[np.array([5, 0, 5])], vals[[5, 0, 5]].astype(np.float32))
    np.testing.assert_array_equal(np.asarray(sink), vals.astype(np.float32))
    with pytest.raises(FileExistsError):
        _sink.DiskSink(tmp_path / "p.f32", 30, 4)  # never over an existing file
    sink.close()
    assert not (tmp_path / "p.f32").exists()


def test_grid_sink_writes_destination_rows():
    dest = np.zeros((6, 2), dtype=np.float32)
    sink = _sink.GridSink(dest, np.array([4, 1, 2]))
    sink[np.array([2, 0])] = [[1, 1], [2, 2]]
    np.testing.assert_array_equal(dest[[4, 2, 1]], [[2, 2], [1, 1], [0, 0]])
    assert sink.missing() == 1


def test_run_method_checks_the_sink(grid):
    """A method without ``out`` is copied into the sink; unwritten or non-finite rows raise."""
    data, _ = to_grid_data(grid)
    t = default_targets(data)
    m = get_method("context_mean")
    ref = run_method(m, data, t, random_state=0, params=m.parse({}))
    out = _sink.ArraySink(len(t), data.n_features)
    res = run_method(m, data, t, random_state=0, params=m.parse({}), out=out)
    assert res.prediction is out
    np.testing.assert_array_equal(out.array, ref.prediction.astype(np.float32))
    from scimpute.tl._run import check_result

    lazy = _sink.ArraySink(len(t), data.n_features)
    lazy[np.arange(len(t) - 1)] = ref.prediction[:-1]
    res.prediction = lazy
    with pytest.raises(RuntimeError, match="left 1 targets unwritten"):
        check_result(m, t, res, data.n_features)
    lazy[[len(t) - 1]] = np.nan
    with pytest.raises(RuntimeError, match="non-finite predictions for 1 pairs"):
        check_result(m, t, res, data.n_features)


def test_shuffled_grid_effects(grid):
    """The effect layer built in grid row order equals the canonical one, permuted."""
    perm = np.random.default_rng(2).permutation(grid.n_obs)
    mem = si.tl.impute(grid, method="context_mean", copy=True)
    shuf = si.tl.impute(grid[perm].copy(), method="context_mean", copy=True)
    for name in ("imputed_context_mean", "imputed_context_mean_effect"):
        np.testing.assert_array_equal(shuf.layers[name], mem.layers[name][perm])
