"""Render every ``scimpute.pl`` figure on small simulated data for the docs' gallery page.

Writes ``docs/_static/gallery/<function>.png`` (one per public plot function; a few seconds
of training in all). Run from the repository root::

    python benchmarks/gallery.py [--out docs/_static/gallery]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

import scimpute as si

DPI = 90


def grid_data():
    """A simulated grid with hidden pairs, one unmeasured perturbation (-> fallbacks)."""
    g = si.datasets.simulate_grid(10, 14, 60, fraction_measured=0.5, random_state=0)
    rng = np.random.default_rng(0)
    pert = g.obs["perturbation"].astype(str)
    g.obs.loc[(pert == "p13").to_numpy(), "measured"] = False  # never measured: fallback
    measured = np.flatnonzero(g.obs["measured"].to_numpy() & (pert != "control").to_numpy())
    hidden = g.obs_names[rng.choice(measured, 4, replace=False)]
    g.obs.loc[hidden, "measured"] = False
    si.tl.impute(g, method="additive")
    si.tl.impute(g, method="synthetic_interventions")
    si.tl.cross_validate(
        g,
        methods=["context_mean", "perturbation_mean", "additive"],
        holdout="random",
        n_folds=5,
        progress=False,
    )
    return g, hidden


def main(out: Path) -> None:
    """Write one PNG per plot function into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    g, hidden = grid_data()
    ctx, pert = g.obs.loc[hidden[0], ["context", "perturbation"]]
    figures = {}
    figures["grid"] = si.pl.grid(g, key="imputed_additive", show=False)
    figures["grid_score"] = si.pl.grid(g, score="r2", method="additive", show=False)
    figures["cross_validation"] = si.pl.cross_validation(g, metric="r2", clip=(-1, 1), show=False)
    figures["prediction"] = si.pl.prediction(g, ctx, pert, key="imputed_additive", show=False)
    key = "imputed_synthetic_interventions"
    row = g.obs[g.obs[f"{key}_source"] == "synthetic_interventions"].iloc[0]
    figures["donors"] = si.pl.donors(g, row["context"], row["perturbation"], show=False)

    m = si.datasets.simulate_multimodal(400, (60, 60), random_state=0)
    si.mm.integrate(m, pairing=0.5, max_epochs=20, learning_rate=1e-3, progress=False)
    si.mm.invariant_features(m, n_bootstrap=20)
    figures["latent"] = si.pl.latent(m, color=["modality", "label"], show=False)
    figures["invariance"] = si.pl.invariance(m, n_top=10, show=False)
    figures["invariance_latent"] = si.pl.invariance(m, kind="latent", show=False)

    cells = si.datasets.simulate_cells(
        n_contexts=4, n_perturbations=2, n_genes=30, n_cells=60, random_state=0
    )
    si.tl.fit_transfer(cells, width=32, depth=2, latent_dim=8, max_epochs=40, progress=False)
    si.tl.signature_alignment(cells)
    figures["signature_alignment"] = si.pl.signature_alignment(cells, show=False)

    for name, obj in figures.items():
        fig = obj if isinstance(obj, matplotlib.figure.FigureBase) else np.ravel(obj)[0].figure
        fig.savefig(out / f"{name}.png", dpi=DPI, bbox_inches="tight")
        plt.close(fig)
        print(f"{out / name}.png  {(out / f'{name}.png').stat().st_size // 1024} KB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/_static/gallery"))
    main(parser.parse_args().out)
