"""Synthetic interventions on a dense grid (few contexts, many perturbations, many donors).

The LINCS / Perturb-seq shape of issue 12: a seeded simulator grid of 6 contexts x 1,000
perturbations x 600 features, 90% of pairs measured, with a strong per-context component
(``context_strength=3``). Every target has hundreds of donors. Imputes every unmeasured pair
with the default SI (preset ``validated``) and times, in the same run, the plain per-pair
numpy reference (:func:`scimpute.methods.synthetic_interventions._reference.reference_si`)
with the published preset (``--reference-pairs`` sampled targets) and with the same preset
as the default (``--validated-reference-pairs``; its predictions are compared with the
default's):

    PYTHONPATH=src python benchmarks/si_dense.py                      # full size
    PYTHONPATH=src python benchmarks/si_dense.py --perturbations 300 --batched --name si_dense_300

``--batched`` also times the all-JAX padded path (every group through the bucketed kernels,
``HOST_MIN_DONORS`` set to infinity), the engine before the per-group LAPACK path. Writes
``benchmarks/results/<name>.{md,json}``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

import scimpute as si
from scimpute.methods.baselines import context_mean
from scimpute.methods.synthetic_interventions import SIParams, synthetic_interventions
from scimpute.methods.synthetic_interventions import _engine as engine
from scimpute.methods.synthetic_interventions._reference import reference_si

sys.path.insert(0, str(Path(__file__).parent))
from _common import grid_arguments, simulated_si_grid

RESULTS = Path(__file__).parent / "results"


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _reference(data, targets, spec, folds):
    return _timed(
        lambda: reference_si(
            data.Y, data.measured, targets, spec, control=data.control, feature_folds=folds
        )
    )


def main() -> None:
    ap = grid_arguments(
        __doc__, "si_dense", contexts=6, perturbations=1000, features=600, fraction=0.9,
        reference_pairs=50,
    )  # fmt: skip
    ap.add_argument("--context-strength", type=float, default=3.0)
    ap.add_argument("--validated-reference-pairs", type=int, default=3)
    ap.add_argument("--batched", action="store_true")
    args = ap.parse_args()

    data, targets, truth_of = simulated_si_grid(
        args.contexts,
        args.perturbations,
        args.features,
        args.fraction,
        args.seed,
        context_strength=args.context_strength,
    )
    n = len(targets)
    truth = truth_of(np.arange(n))
    rng = np.random.default_rng(args.seed)
    sample = rng.choice(n, size=min(args.reference_pairs, n), replace=False)
    vsample = sample[: args.validated_reference_pairs]
    folds = np.random.default_rng(args.seed).permutation(np.arange(data.n_features) % 5)
    print(f"grid {data.Y.shape}, {n} targets", flush=True)

    spec = SIParams()
    res, wall = _timed(lambda: synthetic_interventions(data, targets, spec, random_state=args.seed))
    print(f"default SI: {wall:.1f}s", flush=True)
    row: dict = {
        "n_targets": n,
        "n_groups": int(res.info["n_groups"]),
        "wall_s": wall,
        "per_pair_ms": 1e3 * wall / n,
        "median_donors": float(np.nanmedian(res.per_target["n_donors"])),
        "fraction_synthetic_interventions": float(np.mean(res.source == "synthetic_interventions")),
        "median_r2_vs_truth": float(np.median(si.metrics.r2(truth, res.prediction))),
        "context_mean_median_r2_vs_truth": float(
            np.median(si.metrics.r2(truth, context_mean(data, targets).prediction))
        ),
    }
    if args.batched:
        old = engine.HOST_MIN_DONORS
        engine.HOST_MIN_DONORS = np.iinfo(np.int64).max
        try:
            resb, wb = _timed(
                lambda: synthetic_interventions(data, targets, spec, random_state=args.seed)
            )
        finally:
            engine.HOST_MIN_DONORS = old
        print(f"all-JAX padded path: {wb:.1f}s", flush=True)
        row["batched_all_jax_wall_s"] = wb
        row["speedup_vs_all_jax"] = wb / wall
        row["relative_diff_vs_all_jax"] = float(
            np.abs(resb.prediction - res.prediction).max() / np.abs(res.prediction).max()
        )

    pub = SIParams(preset="published")
    _, rw = _reference(data, targets[sample], pub, folds)
    row["reference_published_pairs"] = len(sample)
    row["reference_published_per_pair_ms"] = 1e3 * rw / len(sample)
    row["speedup_vs_published_reference"] = (
        row["reference_published_per_pair_ms"] / row["per_pair_ms"]
    )
    print(f"published reference: {rw:.1f}s for {len(sample)} pairs", flush=True)
    if vsample.size:
        ref, vw = _reference(data, targets[vsample], spec, folds)
        diff = np.abs(res.prediction[vsample] - ref["prediction"])
        row["reference_validated_pairs"] = int(vsample.size)
        row["reference_validated_per_pair_ms"] = 1e3 * vw / vsample.size
        row["speedup_vs_validated_reference"] = (
            row["reference_validated_per_pair_ms"] / row["per_pair_ms"]
        )
        row["relative_diff_vs_validated_reference"] = float(
            diff.max() / np.abs(ref["prediction"]).max()
        )
        row["sources_agree"] = bool(np.array_equal(res.source[vsample], ref["source"]))
        print(f"validated reference: {vw:.1f}s for {vsample.size} pairs", flush=True)
    print(json.dumps(row, indent=1), flush=True)

    shape = (
        f"{args.contexts} x {args.perturbations} x {args.features}, {args.fraction:.0%} "
        f"measured, context_strength {args.context_strength:g}"
    )
    meta = {
        "grid": {**vars(args), "rank": 10, "noise": 0.5},
        "host_min_donors": engine.HOST_MIN_DONORS,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
    }
    md = [
        f"# Synthetic interventions on a dense grid ({shape})",
        "",
        "| quantity | value |",
        "|---|---|",
        *(
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in row.items()
        ),
        "",
        "`wall_s` imputes every unmeasured pair with the default SI (preset validated, first "
        "call, compilation included). The references are the plain per-pair numpy "
        "implementation timed in the same run on random targets: `published` (last level of "
        "the greedy path, minimum-norm least squares: one SVD per pair) and `validated` (the "
        "default's own estimator, every level x ridge x held-out fold refitted per pair); "
        "`relative_diff_vs_validated_reference` compares the default's predictions with the "
        "latter. `batched_all_jax_wall_s` (with `--batched`) is the engine before issue 12: "
        "every group padded to powers of two in the bucketed JAX kernels.",
        "",
        "```",
        json.dumps(meta, indent=2, default=str),
        "```",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(md))
    (RESULTS / f"{args.name}.json").write_text(
        json.dumps({"results": row, "meta": meta}, indent=2, default=str)
    )


if __name__ == "__main__":
    main()
