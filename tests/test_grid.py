import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scimpute as si
from scimpute._keys import Key
from scimpute._records import GridInfo
from scimpute._validate import _suggest, check_grid, check_layer


def _cells(n=600, n_genes=30, seed=0):
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {
            "cell_type": rng.choice(["T", "B", "NK", "Mono"], n),
            "drug": rng.choice(["control", "a", "b", "a+b", "c"], n),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    # one pair never measured
    obs.loc[(obs.cell_type == "NK") & (obs.drug == "c"), "drug"] = "a"
    X = rng.poisson(1.0, size=(n, n_genes)).astype(np.float32)
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))


def _groupby_reference(adata, ck, pk):
    df = pd.DataFrame(
        np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X),
        index=adata.obs_names,
        columns=adata.var_names,
    )
    df[ck] = adata.obs[ck].astype(str).to_numpy()
    df[pk] = adata.obs[pk].astype(str).to_numpy()
    return df.groupby([ck, pk]).mean(), df.groupby([ck, pk]).size()


@pytest.mark.parametrize("kind", ["dense", "csr", "csc", "int", "float64"])
def test_grid_matches_pandas_groupby(kind):
    adata = _cells()
    if kind == "csr":
        adata.X = sp.csr_matrix(adata.X)
    elif kind == "csc":
        adata.X = sp.csc_matrix(adata.X)
    elif kind == "int":
        adata.X = adata.X.astype(np.int64)
    elif kind == "float64":
        adata.X = adata.X.astype(np.float64)
    before = adata.copy()
    grid = si.pp.perturbation_grid(adata, "cell_type", "drug")
    means, sizes = _groupby_reference(before, "cell_type", "drug")
    assert grid.n_obs == 4 * 5
    assert grid.X.dtype == np.float32
    for name, row in grid.obs.iterrows():
        k = (row["cell_type"], row["drug"])
        if k in sizes.index:
            assert row["measured"] and row["n_cells"] == sizes[k]
            np.testing.assert_allclose(grid[name].X[0], means.loc[k].to_numpy(), rtol=1e-5)
        else:
            assert not row["measured"] and row["n_cells"] == 0
            assert np.isnan(grid[name].X).all()
    # the input is untouched
    assert (adata.obs == before.obs).all().all()


def test_grid_order_and_metadata():
    adata = _cells()
    grid = si.pp.perturbation_grid(adata, "cell_type", "drug")
    perts = list(grid.obs["drug"].cat.categories)
    assert perts[0] == "control" and perts[1:] == sorted(perts[1:])
    assert list(grid.obs["cell_type"].cat.categories) == sorted(adata.obs.cell_type.unique())
    # context-major order
    assert list(grid.obs["drug"][:5]) == perts
    info = check_grid(grid)
    assert info.context_key == "cell_type" and info.control == "control"
    assert info.n_measured == int(grid.obs.measured.sum())
    assert (info.n_contexts, info.n_perturbations) == (4, 5)
    assert grid.var_names.equals(adata.var_names)


def test_grid_keeps_categorical_order():
    adata = _cells()
    adata.obs["cell_type"] = pd.Categorical(
        adata.obs.cell_type, categories=["T", "NK", "B", "Mono", "DC"]
    )
    grid = si.pp.perturbation_grid(adata, "cell_type", "drug")
    assert list(grid.obs["cell_type"].cat.categories) == ["T", "NK", "B", "Mono"]


def test_bulk_replicates_and_min_cells():
    rng = np.random.default_rng(1)
    obs = pd.DataFrame({"line": ["x", "x", "x", "y", "y"], "cpd": ["DMSO", "A", "A", "DMSO", "B"]})
    X = rng.normal(size=(5, 4)).astype(np.float32)
    adata = ad.AnnData(X=X, obs=obs)
    grid = si.pp.perturbation_grid(adata, "line", "cpd", control="DMSO")
    np.testing.assert_allclose(grid["x|A"].X[0], X[1:3].mean(0), rtol=1e-6)
    assert grid.obs.loc["x|A", "n_cells"] == 2
    assert not grid.obs.loc["x|B", "measured"]
    grid2 = si.pp.perturbation_grid(adata, "line", "cpd", control="DMSO", min_cells=2)
    assert grid2.obs.loc["x|A", "measured"] and not grid2.obs.loc["y|B", "measured"]
    assert grid2.obs.loc["y|B", "n_cells"] == 1 and np.isnan(grid2["y|B"].X).all()


def test_layer_and_no_control():
    adata = _cells()
    adata.layers["counts"] = adata.X * 2
    grid = si.pp.perturbation_grid(adata, "cell_type", "drug", layer="counts", control=None)
    ref = si.pp.perturbation_grid(adata, "cell_type", "drug", control=None)
    np.testing.assert_allclose(grid.X, ref.X * 2, rtol=1e-6)
    info = check_grid(grid)
    assert info.control is None and not info.has_control and info.layer == "counts"


def test_dose_labels():
    obs = pd.DataFrame(
        {
            "line": ["s"] * 4,
            "perturbation": ["control", "A", "A", "A+B"],
            "dose": ["0", "1.50", "3", "1.5+6"],
        }
    )
    adata = ad.AnnData(X=np.arange(12, dtype=np.float32).reshape(4, 3), obs=obs)
    grid = si.pp.perturbation_grid(adata, "line", "perturbation", dose_key="dose")
    labels = list(grid.obs["perturbation"].cat.categories)
    assert labels == ["control", "A@1.5", "A@1.5+B@6", "A@3"]
    assert si.pp.parse_perturbation("A@1.5+B@6") == [("A", 1.5), ("B", 6.0)]
    assert si.pp.parse_perturbation("X") == [("X", None)]


def test_backed_input(tmp_path):
    adata = _cells()
    adata.X = sp.csr_matrix(adata.X)
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    grid = si.pp.perturbation_grid(backed, "cell_type", "drug")
    ref = si.pp.perturbation_grid(adata, "cell_type", "drug")
    np.testing.assert_allclose(grid.X, ref.X, rtol=1e-6, equal_nan=True)
    backed.file.close()


def test_grid_roundtrip(tmp_path):
    grid = si.pp.perturbation_grid(_cells(), "cell_type", "drug")
    grid.write_h5ad(tmp_path / "g.h5ad")
    back = ad.read_h5ad(tmp_path / "g.h5ad")
    np.testing.assert_array_equal(back.X, grid.X)
    assert check_grid(back) == check_grid(grid)
    assert check_grid(back).control == "control"
    assert back.obs["measured"].dtype == bool
    si.tl.impute(back, method="context_mean")  # still a valid grid


@pytest.mark.parametrize(
    ("mutate", "kwargs", "err", "match"),
    [
        (None, {"context_key": "celltype"}, KeyError, "Did you mean 'cell_type'"),
        (None, {"control": "ctrl"}, ValueError, "Control label 'ctrl' does not occur"),
        (None, {"layer": "nope"}, KeyError, "Layer 'nope' does not exist"),
        (None, {"min_cells": 0}, ValueError, "min_cells"),
        (None, {"perturbation_key": "cell_type"}, ValueError, "different columns"),
        ("nan", {}, ValueError, "NaN or infinite"),
        ("missing_label", {}, ValueError, "missing label"),
        ("empty_label", {}, ValueError, "empty label"),
        ("dup_label", {}, ValueError, "denote the same thing"),
        ("dup_combo", {}, ValueError, "denote the same thing"),
        ("dup_var", {}, ValueError, "var_names are not unique"),
        ("empty", {}, ValueError, "empty"),
    ],
)
def test_bad_inputs(mutate, kwargs, err, match):
    adata = _cells(n=100)
    if mutate == "nan":
        adata.X[3, 2] = np.nan
    elif mutate == "missing_label":
        adata.obs.loc[adata.obs_names[0], "drug"] = None
    elif mutate == "empty_label":
        adata.obs.loc[adata.obs_names[0], "drug"] = "  "
    elif mutate == "dup_label":
        adata.obs.loc[adata.obs_names[0], "cell_type"] = "t"
    elif mutate == "dup_combo":
        adata.obs.loc[adata.obs_names[0], "drug"] = "b+a"
    elif mutate == "dup_var":
        adata.var_names = ["g0"] * adata.n_vars
    elif mutate == "empty":
        adata = adata[:0].copy()
    before = adata.copy()
    args = {"context_key": "cell_type", "perturbation_key": "drug", **kwargs}
    with pytest.raises(err, match=match):
        si.pp.perturbation_grid(
            adata, args.pop("context_key"), args.pop("perturbation_key"), **args
        )
    if adata.n_obs:
        np.testing.assert_array_equal(adata.X, before.X)
        pd.testing.assert_frame_equal(adata.obs, before.obs)


# --- defects of issue 9 (#6, #11): each test fails before the refactor --------------------


def test_float16_input_is_aggregated():
    # scipy.sparse cannot hold float16, so the matrix is dense (the sparse path is int/float)
    adata = _cells(n=200)
    ref = si.pp.perturbation_grid(adata, "cell_type", "drug")
    adata.X = adata.X.astype(np.float16)  # the counts are small integers: exact in float16
    grid = si.pp.perturbation_grid(adata, "cell_type", "drug")
    assert grid.X.dtype == np.float32
    np.testing.assert_array_equal(grid.X, ref.X)
    assert adata.X.dtype == np.float16  # the input is untouched


@pytest.mark.parametrize("label", ["d1+", "+d1", "a++b", "a+ +b"])
def test_combination_with_empty_component_is_rejected(label):
    adata = _cells(n=100)
    adata.obs.loc[adata.obs_names[0], "drug"] = label
    with pytest.raises(ValueError, match=r"has an empty component"):
        si.pp.perturbation_grid(adata, "cell_type", "drug")
    with pytest.raises(ValueError, match=r"empty component"):
        si.pp.parse_perturbation(label)
    # another separator: "+" is then part of a name
    adata.obs["drug"] = adata.obs["drug"].astype(str).str.replace("a+b", "a&b", regex=False)
    grid = si.pp.perturbation_grid(adata, "cell_type", "drug", combination_sep="&")
    assert label in set(grid.obs["drug"]) and check_grid(grid).combination_sep == "&"


def test_suggestions_never_list_nothing():
    adata = _cells(n=20)
    with pytest.raises(KeyError) as exc:
        check_layer(adata, "counts")
    assert "Available: ." not in str(exc.value) and "There are none." in str(exc.value)
    assert _suggest("x", []) == " There are none."
    assert "Did you mean 'counts'" in _suggest("count", ["counts", "data"])


def test_grid_record_is_typed_and_survives_h5ad(tmp_path):
    adata = _cells()
    grid = si.pp.perturbation_grid(adata, "cell_type", "drug", min_cells=2)
    info = check_grid(grid)
    assert isinstance(info, GridInfo)
    assert info == GridInfo.from_uns(grid.uns[Key.uns.grid])
    assert (info.min_cells, info.layer, info.dose_key) == (2, "X", None)
    grid.write_h5ad(tmp_path / "g.h5ad")
    assert check_grid(ad.read_h5ad(tmp_path / "g.h5ad")) == info
