"""Which pair to measure next, validated retrospectively: ranked vs random vs largest error.

For each seed, half of the measured non-control pairs of a shared grid are hidden (their
profiles are known, so every acquisition can be scored). Two thirds of the hidden pairs form
the *pool* a strategy may acquire; the other third is a fixed *test* set no strategy may
acquire (the stand-in for the pairs that will never be measured). Each strategy acquires the
pool in batches; after every batch the grid is re-imputed and scored:

* ``ranked``: :func:`scimpute.tl.rank_experiments`' order (expected error removed from the
  other unmeasured pairs, greedy within the batch), recomputed after every batch;
* ``ranked_grid``: the same with ``objective="grid"`` (the pair's own error counts too);
* ``largest_error``: the pairs with the largest predicted error first (the same surrogate's
  predictive variance, or the re-imputation's own predicted error where it writes one);
* ``random``: a seeded random order.

Scores after each batch: mean ``1 - R2`` (SSE / SST over features) of the still-hidden pairs
(pool left + test) and of the fixed test set alone. Target (issue 10): ``ranked`` reaches
``random``'s error at the end of the budget with at most 70% of its measurements.

    SCIMPUTE_DATA_DIR=/work/shared/data PYTHONPATH=src python benchmarks/acquisition.py \
        [--grid cmap|korkut|lincs] [--method two_way_mean] [--seeds 5]

Writes ``benchmarks/results/acquisition_<grid>.{md,json}``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from _common import write_results

import scimpute as si
from scimpute.tl._data import to_grid_data
from scimpute.tl._rank import rank_pairs
from scimpute.tl._run import prepare_method, run_method

#: ``ranked``: objective "others" (the default); ``ranked_grid``: objective "grid".
STRATEGIES = ("ranked", "ranked_grid", "largest_error", "random")


def load(name: str):
    if name == "cmap":
        a = si.datasets.cmap()
        return si.pp.perturbation_grid(a, "cell_id", "pert_id", control="DMSO")
    if name == "korkut":
        a = si.datasets.korkut()
        a.obs["context"] = "SKMEL-133"  # one cell line: a constant context column
        return si.pp.perturbation_grid(
            a, "context", "perturbation", control="control", dose_key="dose"
        )
    a = si.datasets.lincs_doses()
    return si.pp.perturbation_grid(
        a, "cell_id", "pert_iname", control="DMSO", dose_key="pert_dose_um"
    )


def pair_error(data, pairs: np.ndarray, method, params, seed: int, sd) -> dict[str, np.ndarray]:
    """Errors of each pair after imputing it with ``method`` from ``data.measured``.

    ``mse_z``: mean squared error with every feature scaled by its standard deviation over
    the grid's measured pairs (so that no high-intensity gene dominates); ``one_minus_r2``:
    SSE / SST over the features of the raw profile.
    """
    res = run_method(method, data, pairs, random_state=seed, params=params)
    y = data.Y[pairs[:, 0], pairs[:, 1]].astype(np.float64)
    resid = y - res.prediction
    sst = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    return {
        "mse_z": ((resid / sd) ** 2).mean(axis=1),
        "one_minus_r2": (resid**2).sum(axis=1) / sst,
    }


def run_seed(data, method, params, seed: int, batch: int, n_batches: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    cand = np.argwhere(data.treated_mask())
    hidden = cand[rng.permutation(cand.shape[0])[: cand.shape[0] // 2]]
    n_pool = (2 * hidden.shape[0]) // 3
    pool, test = hidden[:n_pool], hidden[n_pool:]
    sd = data.Y[data.measured].astype(np.float64).std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    rows = []
    for strategy in STRATEGIES:
        measured = data.measured.copy()
        measured[hidden[:, 0], hidden[:, 1]] = False
        open_pool = np.ones(n_pool, dtype=bool)
        order_rng = np.random.default_rng(seed + 1)
        for b in range(n_batches + 1):
            d = data.with_measured(measured)
            still = np.concatenate([pool[open_pool], test])
            err = pair_error(d, still, method, params, seed, sd)
            n_open = int(open_pool.sum())
            row = {"seed": seed, "strategy": strategy, "acquired": b * batch}
            for name, e in err.items():
                row[f"{name}_still_hidden"] = float(e.mean())
                row[f"{name}_test"] = float(e[n_open:].mean())
            rows.append(row)
            if b == n_batches:
                break
            idx = np.nonzero(open_pool)[0]
            if strategy == "random":
                chosen = order_rng.choice(idx, size=min(batch, idx.size), replace=False)
            else:
                # the pairs whose error counts: those the benchmark can score (the still
                # hidden ones); the pool's open pairs come first and are the candidates
                targets = np.concatenate([pool[idx], test])
                pos = np.arange(idx.size)
                pick = np.zeros(targets.shape[0], dtype=bool)
                pick[pos] = True
                objective = "grid" if strategy == "ranked_grid" else "others"
                res = rank_pairs(
                    d, targets, candidates=pick, n=batch, objective=objective, random_state=seed
                )
                if strategy.startswith("ranked"):
                    best = res.order[:batch]
                else:
                    best = pos[np.argsort(-res.error[pos], kind="stable")[:batch]]
                inv = {p: i for i, p in zip(idx, pos, strict=True)}
                chosen = np.array([inv[p] for p in best])
            open_pool[chosen] = False
            measured[pool[chosen, 0], pool[chosen, 1]] = True
    return rows


def measurements_to_reach(curve: pd.Series, level: float) -> float:
    """Acquisitions from which on ``curve`` (error by acquisitions) stays at or below ``level``."""
    above = np.nonzero(curve.to_numpy() > level + 1e-12)[0]
    if above.size == 0:
        return float(curve.index[0])
    if above[-1] == len(curve) - 1:
        return float("nan")
    return float(curve.index[above[-1] + 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="cmap", choices=("cmap", "korkut", "lincs"))
    ap.add_argument("--method", default="two_way_mean")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--batches", type=int, default=6)
    args = ap.parse_args()
    grid = load(args.grid)
    data, _ = to_grid_data(grid)
    method, params = prepare_method(args.method)
    t0 = time.perf_counter()
    rows = []
    for s in range(args.seeds):
        rows += run_seed(data, method, params, s, args.batch, args.batches)
        print(f"seed {s} done ({time.perf_counter() - t0:.0f} s)")
    table = pd.DataFrame(rows)
    curves = {}
    for metric in [c for c in table.columns if c.endswith(("_still_hidden", "_test"))]:
        c = table.pivot_table(index="acquired", columns="strategy", values=metric, aggfunc="mean")
        curves[metric] = c[list(STRATEGIES)] / c[list(STRATEGIES)].iloc[0]  # 1 at the start
        print(metric)
        print(curves[metric].round(4).to_string())
    summary = []
    budget = args.batch * args.batches
    at70 = args.batch * int(0.7 * args.batches)  # the last batch within 70% of the budget
    for metric, c in curves.items():
        final = float(c["random"].iloc[-1])
        per_seed = table.pivot_table(index=["seed", "acquired"], columns="strategy", values=metric)
        start = per_seed.xs(0, level="acquired")
        rel = per_seed / start.reindex(per_seed.index.get_level_values("seed")).to_numpy()
        random_final = rel.xs(budget, level="acquired")["random"]
        for s in STRATEGIES:
            n = measurements_to_reach(c[s], final)
            summary.append(
                {
                    "metric": metric,
                    "strategy": s,
                    "final_error": float(c[s].iloc[-1]),
                    "measurements_to_random_final": n,
                    "share_of_random_budget": n / budget,
                    f"seeds_reaching_it_by_{at70}": float(
                        (rel.xs(at70, level="acquired")[s] <= random_final).mean()
                    ),
                }
            )
    summary = pd.DataFrame(summary)
    summary.index = summary["metric"] + ": " + summary["strategy"]
    summary = summary.drop(columns=["metric", "strategy"])
    print(summary.round(3).to_string())
    elapsed = time.perf_counter() - t0
    write_results(
        f"acquisition_{args.grid}",
        f"Which pair to measure next: acquisition curves on {args.grid}",
        {
            "Summary": summary,
            **{f"Curve: {m} (relative to the start)": c for m, c in curves.items()},
        },
        {
            "command": f"python benchmarks/acquisition.py --grid {args.grid} --method "
            f"{args.method} --seeds {args.seeds} --batch {args.batch} --batches {args.batches}",
            "seconds": round(elapsed, 1),
            "grid_shape": list(data.measured.shape),
        },
    )


if __name__ == "__main__":
    main()
