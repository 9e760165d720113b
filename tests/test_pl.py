import matplotlib.pyplot as plt
import pytest

import scimpute as si


@pytest.fixture(scope="module")
def grid():
    g = si.datasets.simulate_grid(6, 8, 20, random_state=0)
    name = g.obs_names[g.obs["measured"] & (g.obs["perturbation"] != "control")][0]
    g.obs.loc[name, "measured"] = False
    si.tl.impute(g, method="additive")
    si.tl.cross_validate(g, methods=["context_mean", "additive"], progress=False)
    g.uns["_hidden"] = name
    return g


def test_grid_plot(grid, tmp_path):
    ax = si.pl.grid(grid, key="imputed_additive", save=tmp_path / "g.png", show=False)
    assert ax.images and (tmp_path / "g.png").stat().st_size > 0
    ax = si.pl.grid(grid, score="r2", method="additive", show=False)
    assert ax.images[0].get_array().count() > 0
    with pytest.raises(ValueError, match="Pass method="):
        si.pl.grid(grid, score="r2")
    with pytest.raises(KeyError, match="run scimpute.tl.impute"):
        si.pl.grid(grid, key="nope")


def test_cross_validation_plot_sorted(grid):
    fig, ax = plt.subplots()
    out = si.pl.cross_validation(grid, metric="relative_mse", ax=ax, kind="violin", show=False)
    assert out is ax
    ax = si.pl.cross_validation(grid.uns["cross_validation"]["scores"], metric="r2", show=False)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1].startswith("additive")  # best on top
    with pytest.raises(ValueError, match="metric must be"):
        si.pl.cross_validation(grid, metric="auc")


def test_prediction_plot(grid):
    ctx, pert = grid.obs.loc[grid.uns["_hidden"], ["context", "perturbation"]]
    ax = si.pl.prediction(grid, ctx, pert, key="imputed_additive", show=False)
    assert "Pearson r =" in ax.get_title()
    ax = si.pl.prediction(grid, "c0", "p1", key="imputed_additive", truth_layer="truth", show=False)
    assert len(ax.collections) == 1
    unmeasured = grid.obs[~grid.obs["measured"] & (grid.obs["n_cells"] == 0)].iloc[0]
    with pytest.raises(ValueError, match="no measured profile"):
        si.pl.prediction(
            grid, unmeasured["context"], unmeasured["perturbation"], key="imputed_additive"
        )
    with pytest.raises(KeyError, match="no pair"):
        si.pl.prediction(grid, "zz", "p1", key="imputed_additive")


def test_show_returns_none(grid, monkeypatch):
    monkeypatch.setattr(plt, "show", lambda: None)
    assert si.pl.grid(grid, show=True) is None


def test_context_key_is_followed_from_pp_through_tl_to_a_plot(tmp_path):
    """One typed record: the keys given to pp are the ones tl uses and pl labels the axes with."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    from scimpute._records import GridInfo
    from scimpute._validate import check_grid

    rng = np.random.default_rng(0)
    lines, cpds = ["L1", "L2", "L3"], ["DMSO", "A", "B", "C"]
    obs = pd.DataFrame(
        [(c, p) for c in lines for p in cpds if (c, p) != ("L3", "C")],
        columns=["cell_line", "compound"],
    )
    obs.index = [f"s{i}" for i in range(len(obs))]
    cells = ad.AnnData(rng.normal(size=(len(obs), 5)).astype(np.float32), obs=obs)
    g = si.pp.perturbation_grid(cells, "cell_line", "compound", control="DMSO")
    info = check_grid(g)
    assert info == GridInfo(
        context_key="cell_line",
        perturbation_key="compound",
        control="DMSO",
        n_contexts=3,
        n_perturbations=4,
        n_measured=11,
    )
    si.tl.impute(g, method="additive", key_added="imp")
    g.write_h5ad(tmp_path / "g.h5ad")
    back = ad.read_h5ad(tmp_path / "g.h5ad")
    assert check_grid(back) == info
    ax = si.pl.grid(back, key="imp", show=False)
    assert ax.get_ylabel() == info.context_key and ax.get_xlabel() == info.perturbation_key
    assert [t.get_text() for t in ax.get_yticklabels()] == lines
    ax = si.pl.prediction(back, "L1", "A", key="imp", truth_layer=None, show=False)
    assert ax.get_title().startswith("L1 | A")
    assert "predicted by additive" in ax.get_title()


def test_plot_options_use_the_house_message(grid):
    with pytest.raises(ValueError, match=r"^pl.cross_validation: metric must be one of 'r2'"):
        si.pl.cross_validation(grid, metric="auc")
    with pytest.raises(ValueError, match=r"^pl.cross_validation: kind must be one of 'box'"):
        si.pl.cross_validation(grid, kind="bar")
    with pytest.raises(KeyError, match="Did you mean 'additive'"):
        si.pl.grid(grid, score="r2", method="additiv")
