"""Scale benchmark of synthetic interventions on the simulator (CMap compound-grid density).

Imputes every unmeasured pair of a simulated 70 contexts x 5,000 perturbations x 978
features grid with 10% of pairs measured, and times the plain per-pair numpy reference
(:func:`scimpute.methods.synthetic_interventions._reference.reference_si`) on a random sample of the same targets
in the same run:

    PYTHONPATH=src python benchmarks/si_scale.py            # full size (a few minutes)
    PYTHONPATH=src python benchmarks/si_scale.py --perturbations 500 --name si_scale_small

Reports wall time (compilation included), peak memory (``tracemalloc`` peak of host
allocations during the call and the process's peak resident set size, which includes the
simulated grid) and the per-pair speed-up; checks that the batched predictions of the
sampled targets equal the reference's. Writes ``benchmarks/results/<name>.{md,json}``.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

import scimpute as si
from scimpute.methods.baselines import context_mean
from scimpute.methods.synthetic_interventions import SIParams, synthetic_interventions
from scimpute.methods.synthetic_interventions._reference import reference_si
from scimpute.tl._data import default_targets

sys.path.insert(0, str(Path(__file__).parent))
from _common import grid_arguments, simulated_si_grid

RESULTS = Path(__file__).parent / "results"
CONFIGS = {
    "default": {},  # preset="validated"
    "published": {"preset": "published"},
    "two_units": {"min_train_units": 2},
}


class RSSSampler:
    """Peak resident memory of this process while a block runs (sampled every 20 ms).

    Unlike tracemalloc it also sees XLA's buffers.
    """

    def __enter__(self):
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


_REFERENCE_CACHE: dict = {}
_REFERENCE_TARGETS: dict = {}  # the first full config's reference targets


def _reference_run(data, targets, spec, seed):
    """The per-pair reference on ``targets`` (cached per spec: configs may share it)."""
    key = (repr(spec), targets.tobytes())
    if key not in _REFERENCE_CACHE:
        folds = np.random.default_rng(seed).permutation(np.arange(data.n_features) % 5)
        t1 = time.perf_counter()
        ref = reference_si(
            data.Y, data.measured, targets, spec, control=data.control, feature_folds=folds
        )
        _REFERENCE_CACHE[key] = (ref, time.perf_counter() - t1)
    return _REFERENCE_CACHE[key]


def _n_groups(data, targets, spec) -> int:
    """Groups (shared factorisations) of ``targets`` under ``spec``, from the mask alone."""
    from scimpute.methods.synthetic_interventions import _engine as E
    from scimpute.methods.synthetic_interventions._direction import _usable_levels

    prm = spec.resolved()
    last = prm.min_train_units if prm.select == "max_donors" else None
    M = np.ascontiguousarray(data.measured)
    paths = _usable_levels(E.greedy_paths(M, targets, prm.max_donors, last), len(targets), prm)
    return int(np.unique(paths.cand_key).size)


def run_config(
    data,
    targets,
    truth_sample,
    sample,
    params,
    n_ref,
    seed,
    warm=False,
    ref_params=None,
    subset_contexts=None,
    primal=False,
    sink=None,
):
    """One configuration, timed, with the per-pair reference on ``n_ref`` sampled targets.

    ``ref_params``: the reference's parameters when they differ from ``params`` (then the
    speed-up is against that estimator and no prediction difference is reported).
    ``subset_contexts``: impute only the targets in these contexts (a documented subset;
    the full call's time is extrapolated by groups, reported separately). ``primal``: also
    time the call with every host group solved in the primal (``_engine.DUAL = False``).
    ``sink``: a folder; the predictions are written group by group into a float32 staging
    file there (:class:`scimpute.tl._sink.DiskSink`, what ``impute(..., out_store=PATH)``
    uses) instead of an array returned by the method.
    """
    spec = SIParams.from_kwargs("synthetic_interventions", params)
    full_targets, extra = targets, {}
    if subset_contexts is not None:
        keep = np.isin(targets[:, 0], subset_contexts)
        targets = targets[keep]
        pos = np.cumsum(keep) - 1
        in_sub = keep[sample]
        truth_sample, sample = truth_sample[in_sub], pos[sample[in_sub]]
        extra = {
            "subset_contexts": list(map(int, subset_contexts)),
            "n_targets_full": len(full_targets),
            "n_groups_full": _n_groups(data, full_targets, spec),
        }
    same = ref_params is None or ref_params == params
    ref_spec = spec if same else SIParams.from_kwargs("synthetic_interventions", ref_params)
    if sink is not None and (warm or primal):
        raise ValueError("--sink disk times one call: no --warm or --compare-primal with it")
    out = None
    if sink is not None:
        from scimpute.tl._sink import DiskSink

        out = DiskSink(Path(sink) / f"predictions-{os.getpid()}.f32", len(targets), data.n_features)
        extra["sink"] = "disk"
    gc.collect()
    tracemalloc.start()
    with RSSSampler() as rss:
        t0 = time.perf_counter()
        res = synthetic_interventions(data, targets, spec, random_state=seed, out=out)
        wall = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    warm_wall = np.nan
    if warm:  # the same call again: every kernel shape is compiled
        pred = res.prediction
        del res
        gc.collect()
        t0 = time.perf_counter()
        res = synthetic_interventions(data, targets, spec, random_state=seed)
        warm_wall = time.perf_counter() - t0
        assert np.array_equal(pred, res.prediction)
        del pred
    if primal:  # the same call with every host group in the primal (the Gram)
        from scimpute.methods.synthetic_interventions import _engine as E

        old, E.DUAL = E.DUAL, False
        try:
            t0 = time.perf_counter()
            res_p = synthetic_interventions(data, targets, spec, random_state=seed)
            extra["primal_wall_s"] = time.perf_counter() - t0
        finally:
            E.DUAL = old
        extra["dual_speedup_vs_primal"] = extra["primal_wall_s"] / wall
        extra["relative_diff_vs_primal"] = float(
            np.abs(res_p.prediction - res.prediction).max() / np.abs(res_p.prediction).max()
        )
        del res_p
    if subset_contexts is None:
        ref_t = targets[sample[:n_ref]]
    else:  # the full configs' reference targets (timed once), predictions not compared
        ref_t = _REFERENCE_TARGETS.get("t", targets[sample[:n_ref]])
        same = False
    ref, ref_wall = _reference_run(data, ref_t, ref_spec, seed)
    diff = np.abs(res.prediction[sample[:n_ref]] - ref["prediction"]) if same else np.zeros(1)
    if not same:
        diff = np.full_like(diff, np.nan)
    scale = np.abs(ref["prediction"]).max()
    per_pair = wall / len(targets)
    ref_per_pair = ref_wall / len(ref_t)
    if subset_contexts is None:
        _REFERENCE_TARGETS.setdefault("t", ref_t)
    else:
        extra["n_groups_subset"] = int(res.info["n_groups"])
        extra["extrapolated_full_wall_s"] = wall * extra["n_groups_full"] / res.info["n_groups"]
    r2 = si.metrics.r2(truth_sample, res.prediction[sample])
    src = pd.Series(res.source.astype(str)).value_counts()
    if out is not None:
        out.close()
    grid_bytes = data.Y.size * 4  # the dense float32 grid
    return {
        "n_targets": len(targets),
        "wall_s": wall,
        "warm_wall_s": warm_wall,
        "per_pair_ms": 1e3 * per_pair,
        "reference_pairs": n_ref,
        "reference_preset": ref_spec.preset if ref_params is not None else spec.preset,
        "reference_wall_s": ref_wall,
        "reference_per_pair_ms": 1e3 * ref_per_pair,
        "speedup_per_pair": ref_per_pair / per_pair,
        "traced_peak_gb": traced_peak / 1024**3,
        "rss_at_start_gb": rss.start / 1024**3,
        "peak_rss_during_call_gb": rss.peak / 1024**3,
        "rss_increase_gb": (rss.peak - rss.start) / 1024**3,
        "grid_float32_gb": grid_bytes / 1024**3,
        "peak_over_grid": rss.peak / grid_bytes,
        "max_abs_diff_vs_reference": float(diff.max()),
        "relative_diff_vs_reference": float(diff.max() / scale),
        "sources_agree": bool(np.array_equal(res.source[sample[:n_ref]], ref["source"]))
        if same
        else None,
        "median_r2_vs_truth": float(np.median(r2)),
        "fraction_synthetic_interventions": float(src.get("synthetic_interventions", 0))
        / len(targets),
        "n_groups": res.info["n_groups"],
        **{f"groups_{k}": v for k, v in res.info.get("solvers", {}).items()},
        **extra,
    }


def lean_grid(n_c, n_a, p, fraction, seed, rank=10, noise=0.5):
    """The simulator's model (``simulate_grid``, control row first) built straight into
    a float32 :class:`GridData`, context by context: no AnnData, no dense truth layer, no
    float64 grid-sized intermediate (``simulate_grid`` at 70 x 10,000 peaks above 16 GB).

    The draws follow ``simulate_grid``'s formulas (same distributions, not the same random
    stream). Returns ``(data, truth_fn)``; ``truth_fn(c, a)`` is the noise-free profile of
    pairs (grid indices, control at 0).
    """
    from scimpute.methods import grid_data

    rng = np.random.default_rng(seed)
    mu = rng.normal(size=p)
    G = rng.normal(size=(n_c, rank))
    H = rng.normal(size=(rank, p)) / np.sqrt(rank)
    U = 1.0 + rng.normal(size=(n_c, rank))
    W = rng.normal(size=(rank, p)) / np.sqrt(rank)
    V = np.vstack([np.zeros((1, rank)), rng.normal(size=(n_a, rank))])  # control first
    A = n_a + 1
    M = rng.random((n_c, A)) < fraction
    M[:, 0] = True
    for c in np.flatnonzero(~M[:, 1:].any(axis=1)):
        M[c, rng.integers(1, A)] = True
    for a in np.flatnonzero(~M[:, 1:].any(axis=0)) + 1:
        M[rng.integers(n_c), a] = True
    common = mu + G @ H  # context_strength 1

    def truth_fn(c, a):
        return ((U[c] * V[a]) @ W + common[c]).astype(np.float32)

    Y = np.full((n_c, A, p), np.nan, dtype=np.float32)
    for c in range(n_c):
        idx = np.flatnonzero(M[c])
        Y[c, idx] = truth_fn(np.full(idx.size, c), idx) + noise * rng.standard_normal(
            (idx.size, p), dtype=np.float32
        )
    labels = np.array(["control"] + [f"p{i}" for i in range(n_a)])
    data = grid_data(
        Y, M, control=0, contexts=np.array([f"c{i}" for i in range(n_c)]), perturbations=labels
    )
    return data, truth_fn


def _notes(args) -> list[str]:
    """What ``--reference-config`` and ``--subset`` change in the table (markdown lines)."""
    out = []
    if args.sink:
        out += [
            "Sink: the method wrote its predictions group by group into a float32 staging "
            "file (`scimpute.tl._sink.DiskSink`, what `impute(..., out_store=PATH)` uses) "
            "instead of returning a (targets x features) array; `peak_over_grid` is "
            "`peak_rss_during_call_gb` over `grid_float32_gb` (the dense float32 grid).",
            "",
        ]
    if args.reference_config:
        out += [
            f"Reference: every config is timed against the per-pair implementation of "
            f"`{args.reference_config}` (`reference_preset`); for the other configs the "
            "speed-up is against that estimator and predictions are not compared.",
            "",
        ]
    if args.subset:
        out += [
            f"Subset: {', '.join(f'`{c}`' for c in args.subset)} imputed only the targets of "
            f"contexts {args.subset_contexts} (`n_targets`, `n_groups` are the subset's). "
            "`extrapolated_full_wall_s` = `wall_s` x `n_groups_full` / `n_groups` (the cost "
            "is per group; `n_groups_full` counted from the mask): an extrapolation, not a "
            "measurement.",
            "",
        ]
    return out


def main() -> None:
    ap = grid_arguments(
        __doc__, "si_scale", contexts=70, perturbations=5000, features=978, fraction=0.1,
        reference_pairs=200,
    )  # fmt: skip
    ap.add_argument("--configs", nargs="+", default=["default", "published"])
    ap.add_argument(
        "--reference-config",
        default=None,
        help="time this config's reference for every config (default: each its own)",
    )
    ap.add_argument("--context-strength", type=float, default=1.0)
    ap.add_argument(
        "--subset",
        nargs="*",
        default=[],
        help="configs run on the targets of --subset-contexts only (time extrapolated)",
    )
    ap.add_argument("--subset-contexts", nargs="+", type=int, default=[0])
    ap.add_argument(
        "--compare-primal",
        action="store_true",
        help="also time each config with every group in the primal (no dual form)",
    )
    ap.add_argument("--warm", action="store_true", help="also time a second (compiled) call")
    ap.add_argument(
        "--sink",
        default=None,
        help="folder: the method writes its predictions into a staging file there (DiskSink)",
    )
    ap.add_argument(
        "--lean", action="store_true", help="memory-lean generator (lean_grid) for full sizes"
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    if args.lean:
        data, truth_fn = lean_grid(
            args.contexts, args.perturbations, args.features, args.fraction, args.seed
        )
        targets = default_targets(data)
        sim_s = time.perf_counter() - t0
        rss_sim = peak_rss_gb()
        sample = rng.choice(len(targets), size=min(20000, len(targets)), replace=False)
        truth_sample = truth_fn(targets[sample, 0], targets[sample, 1]).astype(np.float64)
    else:
        data, targets, truth_of = simulated_si_grid(
            args.contexts,
            args.perturbations,
            args.features,
            args.fraction,
            args.seed,
            context_strength=args.context_strength,
        )
        sim_s = time.perf_counter() - t0
        rss_sim = peak_rss_gb()
        sample = rng.choice(len(targets), size=min(20000, len(targets)), replace=False)
        truth_sample = truth_of(sample)
        del truth_of  # keep only what the method needs
    cm = context_mean(data, targets[sample]).prediction
    cm_r2 = float(np.median(si.metrics.r2(truth_sample, cm)))
    del cm
    gc.collect()
    print(f"simulated {data.Y.shape} in {sim_s:.0f}s, {len(targets)} targets", flush=True)

    rows = {}
    for name in args.configs:
        ref_params = None if args.reference_config is None else CONFIGS[args.reference_config]
        rows[name] = run_config(
            data, targets, truth_sample, sample, CONFIGS[name], args.reference_pairs, args.seed,
            args.warm, ref_params, args.subset_contexts if name in args.subset else None,
            args.compare_primal, args.sink,
        )  # fmt: skip
        print(name, json.dumps(rows[name], default=float), flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.name}.partial.json").write_text(json.dumps(rows, default=float))
    table = pd.DataFrame(rows).T
    table["peak_rss_gb_process"] = peak_rss_gb()
    print(table.to_string())

    meta = {
        "grid": {
            "contexts": args.contexts,
            "perturbations": args.perturbations,
            "features": args.features,
            "fraction_measured": args.fraction,
            "rank": 10,
            "context_strength": args.context_strength,
            "noise": 0.5,
            "seed": args.seed,
            "generator": "lean_grid (float32, context by context)"
            if args.lean
            else "simulate_grid",
        },
        "configs": CONFIGS,
        "simulation_s": sim_s,
        "peak_rss_gb_after_simulation": rss_sim,
        "context_mean_median_r2_vs_truth": cm_r2,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "command": "PYTHONPATH=src python benchmarks/si_scale.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "configs"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    cols = [
        "n_targets",
        "wall_s",
        "warm_wall_s",
        "per_pair_ms",
        "reference_per_pair_ms",
        "speedup_per_pair",
        "rss_at_start_gb",
        "peak_rss_during_call_gb",
        "rss_increase_gb",
        "grid_float32_gb",
        "peak_over_grid",
        "peak_rss_gb_process",
        "relative_diff_vs_reference",
        "sources_agree",
        "median_r2_vs_truth",
        "fraction_synthetic_interventions",
    ]
    optional = ["reference_preset", "n_groups", "groups_dual", "groups_primal_host", "sink"]
    optional += ["n_groups_full", "extrapolated_full_wall_s"]
    optional += ["primal_wall_s", "dual_speedup_vs_primal", "relative_diff_vs_primal"]
    cols += [c for c in optional if c in table.columns]
    md = [
        f"# Synthetic interventions at scale ({args.contexts} x {args.perturbations} x "
        f"{args.features}, {args.fraction:.0%} measured)",
        "",
        table[cols].to_markdown(floatfmt=".4g"),
        "",
        f"context_mean median R2 against the noise-free truth (same sample): {cm_r2:.3f}.",
        "",
        "`wall_s` imputes every unmeasured pair (first call, compilation included; "
        "`warm_wall_s`, with `--warm`, the same call again once every shape is compiled); "
        "the reference is the "
        "plain per-pair numpy implementation of the same estimator, timed on "
        f"{args.reference_pairs} random targets in the same run. `peak_rss_during_call_gb` is "
        "the process's resident memory sampled every 20 ms during the call (XLA buffers "
        "included; the grid's arrays, about `rss_at_start_gb`, are part of it), "
        "`rss_increase_gb` what the call added; `peak_rss_gb_process` the process's peak "
        "over the whole run, the simulator's dense intermediates included. "
        "`default` (preset validated) validates the levels of the greedy path (leave-one-"
        "context-out, or held-out features for single-context levels whose donors over-span "
        "the design) and the ridge, with affine weights and the context_mean fallback; "
        "`published` is the literature's estimator (greedy donors to the last level, "
        "minimum-norm least squares, free weights, no fallback); `two_units` is the default "
        "restricted to levels with at least two training contexts.",
        "",
        *_notes(args),
        "```",
        json.dumps(meta, indent=2, default=str),
        "```",
        "",
    ]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md))
    (RESULTS / f"{args.name}.partial.json").unlink(missing_ok=True)
    (RESULTS / f"{args.name}.json").write_text(
        json.dumps(
            {"results": json.loads(table.to_json(orient="index")), "meta": meta},
            indent=2,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
