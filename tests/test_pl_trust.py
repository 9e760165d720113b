"""pl.calibration, pl.trust and pl.grid(color=...): what they draw and how they fail."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D

import scimpute as si
from scimpute._params import ParamError

KEY = "imp"
SI = "additive"  # p7 is measured nowhere: additive falls back to context_mean there


def add_interval_fields(g, key: str, seed: int = 0) -> None:
    """The fields of an impute run with intervals (issue 10's schema), with known values."""
    rng = np.random.default_rng(seed)
    src = g.obs[f"{key}_source"].astype(str).to_numpy()
    imputed = src != "measured"
    g.obs[f"{key}_trust"] = np.where(imputed, rng.random(g.n_obs), np.nan)
    g.obs[f"{key}_error"] = np.where(imputed, rng.random(g.n_obs), np.nan)
    half = np.where(imputed, np.arange(g.n_obs) % 3 + 1.0, np.nan)[:, None]  # widths 2, 4, 6
    g.layers[f"{key}_lower"] = g.layers[key] - half
    g.layers[f"{key}_upper"] = g.layers[key] + half
    g.uns[key]["calibration"] = {
        "nominal": np.array([0.5, 0.8, 0.9, 0.95]),
        "empirical": np.array([0.45, 0.78, 0.9, 0.97]),
        "n": 40,
    }
    trust = np.linspace(0.0, 1.0, 50)
    g.uns[key]["trust_cv"] = {
        "trust": trust,
        "error": 1.0 - trust,
        "beats_baseline": trust > 0.5,  # trust separates perfectly: AUROC 1
    }


@pytest.fixture(scope="module")
def grid():
    g = si.datasets.simulate_grid(8, 10, 20, random_state=0)
    pert = g.obs["perturbation"].astype(str).to_numpy()
    g.obs.loc[pert == "p7", "measured"] = False  # a column no donor predicts: fallbacks
    si.tl.impute(g, method=SI, key_added=KEY)
    add_interval_fields(g, KEY)
    si.tl.impute(g, method="two_way_mean", key_added="plain")
    return g


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_calibration_draws_each_run_against_the_diagonal(grid):
    g = grid.copy()
    g.uns["other"] = {**g.uns[KEY], "method": "ntk"}
    ax = si.pl.calibration(g, [KEY, "other"], show=False)
    lines = [ln for ln in ax.get_lines() if ln.get_label() != "calibrated"]
    assert len(lines) == 2
    np.testing.assert_allclose(lines[0].get_ydata(), [0.45, 0.78, 0.9, 0.97])
    labels = _legend(ax)
    assert labels[0] == "calibrated"
    assert labels[1].startswith(SI) and "n = 40 pairs" in labels[1]
    assert labels[2].startswith("ntk (other)")
    plt.close("all")


def test_trust_scatter_and_auroc(grid):
    ax = si.pl.trust(grid, KEY, show=False)
    assert "AUROC for beating the baseline: 1.00" in ax.get_title()
    pts = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in pts) == 50
    labels = _legend(ax)
    assert labels[0] == "beat the best baseline (25)" and labels[1] == "did not beat it (25)"
    n_imputed = int((grid.obs[f"{KEY}_source"] != "measured").sum())
    assert labels[2] == f"imputed pairs ({n_imputed})"
    plt.close("all")


def test_grid_colour_by_trust_marks_fallbacks(grid):
    ax = si.pl.grid(grid, key=KEY, color="trust", show=False)
    src = grid.obs[f"{KEY}_source"].astype(str)
    n_fallback = int((~src.isin(["measured", SI])).sum())
    n_model = int((src == SI).sum())
    assert n_fallback > 0 and n_model > 0
    assert f"({n_model} predicted by the model, {n_fallback} by a fallback)" in ax.get_title()
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots) == 1 and len(dots[0].get_offsets()) == n_fallback
    labels = _legend(ax)
    assert labels[0] == "measured" and any(lab.endswith("context_mean") for lab in labels)
    im = ax.get_images()[-1]
    assert im.get_clim() == (0.0, 1.0)
    # the pixel of a model pair holds its trust
    row = grid.obs[src == SI].iloc[0]
    c = list(grid.obs["context"].cat.categories).index(row["context"])
    a = list(grid.obs["perturbation"].cat.categories).index(row["perturbation"])
    assert im.get_array()[c, a] == pytest.approx(row[f"{KEY}_trust"])
    plt.close("all")


def test_grid_interval_width_is_in_feature_sd(grid):
    ax = si.pl.grid(grid, key=KEY, color="interval", show=False)
    meas = grid.obs["measured"].to_numpy()
    sd = grid.X[meas].std(axis=0)
    imputed = (grid.obs[f"{KEY}_source"] != "measured").to_numpy()
    width = 2.0 * (np.arange(grid.n_obs) % 3 + 1.0)
    expect = (width[:, None] / sd).mean(axis=1)[imputed]
    values = ax.get_images()[-1].get_array().compressed()
    np.testing.assert_allclose(np.sort(values), np.sort(expect), rtol=1e-5)
    plt.close("all")


def test_grid_state_legend_lists_only_present_sources_and_auto_choices(grid):
    g = grid.copy()
    ax = si.pl.grid(g, key=KEY, show=False)
    labels = _legend(ax)
    assert f"predicted by {SI}" in labels and "fallback: context_mean" in labels
    assert not any("control row" in lab for lab in labels)  # no control row was filled
    # an auto run: the chosen candidates are model predictions, others fallbacks
    g.uns[KEY]["method"] = "auto"
    g.uns[KEY]["auto"] = {"chosen": np.array([SI, "context_mean"], dtype=object)}
    labels = _legend(si.pl.grid(g, key=KEY, show=False))
    assert f"predicted by {SI}" in labels and "predicted by context_mean" in labels
    assert not any(lab.startswith("fallback") for lab in labels)
    # a stack: "stack" and its positive weights are the model; the rest falls back
    g.uns[KEY]["auto"] = {"rule": "stack", "weights": {SI: 0.7, "context_mean": 0.0}}
    labels = _legend(si.pl.grid(g, key=KEY, show=False))
    assert f"predicted by {SI}" in labels and "fallback: context_mean" in labels
    g.uns[KEY]["auto"] = {"rule": "per_pair", "candidates": np.array([SI, "context_mean"])}
    labels = _legend(si.pl.grid(g, key=KEY, show=False))
    assert "predicted by context_mean" in labels
    plt.close("all")


def test_missing_fields_raise_clear_errors(grid):
    with pytest.raises(KeyError, match=r"has no .{1,2}calibration.{1,2} entry.*interval=0.9"):
        si.pl.calibration(grid, "plain")
    with pytest.raises(KeyError, match=r"grid.uns\[.{1,2}nope.{1,2}\] not found"):
        si.pl.calibration(grid, "nope")
    with pytest.raises(KeyError, match=r"has no .{1,2}trust_cv.{1,2} entry"):
        si.pl.trust(grid, "plain")
    with pytest.raises(
        KeyError, match=r"color=.{1,2}trust.{1,2} needs grid.obs\[.{1,2}plain_trust"
    ):
        si.pl.grid(grid, key="plain", color="trust")
    with pytest.raises(KeyError, match=r"color=.{1,2}interval.{1,2} needs grid.layers"):
        si.pl.grid(grid, key="plain", color="interval")
    with pytest.raises(ValueError, match="needs key="):
        si.pl.grid(grid, color="trust")
    with pytest.raises(ParamError, match=r"^pl.grid: color must be one of"):
        si.pl.grid(grid, key=KEY, color="width")
    with pytest.raises(ValueError, match="keys is empty"):
        si.pl.calibration(grid, [])
    g = grid.copy()
    g.uns[KEY]["calibration"] = {"nominal": [0.5, 0.9], "empirical": [0.5]}
    with pytest.raises(ValueError, match="as many empirical coverages"):
        si.pl.calibration(g, KEY)
    plt.close("all")


def test_renders_with_one_class_only(grid):
    g = grid.copy()
    g.uns[KEY]["trust_cv"] = {"trust": [0.2, 0.4], "error": [0.1, 0.3], "beats": [1, 1]}
    with pytest.raises(KeyError, match="beats_baseline"):
        si.pl.trust(g, KEY)
    g.uns[KEY]["trust_cv"] = {"trust": [0.2, 0.4], "error": [0.1, 0.3], "beats_baseline": [1, 1]}
    ax = si.pl.trust(g, KEY, show=False)
    assert "AUROC for beating the baseline: n/a" in ax.get_title()
    assert isinstance(ax.get_lines()[0], Line2D)
    plt.close("all")
