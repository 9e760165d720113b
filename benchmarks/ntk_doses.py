"""Held-out doses on LINCS LJP005 (A375, 59 compounds x 6 doses): NTK vs log-dose interpolation.

The grid has one context (A375) and one intervention per (compound, dose), labelled
``"compound@dose"``. DMSO is the control: the Level-4 z-scores are relative to the plate's
population, and the DMSO wells still carry a vehicle/plate signature (mean |z| 0.44 against
1.2 for treated wells), so effects are taken relative to DMSO, as for the other datasets.

Protocols (score: Pearson correlation of predicted and measured effects over 978 genes):

* ``leave_one_out``: each measured (compound, dose) hidden in turn, predicted from the other
  doses of the same compound and all other compounds;
* ``dose_level``: one dose level hidden for all compounds at once (6 folds), a harder,
  grouped variant.

    SCIMPUTE_DATA_DIR=/work/shared/data PYTHONPATH=src python benchmarks/ntk_doses.py
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _ntk_common import environment, single_threaded_blas, summary, to_markdown, wins, write

single_threaded_blas()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import scimpute as si  # noqa: E402
from scimpute.metrics import score_pairs  # noqa: E402
from scimpute.pp import parse_perturbation  # noqa: E402
from scimpute.tl._data import to_grid_data  # noqa: E402
from scimpute.tl._run import resolve_method, run_method  # noqa: E402

METHODS = {
    "ntk_components": {"method": "ntk", "prior": "components"},
    "ntk_components_reg_auto": {"method": "ntk", "prior": "components", "reg": "auto"},
    "ntk_components_linear_reg_auto": {
        "method": "ntk", "prior": "components", "reg": "auto", "dose_transform": "linear",
    },
    "ntk_onehot_reg_auto": {"method": "ntk", "prior": "onehot", "reg": "auto"},
    "dose_interpolation": "dose_interpolation",
    "context_mean": "context_mean",
}  # fmt: skip


def dose_level_folds(grid_data) -> pd.DataFrame:
    """Hide one dose level of every compound at once; score like cross_validate."""
    labels = list(grid_data.perturbations)
    dose = np.array(
        [np.nan if k == grid_data.control else parse_perturbation(lab)[0][1]
         for k, lab in enumerate(labels)]
    )  # fmt: skip
    rows, regs = [], []
    base = grid_data.Y[0, grid_data.control][None].astype(float)
    for level in np.unique(dose[np.isfinite(dose)]):
        idx = np.nonzero((dose == level) & grid_data.measured[0])[0]
        mask = grid_data.measured.copy()
        mask[0, idx] = False
        fold = grid_data.with_measured(mask)
        t = np.column_stack([np.zeros_like(idx), idx])
        truth = grid_data.Y[0, idx].astype(float)
        for lab, spec in METHODS.items():
            spec = {"method": spec} if isinstance(spec, str) else dict(spec)
            name = spec.pop("method")
            m = resolve_method(name, spec, fold)
            res = run_method(m, fold, t, random_state=0, params=spec)
            if lab == "ntk_components_reg_auto":
                regs.append(float(res.info["reg_selected"]))
            sc = score_pairs(truth, res.prediction, baseline=np.repeat(base, len(idx), 0))
            rows.append(pd.DataFrame({
                "method": lab, "context": "A375",
                "perturbation": np.asarray(labels, dtype=object)[idx], "dose": level,
                "source": res.source, **{k: sc[k] for k in
                                         ("r2", "r2_effect", "pearson_effect", "cosine_effect")},
            }))  # fmt: skip
    return pd.concat(rows, ignore_index=True), regs


def main() -> None:
    adata = si.datasets.lincs_doses()
    grid = si.pp.perturbation_grid(
        adata, "cell_id", "pert_iname", control="DMSO", dose_key="pert_dose_um"
    )
    data, _ = to_grid_data(grid)
    t0 = time.perf_counter()
    df = si.tl.cross_validate(grid, methods=METHODS, holdout="leave_one_out", progress=False)
    t_loo = time.perf_counter() - t0
    df["dose"] = [parse_perturbation(p)[0][1] for p in df["perturbation"]]
    order = list(METHODS)
    tab = summary(df, order)
    by_dose = (
        df.pivot_table(index="dose", columns="method", values="pearson_effect", aggfunc="median")
        [order]
    )  # fmt: skip
    by_dose.index = [f"{d:g} uM" for d in by_dose.index]
    by_dose.index.name = "dose"
    w_interp = wins(df, "ntk_components_reg_auto", "dose_interpolation")
    w_interp0 = wins(df, "ntk_components", "dose_interpolation")
    # how reproducible are neighbouring doses of one compound? (noise level of the data)
    labels = list(data.perturbations)
    eff = data.Y[0].astype(float) - data.Y[0, data.control].astype(float)
    series: dict[str, list[tuple[float, int]]] = {}
    for k, lab in enumerate(labels):
        if k != data.control and data.measured[0, k]:
            name, d = parse_perturbation(lab)[0]
            series.setdefault(name, []).append((d, k))
    neigh = []
    for pts in series.values():
        pts.sort()
        for (_, k1), (_, k2) in itertools.pairwise(pts):
            neigh.append(si.metrics.pearson(eff[k1], eff[k2])[0])
    neigh_median = float(np.median(neigh))
    t0 = time.perf_counter()
    dl, regs = dose_level_folds(data)
    t_dl = time.perf_counter() - t0
    tab_dl = summary(dl, order)
    md = [
        "# NTK on held-out doses (LINCS LJP005, A375, 59 compounds x 6 doses)",
        "",
        f"Grid: {grid.n_obs} (compound, dose) labels + DMSO control x {grid.n_vars} genes, "
        f"{int(data.treated_mask().sum())} measured treated pairs. Effects relative to DMSO. "
        "Score: Pearson of effects.",
        "",
        "## Leave one (compound, dose) out",
        "",
        to_markdown(tab),
        "",
        f"ntk_components_reg_auto beats dose_interpolation on {w_interp[0]} of {w_interp[1]} "
        f"held-out doses (ntk_components with the default small ridge: {w_interp0[0]} of "
        f"{w_interp0[1]}).",
        "",
        "Median Pearson of effects by held-out dose (the lowest and highest doses are "
        "extrapolations for interpolation, which then copies the nearest dose):",
        "",
        to_markdown(by_dose),
        "",
        "## One dose level hidden for every compound at once (6 folds)",
        "",
        to_markdown(tab_dl),
        "",
        "Level-4 z-scores of single wells are noisy: the median Pearson correlation between "
        f"the effects of neighbouring doses of one compound is {neigh_median:.3f} "
        f"({len(neigh)} neighbouring pairs), so every method scores low. The ridge chosen by "
        '`reg="auto"` (exact leave-one-out over the training pairs; in the six dose-level '
        f"folds it picked reg = {', '.join(f'{r:g}' for r in regs)}, against a kernel "
        "diagonal of 2) matters here, unlike on Korkut and "
        "CMap.",
        "",
        f"Runtime: leave-one-out (all methods, {df.fold.nunique()} folds) {t_loo:.1f} s; "
        f"dose-level folds {t_dl:.1f} s.",
        "",
        "Reproduce: `SCIMPUTE_DATA_DIR=/work/shared/data PYTHONPATH=src python "
        "benchmarks/ntk_doses.py`",
        "",
    ]
    write(
        "ntk_doses",
        "\n".join(md),
        {
            "leave_one_out": tab,
            "by_dose": by_dose,
            "dose_level": tab_dl,
            "wins_ntk_reg_auto_vs_interpolation": w_interp,
            "wins_ntk_vs_interpolation": w_interp0,
            "neighbouring_dose_pearson_median": neigh_median,
            "reg_auto_dose_level_folds": regs,
            "sources": {m: df[df.method == m]["source"].value_counts().to_dict() for m in order},
            "methods": {k: v if isinstance(v, str) else dict(v) for k, v in METHODS.items()},
            "elapsed_s": {"leave_one_out": t_loo, "dose_level": t_dl},
            "environment": environment(),
        },
    )


if __name__ == "__main__":
    main()
