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
    ax = si.pl.grid(grid, key="imputed_additive", save=tmp_path / "g.png")
    assert ax.images and (tmp_path / "g.png").stat().st_size > 0
    ax = si.pl.grid(grid, score="r2", method="additive")
    assert ax.images[0].get_array().count() > 0
    with pytest.raises(ValueError, match="Pass method="):
        si.pl.grid(grid, score="r2")
    with pytest.raises(KeyError, match="run scimpute.tl.impute"):
        si.pl.grid(grid, key="nope")


def test_cross_validation_plot_sorted(grid):
    fig, ax = plt.subplots()
    out = si.pl.cross_validation(grid, metric="relative_mse", ax=ax, kind="violin")
    assert out is ax
    ax = si.pl.cross_validation(grid.uns["cross_validation"]["scores"], metric="r2")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == "additive"  # best on top
    with pytest.raises(ValueError, match="metric must be"):
        si.pl.cross_validation(grid, metric="auc")


def test_prediction_plot(grid):
    ctx, pert = grid.obs.loc[grid.uns["_hidden"], ["context", "perturbation"]]
    ax = si.pl.prediction(grid, ctx, pert, key="imputed_additive")
    assert "r =" in ax.get_title()
    ax = si.pl.prediction(grid, "c0", "p1", key="imputed_additive", truth_layer="truth")
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
