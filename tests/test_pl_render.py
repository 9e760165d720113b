"""Every public plot function rendered to PNG, with the text a reader sees checked.

The renderers are keyed by the names in ``scimpute.pl.__all__``: a new plot function without
a renderer here fails ``test_every_plot_function_renders_to_png``.
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure, FigureBase
from matplotlib.text import Text

import scimpute as si
from scimpute._params import ParamError
from scimpute.metrics import METRICS
from scimpute.pl._utils import METRIC_LABELS, fmt_num, robust_limits

SI = "synthetic_interventions"
SI_KEY = f"imputed_{SI}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------
# small seeded data
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid():
    """6 x 8 grid: one hidden pair, perturbation p7 never measured (so fallbacks), CV table."""
    g = si.datasets.simulate_grid(6, 8, 20, random_state=0)
    pert = g.obs["perturbation"].astype(str).to_numpy()
    g.obs.loc[pert == "p7", "measured"] = False
    name = g.obs_names[g.obs["measured"].to_numpy() & (pert != "control")][0]
    g.obs.loc[name, "measured"] = False
    si.tl.impute(g, method="additive")
    si.tl.impute(g, method=SI)
    si.tl.cross_validate(
        g, methods=["context_mean", "additive"], holdout="random", n_folds=3, progress=False
    )
    g.uns["_hidden"] = name
    return g


@pytest.fixture(scope="module")
def mdata():
    # same shapes as tests/mm: the compiled training epoch is shared within a session
    m = si.datasets.simulate_multimodal(400, (60, 60), random_state=0)
    si.mm.integrate(m, pairing=0.5, max_epochs=3, learning_rate=1e-3, progress=False)
    si.mm.invariant_features(m, n_bootstrap=20)
    return m


@pytest.fixture(scope="module")
def transfer_cells(fast):
    cells = si.datasets.simulate_cells(
        n_contexts=4, n_perturbations=2, n_genes=30, n_cells=60, random_state=0
    )
    si.tl.fit_transfer(cells, progress=False, **{**fast, "max_epochs": 2})
    si.tl.signature_alignment(cells)
    return cells


@pytest.fixture(scope="module")
def trust_grid(grid):
    """The grid with the fields of an impute run with intervals (issue 10's schema)."""
    g = grid.copy()
    rng = np.random.default_rng(0)
    imputed = (g.obs[f"{SI_KEY}_source"] != "measured").to_numpy()
    for name in ("trust", "error"):
        g.obs[f"{SI_KEY}_{name}"] = np.where(imputed, rng.random(g.n_obs), np.nan)
    half = np.where(imputed, rng.random(g.n_obs) + 0.5, np.nan)[:, None]
    g.layers[f"{SI_KEY}_lower"] = g.layers[SI_KEY] - half
    g.layers[f"{SI_KEY}_upper"] = g.layers[SI_KEY] + half
    levels = np.array([0.5, 0.8, 0.9, 0.95])
    g.uns[SI_KEY]["calibration"] = {"nominal": levels, "empirical": levels - 0.02, "n": 30}
    t = rng.random(40)
    g.uns[SI_KEY]["trust_cv"] = {"trust": t, "error": 1 - t, "beats_baseline": t > 0.4}
    return g


def _si_pair(g):
    row = g.obs[g.obs[f"{SI_KEY}_source"] == SI].iloc[0]
    return row["context"], row["perturbation"]


def _hidden_pair(g):
    return tuple(g.obs.loc[g.uns["_hidden"], ["context", "perturbation"]])


RENDERERS = {
    "cross_validation": lambda f, **kw: si.pl.cross_validation(f("grid"), clip=(-1, 1), **kw),
    "grid": lambda f, **kw: si.pl.grid(f("grid"), key="imputed_additive", **kw),
    "prediction": lambda f, **kw: si.pl.prediction(
        f("grid"), *_hidden_pair(f("grid")), key="imputed_additive", **kw
    ),
    "donors": lambda f, **kw: si.pl.donors(f("grid"), *_si_pair(f("grid")), key=SI_KEY, **kw),
    "latent": lambda f, **kw: si.pl.latent(f("mdata"), color=["modality", "label"], **kw),
    "invariance": lambda f, **kw: si.pl.invariance(f("mdata"), n_top=5, **kw),
    "signature_alignment": lambda f, **kw: si.pl.signature_alignment(f("transfer_cells"), **kw),
    "calibration": lambda f, **kw: si.pl.calibration(f("trust_grid"), SI_KEY, **kw),
    "trust": lambda f, **kw: si.pl.trust(f("trust_grid"), SI_KEY, **kw),
}
#: functions drawing one Axes (they take ``ax=``); the others take ``fig=``.
SINGLE_PANEL = {
    "calibration",
    "cross_validation",
    "grid",
    "prediction",
    "signature_alignment",
    "trust",
}


def _figure(out) -> Figure:
    obj = out if isinstance(out, FigureBase | Axes) else out[0]
    fig = obj if isinstance(obj, FigureBase) else obj.figure
    while not isinstance(fig, Figure):
        fig = fig.figure
    return fig


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def _legend_labels(ax: Axes) -> list[str]:
    leg = ax.get_legend()
    return [] if leg is None else [t.get_text() for t in leg.get_texts()]


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.fixture
def fixtures(request):
    return request.getfixturevalue


@pytest.fixture
def shows(monkeypatch):
    """Count plt.show calls (nothing is displayed)."""
    calls = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: calls.append(1))
    return calls


# --------------------------------------------------------------------------------------
# one behaviour for every function
# --------------------------------------------------------------------------------------


def test_every_public_function_has_a_renderer():
    assert set(si.pl.__all__) == set(RENDERERS), "add a renderer for each new plot function"


@pytest.mark.parametrize("name", sorted(si.pl.__all__))
def test_every_plot_function_renders_to_png(name, fixtures, tmp_path, shows):
    path = tmp_path / f"{name}.png"
    out = RENDERERS[name](fixtures, show=False, save=path)
    assert out is not None and not shows
    head = path.read_bytes()[:8]
    assert head == PNG_MAGIC and path.stat().st_size > 5_000
    texts = _texts(_figure(out))
    assert not any("-0.000" in t for t in texts), texts
    assert not any(t.strip() in {"r2", "R2"} for t in texts)


@pytest.mark.parametrize("name", sorted(si.pl.__all__))
def test_show_none_follows_scanpy_autoshow(name, fixtures, shows):
    import scanpy as sc

    before = sc.settings.autoshow
    try:
        sc.settings.autoshow = True
        assert RENDERERS[name](fixtures) is None and len(shows) == 1
        sc.settings.autoshow = False
        out = RENDERERS[name](fixtures)
        assert out is not None and len(shows) == 1
        assert RENDERERS[name](fixtures, show=True) is None and len(shows) == 2
    finally:
        sc.settings.autoshow = before


@pytest.mark.parametrize("name", sorted(si.pl.__all__))
def test_draws_into_the_given_axes_or_figure_without_showing_it(name, fixtures, shows):
    import scanpy as sc

    before = sc.settings.autoshow
    try:
        sc.settings.autoshow = True  # a figure passed in is the caller's to finish
        if name in SINGLE_PANEL:
            _, ax = plt.subplots()
            assert RENDERERS[name](fixtures, ax=ax) is ax
        else:
            fig = plt.figure()
            out = RENDERERS[name](fixtures, fig=fig)
            assert _figure(out) is fig and len(fig.axes) >= 2
    finally:
        sc.settings.autoshow = before
    assert not shows


@pytest.mark.parametrize("name", sorted(si.pl.__all__))
def test_output_options_use_the_house_message(name, fixtures, tmp_path):
    owner = f"pl.{name}"
    with pytest.raises(ParamError, match=rf"^{owner}: show must be one of True, False, None"):
        RENDERERS[name](fixtures, show="yes")
    with pytest.raises(ParamError, match=rf"^{owner}: save must be a path in an existing"):
        RENDERERS[name](fixtures, show=False, save=tmp_path / "missing" / "x.png")


def test_count_options_use_the_house_message(grid, mdata):
    with pytest.raises(ParamError, match=r"^pl.prediction: annotate must be an integer >= 0"):
        si.pl.prediction(grid, *_hidden_pair(grid), key="imputed_additive", annotate=-1)
    with pytest.raises(ParamError, match=r"^pl.donors: n_top must be an integer >= 1, got 0"):
        si.pl.donors(grid, *_si_pair(grid), key=SI_KEY, n_top=0)
    with pytest.raises(ParamError, match=r"^pl.invariance: n_top must be an integer >= 1"):
        si.pl.invariance(mdata, n_top=2.5)
    with pytest.raises(ParamError, match=r"^pl.latent: connect must be an integer >= 0"):
        si.pl.latent(mdata, connect=True)


def test_save_format_follows_the_extension(grid, tmp_path):
    si.pl.grid(grid, show=False, save=tmp_path / "g.pdf")
    si.pl.grid(grid, show=False, save=str(tmp_path / "g.svg"))
    assert (tmp_path / "g.pdf").read_bytes()[:4] == b"%PDF"
    assert b"<svg" in (tmp_path / "g.svg").read_bytes()[:500]


# --------------------------------------------------------------------------------------
# text a biologist reads
# --------------------------------------------------------------------------------------


def test_every_metric_has_a_readable_label():
    assert set(METRICS) <= set(METRIC_LABELS)
    assert METRIC_LABELS["r2"] == "R²"


def test_fmt_num_never_writes_negative_zero():
    assert fmt_num(-0.0001) == "0.000"
    assert fmt_num(-0.0) == "0.000"
    assert fmt_num(-0.5, 2) == "-0.50"
    assert fmt_num(float("nan")) == "n/a"


def test_cross_validation_names_metric_holdout_and_n(grid):
    ax = si.pl.cross_validation(grid, metric="r2", show=False)
    assert "R²" in ax.get_xlabel() and "R²" in ax.get_title()
    assert "random hold-out" in ax.get_title() and "3 folds" in ax.get_title()
    table = grid.uns["cross_validation"]["scores"]
    n = table.groupby("method")["r2"].count()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(labels) == sorted(f"{m} (n={k})" for m, k in n.items())
    ax = si.pl.cross_validation(grid, metric="relative_mse", show=False)
    assert "lower is better" in ax.get_xlabel()


def test_cross_validation_marks_clipped_values_instead_of_drawing_them_as_data():
    table = pd.DataFrame(
        {
            "method": ["a"] * 6 + ["b"] * 4,
            "r2": [-5.0, -2.0, 0.5, 0.6, 0.7, 0.8, 0.1, 0.2, 0.3, 1.7],
        }
    )
    for col in METRICS[1:]:
        table[col] = 0.0
    ax = si.pl.cross_validation(table, metric="r2", clip=(-1, 1), show=False)
    assert _legend_labels(ax) == ["2 values < -1 clipped", "1 values > 1 clipped"]
    # no ordinary box-plot flier sits at the clip limits
    fliers = [ln for ln in ax.lines if ln.get_marker() not in ("None", None, "")]
    flier_x = np.concatenate([np.asarray(ln.get_xdata(), float) for ln in fliers] or [[]])
    assert not np.isin(flier_x, [-1.0, 1.0]).any()
    assert ax.get_xlim()[0] < -1 < 1 < ax.get_xlim()[1]
    # nothing clipped: no legend
    ax = si.pl.cross_validation(table[table.r2.between(-1, 1)], clip=(-1, 1), show=False)
    assert ax.get_legend() is None
    with pytest.raises(ParamError, match=r"^pl.cross_validation: clip must be \(low, high\)"):
        si.pl.cross_validation(table, clip=(1, -1), show=False)


def test_grid_legend_separates_method_fallbacks_and_lists_only_present_states(grid):
    ax = si.pl.grid(grid, key="imputed_additive", show=False)
    src = grid.obs["imputed_additive_source"].astype(str)
    measured = grid.obs["measured"].to_numpy()
    hidden = ~measured & (grid.obs["n_cells"].to_numpy() > 0)
    fallbacks = set(src[~measured]) - {"additive", "measured", "control_mean"}
    assert fallbacks, "the fixture needs a fallback (p7 is never measured)"
    expected = {"measured", "predicted by additive", "hidden (measured, held out)"}
    expected |= {f"fallback: {f}" for f in fallbacks}
    labels = _legend_labels(ax)
    assert set(labels) == expected and len(labels) == len(expected)
    # hidden pairs are hatched on top of the colour of what filled them
    assert sum(p.get_hatch() == "////" for p in ax.patches) == hidden.sum()
    # without key: measured / hidden / not measured only
    labels = _legend_labels(si.pl.grid(grid, show=False))
    assert set(labels) == {"measured", "hidden (measured, held out)", "not measured"}


def test_grid_fallback_colours_differ_from_the_method(grid):
    ax = si.pl.grid(grid, key="imputed_additive", show=False)
    leg = ax.get_legend()
    handles = zip(leg.get_texts(), leg.legend_handles, strict=True)
    colours = {t.get_text(): h.get_facecolor() for t, h in handles}
    method = colours["predicted by additive"]
    assert all(c != method for lab, c in colours.items() if lab.startswith("fallback"))


def test_grid_score_uses_a_robust_colour_scale(grid):
    ax = si.pl.grid(grid, score="r2", method="additive", show=False)
    im = ax.images[0]
    vals = np.asarray(im.get_array().compressed(), float)
    lo, hi = np.percentile(vals, [2, 98])
    np.testing.assert_allclose(im.get_clim(), (lo, hi))
    assert robust_limits(np.array([1.0, 1.0])) == (0.5, 1.5)
    assert "R²" in ax.get_title() and "additive" in ax.get_title()
    assert "random hold-out" in ax.get_title()
    ax = si.pl.grid(grid, score="r2", method="additive", vmin=-1, vmax=1, show=False)
    assert ax.images[0].get_clim() == (-1.0, 1.0)


def test_prediction_names_method_and_effect_and_ticks_do_not_overlap(grid):
    ax = si.pl.prediction(grid, *_hidden_pair(grid), key="imputed_additive", show=False)
    assert "additive" in ax.get_title() and "Pearson r" in ax.get_title()
    assert ax.get_xlabel() == "measured effect (vs. control)"
    assert ax.get_ylabel() == "predicted effect (vs. control)"
    fig = ax.figure
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        boxes = [t.get_window_extent(r) for t in labels if t.get_text()]
        assert len(boxes) <= 7
        assert not any(_overlap(a, b) for a, b in itertools.combinations(boxes, 2))


def test_donors_titles_do_not_overlap_and_legend_names_training_units(grid, tmp_path):
    axs = si.pl.donors(grid, *_si_pair(grid), show=False, save=tmp_path / "d.png")
    assert len(axs) == 2
    fig = axs[0].figure
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    t0, t1 = (a.title.get_window_extent(r) for a in axs)
    assert not _overlap(t0, t1)
    assert not _overlap(axs[0].get_window_extent(r), axs[1].get_window_extent(r))
    leg = axs[1].get_legend()
    assert leg is not None and leg.get_title().get_text().startswith("training units")
    assert "R²" in axs[1].get_title() and "R2" not in axs[1].get_title()
    assert axs[0].get_ylabel() in {"donor perturbation", "donor context"}
    assert not any("-0.000" in t for t in _texts(fig))


def test_signature_alignment_and_mm_titles(transfer_cells, mdata):
    ax = si.pl.signature_alignment(transfer_cells, show=False)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0].startswith("gene space") and "(n=" in ticks[0]
    fig = si.pl.invariance(mdata, n_top=5, show=False)
    assert all("invariant" in a.get_title() for a in fig.axes)
    ax = si.pl.latent(mdata, show=False)
    assert "latent space" in ax.get_title()
