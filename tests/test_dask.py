"""Dask: out-of-core grid aggregation and ``tl.impute(..., client=...)`` on a LocalCluster.

The grid of a dask-backed AnnData (dense or sparse chunks, any chunking, lazily read from
h5ad) must equal the grid of the same matrix in memory; the distributed impute must equal the
single-process one. Skipped with a reason when dask is not installed
(``pip install 'scimpute[dask]'``).
"""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

da = pytest.importorskip(
    "dask.array", reason="dask is not installed (pip install 'scimpute[dask]')"
)
distributed = pytest.importorskip(
    "distributed", reason="dask.distributed is not installed (pip install 'scimpute[dask]')"
)

import scimpute as si  # noqa: E402
from scimpute._keys import Key  # noqa: E402


def _cells(n, n_genes, seed, *, counts=True, density=0.3):
    rng = np.random.default_rng(seed)
    if counts:  # integers: float64 sums are exact, whatever the order
        X = rng.poisson(1.0, size=(n, n_genes)) * (rng.random((n, n_genes)) < density)
    else:
        X = rng.gamma(2.0, 1.0, size=(n, n_genes)) * (rng.random((n, n_genes)) < density)
    obs = pd.DataFrame(
        {
            "cell_line": rng.choice(["A", "B", "C"], n),
            "drug": rng.choice(["control", "d1", "d2", "d3", "d1+d2"], n),
        },
        index=[f"c{i}" for i in range(n)],
    )
    obs.loc[(obs.cell_line == "C") & (obs.drug == "d3"), "drug"] = "d1"  # one pair unmeasured
    return X.astype(np.float32), obs


def _lazy(X, chunks, sparse):
    x = da.from_array(X, chunks=chunks)
    return x.map_blocks(sp.csr_matrix, dtype=X.dtype) if sparse else x


def _assert_same_grid(g, ref, exact):
    assert g.obs.equals(ref.obs) and g.var.equals(ref.var)
    assert g.uns[Key.uns.grid] == ref.uns[Key.uns.grid]
    if exact:
        np.testing.assert_array_equal(g.X, ref.X)
    else:
        np.testing.assert_allclose(g.X, ref.X, rtol=1e-6, atol=0, equal_nan=True)


@pytest.mark.parametrize(
    ("n", "n_genes", "chunks", "sparse", "counts", "seed"),
    [
        (500, 12, (97, 12), True, True, 0),
        (500, 12, (97, 5), False, True, 1),  # chunks along genes too
        (800, 30, (800, 30), True, False, 2),  # one block
        (731, 7, (50, 3), True, False, 3),
        (333, 9, (1, 9), False, False, 4),  # one cell per block
    ],
)
def test_dask_grid_equals_in_memory(n, n_genes, chunks, sparse, counts, seed):
    X, obs = _cells(n, n_genes, seed, counts=counts)
    mem = ad.AnnData(X=sp.csr_matrix(X) if sparse else X, obs=obs)
    lazy = ad.AnnData(X=_lazy(X, chunks, sparse), obs=obs.copy())
    ref = si.pp.perturbation_grid(mem, "cell_line", "drug", min_cells=2)
    g = si.pp.perturbation_grid(lazy, "cell_line", "drug", min_cells=2)
    _assert_same_grid(g, ref, exact=counts)
    assert isinstance(lazy.X, da.Array)  # the input is not computed into memory
    assert not ref.obs["measured"].all()  # the unmeasured pair stays unmeasured


def test_dask_grid_with_layer_and_dose():
    X, obs = _cells(400, 6, 5)
    obs["dose"] = np.where(obs["drug"] == "control", 0.0, 1.0 + (np.arange(400) % 2))
    mem = ad.AnnData(X=np.zeros_like(X), obs=obs, layers={"counts": X})
    lazy = ad.AnnData(X=np.zeros_like(X), obs=obs.copy(), layers={"counts": _lazy(X, 64, True)})
    kw = {"layer": "counts", "dose_key": "dose"}
    ref = si.pp.perturbation_grid(mem, "cell_line", "drug", **kw)
    _assert_same_grid(si.pp.perturbation_grid(lazy, "cell_line", "drug", **kw), ref, exact=True)


def test_dask_grid_rejects_non_finite_chunk():
    X, obs = _cells(300, 5, 6, counts=False)
    X[250, 3] = np.nan  # in the last block only
    lazy = ad.AnnData(X=_lazy(X, 100, True), obs=obs)
    with pytest.raises(ValueError, match="NaN or infinite"):
        si.pp.perturbation_grid(lazy, "cell_line", "drug")


def test_lazily_read_h5ad_equals_in_memory(tmp_path):
    import h5py
    from anndata.experimental import read_elem_lazy
    from anndata.io import read_elem

    X, obs = _cells(600, 10, 7, counts=False)
    mem = ad.AnnData(X=sp.csr_matrix(X), obs=obs)
    mem.write_h5ad(tmp_path / "cells.h5ad")
    with h5py.File(tmp_path / "cells.h5ad", "r") as f:
        x = read_elem_lazy(f["X"], chunks=(128, 10))
        lazy = ad.AnnData(X=x, obs=read_elem(f["obs"]))
        g = si.pp.perturbation_grid(lazy, "cell_line", "drug")
    _assert_same_grid(g, si.pp.perturbation_grid(mem, "cell_line", "drug"), exact=False)


def test_read_lazy_store_equals_in_memory(tmp_path):
    from anndata.experimental import read_lazy

    X, obs = _cells(500, 8, 9)
    obs["batch"] = "b0"  # a column the grid does not use (stays lazy)
    mem = ad.AnnData(X=sp.csr_matrix(X), obs=obs)
    mem.write_h5ad(tmp_path / "cells.h5ad")
    lazy = read_lazy(tmp_path / "cells.h5ad")
    assert isinstance(lazy.X, da.Array) and not isinstance(lazy.obs, pd.DataFrame)
    g = si.pp.perturbation_grid(lazy, "cell_line", "drug")
    _assert_same_grid(g, si.pp.perturbation_grid(mem, "cell_line", "drug"), exact=True)


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            # in-process workers measure the whole (pytest) process: any limit below its RSS
            # pauses them forever, so none is set here (the benchmark bounds real workers)
            memory_limit=0,
        )
        c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_dask_grid_on_a_cluster_equals_in_memory(client):
    X, obs = _cells(1000, 16, 8, counts=False)
    ref = si.pp.perturbation_grid(ad.AnnData(X=X, obs=obs), "cell_line", "drug")
    lazy = ad.AnnData(X=_lazy(X, (150, 16), True), obs=obs.copy())
    _assert_same_grid(si.pp.perturbation_grid(lazy, "cell_line", "drug"), ref, exact=False)


# ------------------------------------------------------------------------------------------
# tl.impute(..., client=...)
# ------------------------------------------------------------------------------------------
def _assert_same_impute(dist, local, key, rtol):
    np.testing.assert_allclose(dist.layers[key], local.layers[key], rtol=rtol, atol=1e-9)
    eff = Key.layers.effect(key)
    np.testing.assert_allclose(dist.layers[eff], local.layers[eff], rtol=rtol, atol=1e-9)
    assert dist.obs.columns.equals(local.obs.columns)
    for col in dist.obs.columns:
        a, b = dist.obs[col], local.obs[col]
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-9, equal_nan=True)
        else:
            assert a.astype(str).equals(b.astype(str)), col
    rec, ref = dict(dist.uns[key]), dict(local.uns[key])
    groups = rec.pop("distributed")
    assert groups["n_groups"] >= 2 and int(np.sum(groups["group_sizes"])) == ref["n_imputed"]
    assert rec.keys() == ref.keys()
    _assert_same_record(rec, ref, rtol)


def _assert_same_record(rec, ref, rtol):
    for k, v in ref.items():
        w = rec[k]
        if isinstance(v, dict):
            _assert_same_record(w, v, rtol)
        elif sp.issparse(v):
            np.testing.assert_allclose(w.toarray(), v.toarray(), rtol=rtol, atol=1e-9)
        elif isinstance(v, np.ndarray) and v.dtype.kind == "f":
            np.testing.assert_allclose(w, v, rtol=rtol, atol=1e-9, equal_nan=True)
        elif isinstance(v, np.ndarray):
            np.testing.assert_array_equal(w, v)
        else:
            assert w == v or (v != v and w != w), k


@pytest.fixture(scope="module")
def sim_grid():
    return si.datasets.simulate_grid(6, 12, 20, noise=0.2, fraction_measured=0.6, random_state=3)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("context_mean", {}),
        ("synthetic_interventions", {}),
        ("synthetic_interventions", {"donors": "contexts"}),  # grouped by perturbation
        ("ntk", {}),
    ],
)
def test_distributed_impute_equals_local(client, sim_grid, method, params):
    local = si.tl.impute(sim_grid, method=method, copy=True, random_state=1, **params)
    dist = si.tl.impute(sim_grid, method=method, copy=True, random_state=1, client=client, **params)
    key = Key.uns.imputed(method)
    _assert_same_impute(dist, local, key, rtol=1e-6)
    axis = "perturbation" if params.get("donors") == "contexts" else "context"
    assert dist.uns[key]["distributed"]["by"] == axis


def test_distributed_impute_rejects_a_non_client(sim_grid):
    before = sim_grid.copy()
    with pytest.raises(TypeError, match="dask.distributed.Client"):
        si.tl.impute(sim_grid, method="context_mean", client="tcp://127.0.0.1:8786")
    assert sim_grid.uns.keys() == before.uns.keys()
    assert sim_grid.layers.keys() == before.layers.keys()


def test_target_groups_are_whole_balanced_and_unequal():
    from scimpute.tl._distributed import target_groups

    units = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    groups = target_groups(units, 2)
    assert sorted(np.concatenate(groups).tolist()) == list(range(units.size))
    for g in groups:  # whole units, original order
        assert (np.diff(g) > 0).all()
        others = np.setdiff1d(np.arange(units.size), g)
        assert not set(units[g]) & set(units[others])
    assert sorted(g.size for g in groups) == [5, 5] or len({g.size for g in groups}) > 1
    # equal sizes are made unequal (so per-target info is recognised)
    eq = target_groups(np.array([0, 0, 1, 1]), 2)
    assert sorted(g.size for g in eq) == [1, 3]
    assert len(target_groups(units, 1)) == 1 and len(target_groups(units, 99)) == 4


def test_an_error_on_a_worker_is_raised_and_nothing_is_written(client, sim_grid):
    before = sim_grid.copy()
    with pytest.raises(ValueError, match="n_feature_folds must be at most"):
        si.tl.impute(sim_grid, method="synthetic_interventions", client=client, n_feature_folds=25)
    assert sim_grid.uns.keys() == before.uns.keys()
    assert sim_grid.layers.keys() == before.layers.keys()
    assert sim_grid.obs.columns.equals(before.obs.columns)
