"""Speed and memory of NTK matrix completion on simulated grids, against plain numpy.

The simulator (``simulate_grid``) builds a grid of C contexts x A perturbations x p genes with
a fraction of the pairs measured; ``impute(method="ntk")`` predicts every unmeasured pair.
Each implementation runs in its own subprocess so that its peak memory (host RSS; on a GPU
also the device's peak allocation) is its own. The numpy reference
(``scimpute.methods._ntk_numpy``) predicts all targets, or a random subset of them
(``--reference-targets``) when the grid is large, and its predictions are compared with the
JAX ones on the same pairs.

    SCIMPUTE_DATA_DIR=/work/shared/data PYTHONPATH=src python benchmarks/ntk_scale.py \
        --contexts 70 --perturbations 500 --tag cpu_70x500
    # the issue's size (needs ~40 GB of host memory for the numpy reference; run on a GPU box)
    PYTHONPATH=src python benchmarks/ntk_scale.py --contexts 70 --perturbations 5000 \
        --reference-targets 2000 --tag gpu_70x5000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _ntk_common import RESULTS, environment


def _simulate(args):
    import scimpute as si

    t0 = time.perf_counter()
    g = si.datasets.simulate_grid(
        args.contexts, args.perturbations, args.features, fraction_measured=args.fraction,
        noise=0.1, random_state=0,
    )  # fmt: skip
    del g.layers["truth"]
    return g, time.perf_counter() - t0


def _targets(data, n_ref, seed=0):
    import numpy as np

    from scimpute.tl._data import default_targets

    t = default_targets(data)
    if n_ref and n_ref < len(t):
        t = t[np.sort(np.random.default_rng(seed).choice(len(t), n_ref, replace=False))]
    return t


def _peak_device_bytes():
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:
        stats = {}
    return stats.get("peak_bytes_in_use")


def worker(args) -> dict:
    import numpy as np

    from scimpute.tl._data import to_grid_data

    g, t_sim = _simulate(args)
    data, _ = to_grid_data(g)
    out = {"t_simulate_s": t_sim, "n_measured": int(data.measured.sum())}
    ref_t = _targets(data, args.reference_targets)
    if args.worker == "jax":
        import scimpute as si
        from scimpute.methods import get_method

        t0 = time.perf_counter()
        si.tl.impute(g, method="ntk", prior=args.prior, dtype=args.dtype)
        out["t_impute_first_s"] = time.perf_counter() - t0  # includes compilation
        rec = g.uns["imputed_ntk"]
        out["n_imputed"] = int(rec["n_imputed"])
        out["patterns"] = {k: np.asarray(v).tolist() for k, v in rec["patterns"].items()}
        t0 = time.perf_counter()
        si.tl.impute(g, method="ntk", prior=args.prior, dtype=args.dtype, key_added="again")
        out["t_impute_second_s"] = time.perf_counter() - t0  # compiled: pure compute
        m = get_method("ntk")
        t0 = time.perf_counter()
        pred = m.fn(data, ref_t, m.parse({"prior": args.prior, "dtype": args.dtype})).prediction
        out["t_reference_targets_s"] = time.perf_counter() - t0
        out["peak_device_bytes"] = _peak_device_bytes()
    else:
        from scimpute.methods._ntk_numpy import ntk_numpy
        from scimpute.methods.ntk import NtkParams

        t0 = time.perf_counter()
        pred = ntk_numpy(data, ref_t, NtkParams(prior=args.prior))
        out["t_reference_targets_s"] = time.perf_counter() - t0
    out["n_reference_targets"] = len(ref_t)
    np.save(args.pred_file, pred)
    out["peak_host_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--contexts", type=int, default=70)
    p.add_argument("--perturbations", type=int, default=500)
    p.add_argument("--features", type=int, default=978)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--prior", default="auto")
    p.add_argument("--dtype", default="float64")
    p.add_argument("--reference-targets", type=int, default=0)
    p.add_argument("--tag", default="")
    p.add_argument("--worker", choices=["jax", "numpy"])
    p.add_argument("--pred-file")
    p.add_argument("--result-file")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args()
    if args.worker:
        res = worker(args)
        Path(args.result_file).write_text(json.dumps(res))
        return
    tag = args.tag or f"{args.contexts}x{args.perturbations}"
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    runs = {}
    for w in ("jax", "numpy"):
        pred_file, res_file = tmp / f"ntk_scale_{w}.npy", tmp / f"ntk_scale_{w}.json"
        cmd = [sys.executable, __file__, "--worker", w, "--pred-file", str(pred_file),
               "--result-file", str(res_file)] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k in ("contexts", "perturbations", "features", "fraction", "prior", "dtype",
                     "reference_targets")
        ]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        runs[w] = json.loads(res_file.read_text())
        runs[w]["wall_s"] = time.perf_counter() - t0
        print(w, runs[w], flush=True)
    import numpy as np

    a, b = np.load(tmp / "ntk_scale_jax.npy"), np.load(tmp / "ntk_scale_numpy.npy")
    max_abs = float(np.abs(a - b).max())
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    j, n = runs["jax"], runs["numpy"]
    md = [
        f"# NTK speed and memory ({tag})",
        "",
        f"Simulated grid {args.contexts} contexts x {args.perturbations} perturbations (+ "
        f"control) x {args.features} genes, {args.fraction:.0%} of pairs measured: "
        f"{j['n_measured']} training pairs, {j['n_imputed']} pairs imputed; prior "
        f"`{args.prior}`, dtype {args.dtype}. Device: {environment()['devices']}.",
        "",
        "| implementation | what | time (s) | peak host RSS (GB) | peak device memory (GB) |",
        "|---|---|---|---|---|",
        f'| JAX (`impute(method="ntk")`) | all {j["n_imputed"]} targets, first call '
        f"(with compilation) | {j['t_impute_first_s']:.2f} | {j['peak_host_rss_gb']:.2f} | "
        + (f"{j['peak_device_bytes'] / 2**30:.2f}" if j.get("peak_device_bytes") else "n/a")
        + " |",
        f"| JAX | all targets, second call (compiled) | {j['t_impute_second_s']:.2f} | | |",
        f"| JAX (method function) | {j['n_reference_targets']} reference targets | "
        f"{j['t_reference_targets_s']:.2f} | | |",
        f"| numpy reference | {n['n_reference_targets']} reference targets | "
        f"{n['t_reference_targets_s']:.2f} | {n['peak_host_rss_gb']:.2f} | |",
        "",
        f"Agreement on the reference targets: max |JAX - numpy| = {max_abs:.2e}, relative "
        f"Frobenius difference {rel:.2e}.",
        "",
        f"Solve statistics (one pattern): {j['patterns']}.",
        "",
        f"Simulation time (not part of the method): {j['t_simulate_s']:.1f} s.",
        "",
    ]
    text = "\n".join(md)
    print(text)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"ntk_scale_{tag}.md").write_text(text)
    (out / f"ntk_scale_{tag}.json").write_text(json.dumps(
        {"args": vars(args), "jax": j, "numpy": n, "max_abs_diff": max_abs,
         "relative_diff": rel, "environment": environment()}, indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
