"""Property-based tests of the grid builder against a plain pandas group-by reference.

Random labels (unicode, numbers as strings, integer columns, categoricals with unused
levels), shapes, dtypes (float16/32/64, int, bool), dense or sparse ``X``, which pairs have
cells, ``min_cells`` and the control: the grid must equal the group-by means, hold one row per
(context, perturbation) pair, mark a pair measured iff it has ``min_cells`` cells, and keep its
:class:`~scimpute._records.GridInfo` through an h5ad round trip.
"""

import tempfile
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scimpute as si
from scimpute._records import GridInfo
from scimpute._validate import check_grid

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = ("float16", "float32", "float64", "int32", "int64", "bool")

_label_chars = st.characters(
    categories=("L", "N"), include_characters=" _-|.éß中λ", exclude_characters="+@"
)
_label = st.one_of(
    st.text(_label_chars, min_size=1, max_size=4).filter(lambda s: s.strip() != ""),
    st.sampled_from(["1", "2", "10", "01", "1.5", "-3"]),  # numbers as strings
)


def _labels(min_size: int, max_size: int):
    # labels that differ only in case or surrounding blanks denote the same thing (rejected)
    return st.lists(
        _label, min_size=min_size, max_size=max_size, unique_by=lambda s: s.strip().lower()
    )


@st.composite
def cell_data(draw):
    contexts = draw(_labels(1, 4))
    perts = draw(_labels(1, 5))
    n = draw(st.integers(1, 40))
    p = draw(st.integers(1, 4))
    ci = np.asarray(draw(st.lists(st.integers(0, len(contexts) - 1), min_size=n, max_size=n)))
    pi = np.asarray(draw(st.lists(st.integers(0, len(perts) - 1), min_size=n, max_size=n)))
    values = np.asarray(
        draw(st.lists(st.integers(0, 6), min_size=n * p, max_size=n * p)), dtype=np.float64
    ).reshape(n, p)
    dtype = draw(st.sampled_from(DTYPES))
    x = (values > 2) if dtype == "bool" else values.astype(dtype)  # small ints: exact in float16
    layout = draw(st.sampled_from(["dense", "csr", "csc"]))
    if layout != "dense" and dtype != "float16":  # scipy.sparse has no float16
        x = (sp.csr_matrix if layout == "csr" else sp.csc_matrix)(x)
    ctx_values = np.asarray(contexts, dtype=object)[ci]
    pert_values = np.asarray(perts, dtype=object)[pi]
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n)])
    ctx_kind = draw(st.sampled_from(["str", "categorical_unused", "int"]))
    if ctx_kind == "int":
        obs["ctx"] = ci * 7 + 1  # integer labels, read as their strings
    elif ctx_kind == "categorical_unused":
        order = draw(st.permutations([*contexts, "never used"]))
        obs["ctx"] = pd.Categorical(ctx_values, categories=order)
    else:
        obs["ctx"] = ctx_values
    obs["pert"] = pert_values
    present = sorted(set(pert_values))
    control = draw(st.one_of(st.none(), st.sampled_from(present)))
    min_cells = draw(st.integers(1, 3))
    return ad.AnnData(X=x, obs=obs), control, min_cells


def _reference(adata):
    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    df = pd.DataFrame(x.astype(np.float64))
    keys = [adata.obs["ctx"].astype(str).to_numpy(), adata.obs["pert"].astype(str).to_numpy()]
    grouped = df.groupby(keys)
    return grouped.mean(), grouped.size()


def _expected_order(column: pd.Series) -> list[str]:
    present = set(column.astype(str))
    if isinstance(column.dtype, pd.CategoricalDtype):
        return [str(c) for c in column.cat.categories if str(c) in present]
    return sorted(present)


@SETTINGS
@given(cell_data())
def test_grid_equals_groupby_mean(case):
    adata, control, min_cells = case
    before = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # obs names made unique when labels contain "|"
        grid = si.pp.perturbation_grid(adata, "ctx", "pert", control=control, min_cells=min_cells)
    means, sizes = _reference(before)

    contexts = _expected_order(before.obs["ctx"])
    perts = _expected_order(before.obs["pert"])
    if control is not None:
        perts = [control] + [q for q in perts if q != control]
    # one row per (context, perturbation) pair, context-major, in the documented order
    assert grid.n_obs == len(contexts) * len(perts)
    pairs = list(zip(grid.obs["ctx"].astype(str), grid.obs["pert"].astype(str), strict=True))
    assert pairs == [(c, q) for c in contexts for q in perts]
    assert list(grid.obs["ctx"].cat.categories) == contexts
    assert list(grid.obs["pert"].cat.categories) == perts
    assert grid.X.dtype == np.float32 and grid.n_vars == adata.n_vars

    counts = np.array([sizes.get(k, 0) for k in pairs])
    np.testing.assert_array_equal(grid.obs["n_cells"].to_numpy(), counts)
    measured = grid.obs["measured"].to_numpy()
    np.testing.assert_array_equal(measured, counts >= min_cells)  # measured iff enough cells
    assert np.isnan(grid.X[~measured]).all()
    if measured.any():
        ref = np.vstack(
            [means.loc[k].to_numpy() for k, m in zip(pairs, measured, strict=True) if m]
        )
        np.testing.assert_allclose(grid.X[measured], ref, rtol=1e-5, atol=1e-6)

    info = check_grid(grid)
    assert info == GridInfo(
        context_key="ctx",
        perturbation_key="pert",
        control=control,
        min_cells=min_cells,
        n_contexts=len(contexts),
        n_perturbations=len(perts),
        n_measured=int(measured.sum()),
    )
    # the input is untouched
    x0 = before.X.toarray() if sp.issparse(before.X) else before.X
    x1 = adata.X.toarray() if sp.issparse(adata.X) else adata.X
    np.testing.assert_array_equal(x0, x1)
    assert adata.X.dtype == before.X.dtype
    pd.testing.assert_frame_equal(adata.obs, before.obs)


@settings(
    max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(cell_data())
def test_h5ad_round_trip_keeps_the_grid_and_its_record(case):
    adata, control, min_cells = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = si.pp.perturbation_grid(adata, "ctx", "pert", control=control, min_cells=min_cells)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "grid.h5ad"
            grid.write_h5ad(path)
            back = ad.read_h5ad(path)
    assert check_grid(back) == check_grid(grid)
    np.testing.assert_array_equal(back.X, grid.X)
    np.testing.assert_array_equal(back.obs["measured"].to_numpy(), grid.obs["measured"])
    assert back.obs["measured"].dtype == bool
    for col in ("ctx", "pert"):
        assert list(back.obs[col].astype(str)) == list(grid.obs[col].astype(str))


@SETTINGS
@given(
    label=st.sampled_from(["d1+", "+d1", "a++b", "a+ "]),
    extra=_labels(1, 3),
)
def test_empty_combination_components_are_rejected(label, extra):
    obs = pd.DataFrame({"ctx": ["c"] * (len(extra) + 1), "pert": [*extra, label]})
    obs.index = [f"r{i}" for i in range(len(obs))]
    adata = ad.AnnData(np.ones((len(obs), 2), dtype=np.float32), obs=obs)
    with pytest.raises(ValueError, match="empty component"):
        si.pp.perturbation_grid(adata, "ctx", "pert", control=None)
