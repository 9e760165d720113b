"""tl.rank_experiments: which unmeasured pair to measure next."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy.linalg import cho_factor, cho_solve

import scimpute as si
from scimpute._params import ParamError
from scimpute.tl import _rank
from scimpute.tl._data import default_targets, to_grid_data

RANK, GAIN = "acquisition_rank", "acquisition_gain"


def _grid(n_c=10, n_a=12, seed=0, **kw):
    return si.datasets.simulate_grid(n_c, n_a, 30, fraction_measured=1.0, random_state=seed, **kw)


def _labels(g):
    return g.obs["context"].astype(str).to_numpy(), g.obs["perturbation"].astype(str).to_numpy()


def _hide(g, mask):
    g.obs.loc[mask, "measured"] = False
    return g


@pytest.fixture(scope="module")
def empty_row_grid():
    """Every pair measured except context c0's row (only its control) and one isolated pair."""
    g = _grid()
    ctx, pert = _labels(g)
    _hide(g, (ctx == "c0") & (pert != "control"))
    _hide(g, (ctx == "c5") & (pert == "p3"))
    return g


def test_context_with_no_measurement_is_measured_first(empty_row_grid):
    g = empty_row_grid.copy()
    si.tl.rank_experiments(g, method=None)
    ctx, pert = _labels(g)
    first = g.obs[RANK].to_numpy() == 1
    assert ctx[first] == ["c0"]
    # the isolated pair helps only its column's c0 pair: with one greedy step (the rest by
    # gain given it) it comes last; greedy to the end, only the last c0 pair follows it
    iso = (ctx == "c5") & (pert == "p3")
    assert g.obs.loc[iso, RANK].item() == g.obs[RANK].max() - 1
    one = si.tl.rank_experiments(g, method=None, n=1, copy=True)
    assert one.obs.loc[iso, RANK].item() == one.obs[RANK].max()
    # the first c0 measurement unlocks the whole row: its gain dwarfs the isolated pair's
    assert g.obs.loc[first, GAIN].item() > 5 * one.obs.loc[iso, GAIN].item()


def test_perturbation_never_measured_is_measured_first():
    g = _grid(8, 10, seed=1)
    ctx, pert = _labels(g)
    _hide(g, pert == "p4")
    _hide(g, (ctx == "c2") & (pert == "p7"))
    si.tl.rank_experiments(g, method=None)
    assert pert[g.obs[RANK].to_numpy() == 1] == ["p4"]


def test_ranks_and_columns(empty_row_grid):
    g = empty_row_grid.copy()
    si.tl.rank_experiments(g, method=None, n=5)
    ctx, pert = _labels(g)
    meas = g.obs["measured"].to_numpy()
    ctrl = pert == "control"
    rank = g.obs[RANK].to_numpy()
    assert (rank[meas | ctrl] == -1).all()
    assert np.isnan(g.obs[GAIN].to_numpy()[meas | ctrl]).all()
    open_ = ~meas & ~ctrl
    assert sorted(rank[open_]) == list(range(1, open_.sum() + 1))
    rec = g.uns["acquisition"]
    assert rec["tool"] == "rank_experiments" and rec["n_candidates"] == open_.sum()
    top = rec["top"]
    assert list(top["rank"]) == [1, 2, 3, 4, 5]
    first = g.obs.index[rank == 1][0]
    assert top.index[0] == first and top["context"].iloc[0] == ctx[rank == 1][0]
    # the greedy gains of the chosen batch decrease within a row (diminishing returns)
    assert (np.diff(top["gain"].to_numpy()) <= 1e-9).all()
    table = si.tl.top_pairs(g, n=3)
    assert list(table["rank"]) == [1, 2, 3] and table.index[0] == first


def test_greedy_gain_matches_refitting_the_posterior(empty_row_grid):
    """The rank-one updates equal the posterior recomputed with the chosen pair measured."""
    data, _ = to_grid_data(empty_row_grid)
    t = default_targets(data)
    res = _rank.rank_pairs(data, t, n=3)
    Z, m = _rank._standardise(data)
    comps = _rank._components(data, Z, m)
    w = dict(zip(res.surrogate["components"], res.surrogate["weights"], strict=True))
    noise = res.surrogate["noise"]

    def kern(a, b):
        return sum(
            w[k] * _rank._pair_kernel(comps[k], a[:, 0], a[:, 1], b[:, 0], b[:, 1]) for k in w
        )

    def post_var(train):
        K = kern(train, train) + (noise + 1e-9) * np.eye(len(train))
        Kt = kern(t, train)
        return np.diag(kern(t, t)) - np.einsum("ij,ji->i", Kt, cho_solve(cho_factor(K), Kt.T))

    train = np.argwhere(m)
    v0 = post_var(train) + noise
    u = res.order[0]
    v1 = post_var(np.vstack([train, t[u : u + 1]])) + noise
    others = np.arange(len(t)) != u
    reference = ((v0 - v1) * others).sum()  # error weights = v: the reduction of variance
    assert res.gain[u] == pytest.approx(reference, rel=1e-4)
    # no other pair would have removed more
    for k in range(len(t)):
        vk = post_var(np.vstack([train, t[k : k + 1]])) + noise
        assert ((v0 - vk) * (np.arange(len(t)) != k)).sum() <= reference * (1 + 1e-6)


def test_errors_scale_the_gain(empty_row_grid):
    """Given errors: the gain is linear in them, and the order follows the errors' weights."""
    data, _ = to_grid_data(empty_row_grid)
    t = default_targets(data)
    err = np.linspace(1.0, 2.0, len(t))
    a = _rank.rank_pairs(data, t, error=err, n=4)
    b = _rank.rank_pairs(data, t, error=3.0 * err, n=4)
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_allclose(b.gain[a.order[:4]], 3.0 * a.gain[a.order[:4]], rtol=1e-9)


def test_key_uses_imputation_errors(empty_row_grid):
    g = empty_row_grid.copy()
    ctx, pert = _labels(g)
    err = np.where(g.obs["measured"], np.nan, 1.0)
    err[(ctx == "c0") & (pert == "p9")] = 50.0  # the c0 pairs' neighbours: p9 is worth most
    g.obs["run_error"] = err
    si.tl.rank_experiments(g, key="run")
    assert g.uns["acquisition"]["error_from"] == "obs['run_error']"
    top = g.obs[g.obs[RANK] == 1]
    assert top["context"].item() == "c0" and top["perturbation"].item() != "p9"


def test_candidates_limit_the_choice(empty_row_grid):
    g = empty_row_grid.copy()
    ctx, pert = _labels(g)
    g.obs["doable"] = (ctx == "c5") & (pert == "p3")
    si.tl.rank_experiments(g, method=None, candidates="doable")
    rank = g.obs[RANK].to_numpy()
    assert rank[g.obs["doable"].to_numpy()].tolist() == [1]
    assert (rank[(ctx == "c0") & (pert != "control")] == 0).all()
    g.obs["doable"] = g.obs["doable"].astype(int)
    with pytest.raises(ValueError, match="must be boolean"):
        si.tl.rank_experiments(g, method=None, candidates="doable", key_added="other")


def test_deterministic_for_a_seed(monkeypatch):
    g = _grid(9, 10, seed=3)
    rng = np.random.default_rng(0)
    _hide(g, (rng.random(g.n_obs) < 0.4) & (g.obs["perturbation"] != "control").to_numpy())
    monkeypatch.setattr(_rank, "MAX_FIT", 30)  # the seeded subsample of the fit is used
    runs = [si.tl.rank_experiments(g, method=None, random_state=s, copy=True) for s in (7, 7, 8)]
    np.testing.assert_array_equal(runs[0].obs[RANK], runs[1].obs[RANK])
    np.testing.assert_array_equal(runs[0].obs[GAIN], runs[1].obs[GAIN])
    assert not np.array_equal(runs[0].obs[GAIN], runs[2].obs[GAIN])


def test_survives_write_h5ad(empty_row_grid, tmp_path):
    g = empty_row_grid.copy()
    si.tl.rank_experiments(g, method=None, n=4)
    path = tmp_path / "g.h5ad"
    g.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.obs[RANK], g.obs[RANK])
    np.testing.assert_array_equal(back.obs[GAIN], g.obs[GAIN])
    pd.testing.assert_frame_equal(back.uns["acquisition"]["top"], g.uns["acquisition"]["top"])
    assert back.uns["acquisition"]["params"]["n"] == 4
    assert back.uns["acquisition"]["params"]["method"] == "None"
    # re-running with the same key replaces its own results
    si.tl.rank_experiments(back, method=None, n=2)
    assert len(back.uns["acquisition"]["top"]) == 2


def test_label_structure_links_doses_and_combinations():
    g = si.datasets.simulate_grid(
        1, 6, 40, doses=(0.1, 1.0, 10.0), fraction_measured=1.0, random_state=0
    )
    pert = g.obs["perturbation"].astype(str).to_numpy()
    _hide(g, np.char.startswith(pert.astype(str), "p0@"))  # a compound never measured
    _hide(g, pert == "p3@1")
    si.tl.rank_experiments(g, method=None)
    assert "shared_components" in list(g.uns["acquisition"]["surrogate"]["components"])
    first = pert[g.obs[RANK].to_numpy() == 1][0]
    assert first.startswith("p0@")


@pytest.mark.parametrize("n", [0, -1, 1.5, "3", True])
def test_bad_n(empty_row_grid, n):
    with pytest.raises(ParamError, match=r"rank_experiments: n must be"):
        si.tl.rank_experiments(empty_row_grid.copy(), method=None, n=n)


def test_error_paths_leave_the_grid_untouched(empty_row_grid):
    full = _grid(5, 6)
    with pytest.raises(ValueError, match="no unmeasured pair"):
        si.tl.rank_experiments(full, method=None)
    g = empty_row_grid.copy()
    before = (list(g.obs.columns), set(g.uns))
    with pytest.raises(ValueError, match="run_error"):
        si.tl.rank_experiments(g, key="run")
    with pytest.raises(TypeError, match="without a method"):
        si.tl.rank_experiments(g, method=None, ridge=1.0)
    with pytest.raises(ParamError, match="random_state"):
        si.tl.rank_experiments(g, method=None, random_state=-1)
    with pytest.raises(ValueError, match="is not a column"):
        si.tl.rank_experiments(g, method=None, candidates="nope")
    g.obs["mine_rank"] = 0
    with pytest.raises(ValueError, match="did not write"):
        si.tl.rank_experiments(g, method=None, key_added="mine")
    g.uns["other"] = {"a": 1}
    with pytest.raises(ValueError, match="not written by rank_experiments"):
        si.tl.rank_experiments(g, method=None, key_added="other")
    for bad in ("perturbation_grid", ""):
        with pytest.raises(ValueError):
            si.tl.rank_experiments(g, method=None, key_added=bad)
    assert (list(g.obs.columns), set(g.uns)) == (
        [*before[0], "mine_rank"],
        before[1] | {"other"},
    )


def test_method_run_on_a_copy(empty_row_grid):
    g = empty_row_grid.copy()
    cols = list(g.obs.columns)
    si.tl.rank_experiments(g, method="two_way_mean")
    assert set(g.obs.columns) - set(cols) == {RANK, GAIN}
    assert "two_way_mean" in g.uns["acquisition"]["error_from"]
    assert g.uns["acquisition"]["params"]["method"] == "two_way_mean"


def test_objective_grid_counts_the_pair_itself(empty_row_grid):
    g = empty_row_grid.copy()
    ctx, pert = _labels(g)
    iso = (ctx == "c5") & (pert == "p3")
    g.obs["run_error"] = np.where(g.obs["measured"], np.nan, np.where(iso, 100.0, 1.0))
    si.tl.rank_experiments(g, key="run", n=1)
    assert g.obs.loc[iso, RANK].item() > 1  # it informs no one: not first for the others
    si.tl.rank_experiments(g, key="run", n=1, objective="grid")
    assert g.obs.loc[iso, RANK].item() == 1  # its own error, removed, outweighs the rest
    with pytest.raises(ParamError, match="objective must be one of"):
        si.tl.rank_experiments(g, key="run", objective="all")


# --------------------------------------------------------------------------------------
# the command line


@pytest.fixture
def grid_file(empty_row_grid, tmp_path):
    path = tmp_path / "grid.h5ad"
    empty_row_grid.write_h5ad(path)
    return path


def test_cli_prints_the_top_pairs_and_leaves_the_input(grid_file, tmp_path, capsys):
    from scimpute.cli import main

    before = grid_file.read_bytes()
    assert main(["rank", str(grid_file), "-n", "3", "--method", "none"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith("top 3 of 13 unmeasured pairs")
    assert lines[1].split() == ["context", "perturbation", "rank", "gain"]
    assert len(lines) == 5 and lines[2].split()[0] == "c0"
    assert grid_file.read_bytes() == before
    csv, out_h5 = tmp_path / "top.csv", tmp_path / "ranked.h5ad"
    assert (
        main(["rank", str(grid_file), "--method", "none", "--csv", str(csv), "-o", str(out_h5)])
        == 0
    )
    table = pd.read_csv(csv)
    assert list(table.columns) == ["context", "perturbation", "rank", "gain"] and len(table) == 10
    back = ad.read_h5ad(out_h5)
    assert back.obs[RANK].max() == 13 and grid_file.read_bytes() == before


def test_cli_errors(grid_file, tmp_path, capsys):
    from scimpute.cli import main

    before = grid_file.read_bytes()
    assert main(["rank", str(grid_file), "--method", "none", "-o", str(grid_file)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["rank", str(grid_file), "--key", "nope"]) == 2
    assert capsys.readouterr().err.startswith("scimpute rank: error: rank_experiments:")
    assert main(["rank", str(grid_file), "--method", "none", "--param", "x=1"]) == 2
    assert main(["rank", str(grid_file), "--method", "nope"]) == 2
    assert main(["rank", str(tmp_path / "missing.h5ad")]) == 2
    assert main(["rank", str(grid_file), "-n", "0"]) == 2
    assert grid_file.read_bytes() == before
    assert main(["rank", str(grid_file), "--method", "none", "-o", str(grid_file), "--force"]) == 0
    assert RANK in ad.read_h5ad(grid_file).obs.columns
