"""Helpers shared by the benchmark scripts: where results go and how tables are written."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """A short description of the machine the numbers come from."""
    import jax

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "date": time.strftime("%Y-%m-%d"),
    }


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _to_jsonable(obj):
    if isinstance(obj, pd.DataFrame):
        return json.loads(obj.to_json(orient="index"))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_jsonable(v) for v in obj]
    return obj


def write_results(name: str, title: str, sections: dict, meta: dict) -> Path:
    """Write ``results/<name>.md`` (tables as markdown) and ``results/<name>.json``.

    ``sections`` maps a heading to a DataFrame or a short text.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "machine": machine()}
    lines = [f"# {title}", ""]
    for head, body in sections.items():
        lines += [f"## {head}", ""]
        if isinstance(body, pd.DataFrame):
            lines.append(body.to_markdown(floatfmt=".3f"))
        else:
            lines.append(str(body))
        lines.append("")
    lines += ["## Run", "", "```", json.dumps(meta, indent=2, default=str), "```", ""]
    md = RESULTS / f"{name}.md"
    md.write_text("\n".join(lines))
    payload = {"title": title, "meta": meta, "sections": _to_jsonable(sections)}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    return md


def grid_arguments(doc: str, name: str, **defaults):
    """An argument parser with the simulated grid's shape (``--contexts``,
    ``--perturbations``, ``--features``, ``--fraction``), ``--reference-pairs``, ``--seed``
    and ``--name``, defaulting to ``defaults`` (and ``name``)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    for arg, kind in (("contexts", int), ("perturbations", int), ("features", int)):
        ap.add_argument(f"--{arg}", type=kind, default=defaults[arg])
    ap.add_argument("--fraction", type=float, default=defaults["fraction"])
    ap.add_argument("--reference-pairs", type=int, default=defaults["reference_pairs"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default=name)
    return ap


def simulated_si_grid(contexts, perturbations, features, fraction, seed, context_strength=1.0):
    """The seeded simulator grid of the SI benchmarks (rank 10, noise 0.5) as ``GridData``.

    Returns ``(data, targets, truth_of)``: the grid's arrays, every unmeasured non-control
    pair, and ``truth_of(rows)``, the noise-free profiles of ``targets[rows]`` (float64).
    """
    import scimpute as si
    from scimpute.tl._data import default_targets, to_grid_data

    grid = si.datasets.simulate_grid(
        contexts,
        perturbations,
        features,
        rank=10,
        noise=0.5,
        fraction_measured=fraction,
        context_strength=context_strength,
        random_state=seed,
    )
    data, order = to_grid_data(grid)
    targets = default_targets(data)
    truth = grid.layers["truth"]

    def truth_of(rows):
        flat = targets[rows, 0] * data.n_perturbations + targets[rows, 1]
        return np.asarray(truth[order[flat]], dtype=np.float64)

    return data, targets, truth_of
