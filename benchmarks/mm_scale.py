"""Scale of ``scimpute.mm.integrate``: 20,000 cells, 2 modalities (2,000 + 200 features).

Protocol (issue 11, section 5): ``scimpute.datasets.simulate_multimodal`` (seeded) draws
20,000 cells measured in both modalities (2,000 and 200 features); a random 10% of the cells
(2,000) are held out: their pairing is not given to ``integrate`` (they are trained on as
unpaired cells), and FOSCTTM is computed on them afterwards. ``integrate`` runs with its
defaults (backbone ``"auto"``: the linear candidate is fitted on the anchors and scored on
the validation pairs; the networks (guided, autoencoder) are trained in full only when the
floor or the screen of ``scimpute.mm._screen`` leaves them a chance, and the validated
candidate is kept) and a progress bar; a second call switches the floor off
(``network_floor=0``) so that the screen (each network trained briefly on 2,000 cells
against the linear backbone refitted on the same anchors) decides. Reported: wall time of the call, peak
Python/NumPy heap during the call (``tracemalloc``; JAX's buffers are not traced) and the
peak resident set size of the process (``resource.getrusage``: everything, the simulation
included), the CPU time of the call (user + system, all threads: on a busy machine the
wall time overstates the cost, the CPU time does not), and FOSCTTM (0 perfect, 0.5 random) of the held-out cells. Target: under
5 minutes on 2 CPU cores, memory bounded (no ``n x n`` matrix: FOSCTTM and the validation
scores are computed in row blocks).

Run:  PYTHONPATH=src JAX_PLATFORMS=cpu python benchmarks/mm_scale.py [--n-cells 20000]
Writes benchmarks/results/mm_scale.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

import scimpute as si

OUT = Path(__file__).parent / "results"
HELD_OUT = 0.1


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_once(m, held: np.ndarray, seed: int, **params) -> dict:
    """One ``integrate`` call on ``m`` (a copy), timed; FOSCTTM of the held-out cells."""
    m = m.copy()
    load0 = os.getloadavg()[0]
    tracemalloc.start()
    t0, c0 = time.perf_counter(), cpu_seconds()
    si.mm.integrate(m, pairing=~held, random_state=seed, progress=True, **params)
    fit_s, cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
    _, heap_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    a, b = list(m.mod)
    za = m[a].obsm["X_scimpute"][m[a].obs_names.get_indexer(m.obs_names[held])]
    zb = m[b].obsm["X_scimpute"][m[b].obs_names.get_indexer(m.obs_names[held])]
    rec = m.uns["X_scimpute"]
    cand = rec["candidates"]
    return {
        "params": {k: float(v) for k, v in params.items()},
        "integrate_seconds": fit_s,
        "integrate_cpu_seconds": cpu_s,
        "heap_peak_mb": heap_peak / 2**20,
        "peak_rss_mb": peak_rss_mb(),
        "foscttm_held_out": si.metrics.foscttm(za, zb),
        "backbone": str(rec["backbone"]),
        "epochs_run": int(rec["fit"]["n_epochs_run"]),
        "network_screen": {k: v for k, v in rec["network_screen"].items()},
        "candidates": [
            {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in cand[cand["name"] != "linear-cv"].to_dict(orient="records")
        ],
        "load_at_start": load0,
        "load_at_end": os.getloadavg()[0],
    }


#: the calls: defaults, and the floor switched off (so that the screen decides)
CALLS = {"defaults": {}, "network_floor=0 (the screen decides)": {"network_floor": 0.0}}


def _table(name: str, r: dict) -> list[str]:
    s = r["network_screen"]
    return [
        f"### {name}",
        "",
        f"Load average {r['load_at_start']:.1f} at the start, {r['load_at_end']:.1f} at the end.",
        "",
        "| quantity | value |",
        "| --- | --- |",
        f"| integrate wall time (s) | {r['integrate_seconds']:.1f} |",
        f"| integrate CPU time, all threads (s) | {r['integrate_cpu_seconds']:.1f} |",
        f"| peak heap during integrate (MB, tracemalloc) | {r['heap_peak_mb']:.0f} |",
        f"| peak RSS of the process so far (MB) | {r['peak_rss_mb']:.0f} |",
        f"| FOSCTTM, held-out cells | {r['foscttm_held_out']:.4f} |",
        f"| backbone kept | {r['backbone']} |",
        f"| networks trained in full decided by | {s['rule']} |",
        "",
        f"Why: {s['reason']}.",
        "",
        "Candidates (validation FOSCTTM on the validation pairs, fit time; NaN: not trained):",
        "",
        *(
            f"- {c['name']}: {c['score']:.4f} ± {c['se']:.4f}, {c['fit_seconds']:.1f} s"
            f"{' (kept)' if c['chosen'] else ''}; {c['settings']}"
            for c in r["candidates"]
        ),
        "",
    ]


def main(n_cells: int, seed: int, out: Path, name: str, calls: list[str]) -> dict:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    m = si.datasets.simulate_multimodal(n_cells, (2000, 200), random_state=seed)
    sim_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    held = np.zeros(m.n_obs, dtype=bool)
    held[rng.permutation(m.n_obs)[: int(HELD_OUT * m.n_obs)]] = True
    rss_before = peak_rss_mb()
    runs = {c: run_once(m, held, seed, **CALLS[c]) for c in calls}
    a, b = list(m.mod)
    res = {
        "n_cells": int(m.n_obs),
        "n_features": [int(m[a].n_vars), int(m[b].n_vars)],
        "n_held_out": int(held.sum()),
        "seed": seed,
        "simulate_seconds": sim_s,
        "peak_rss_mb_before": rss_before,
        **runs[calls[0]],  # the first call (the defaults) at the top level
        "runs": runs,
        "load_at_start": load0,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1, default=float))
    lines = [
        "# scimpute.mm at scale (`benchmarks/mm_scale.py`)",
        "",
        __doc__.split("Run:")[0].split("\n\n", 1)[1].strip(),
        "",
        f"Grid: {res['n_cells']:,} cells x ({res['n_features'][0]:,} + "
        f"{res['n_features'][1]:,}) features, {res['n_held_out']:,} held out; "
        f"{res['cpus']} CPU cores (shared machine: the CPU time is the cost, the wall time "
        f"depends on the other jobs); simulation {sim_s:.1f} s, peak RSS before the calls "
        f"{rss_before:.0f} MB.",
        "",
    ]
    for c in calls:
        lines += _table(c, runs[c])
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cells", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--name", default="mm_scale")
    ap.add_argument("--calls", nargs="+", default=list(CALLS), choices=list(CALLS))
    args = ap.parse_args()
    main(args.n_cells, args.seed, args.out, args.name, args.calls)
