"""Helpers shared by the NTK benchmark scripts (results tables, environment)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def single_threaded_blas() -> None:
    """Use one BLAS thread: the development machine shares 2 cores between several jobs,
    where multithreaded OpenBLAS factorisations slow down by 10-100x. Call before numpy."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def environment() -> dict:
    import jax

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def summary(df: pd.DataFrame, order: list[str] | None = None) -> pd.DataFrame:
    g = df.groupby("method", sort=False)
    out = pd.DataFrame(
        {
            "n_pairs": g.size(),
            "median_pearson_effect": g["pearson_effect"].median(),
            "mean_pearson_effect": g["pearson_effect"].mean(),
            "median_r2": g["r2"].median(),
            "median_r2_effect": g["r2_effect"].median(),
            "median_cosine_effect": g["cosine_effect"].median(),
        }
    )
    if order is not None:
        out = out.loc[[m for m in order if m in out.index]]
    return out


def wins(df: pd.DataFrame, a: str, b: str, metric: str = "pearson_effect") -> tuple[int, int]:
    """Pairs where method ``a`` scores higher than ``b``, and the number of pairs."""
    pa = df[df.method == a].set_index(["context", "perturbation"])[metric]
    pb = df[df.method == b].set_index(["context", "perturbation"])[metric]
    pa, pb = pa.align(pb, join="inner")
    return int((pa > pb).sum()), len(pa)


def to_markdown(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([df.index.name or "", *cols]) + " |"]
    lines.append("|" + "---|" * (len(cols) + 1))
    for idx, row in zip(df.index, df.itertuples(index=False), strict=True):
        cells = []
        for v in row:
            if isinstance(v, float | np.floating):
                cells.append(format(float(v), floatfmt))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)


def write(name: str, markdown: str, payload: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(markdown)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=_default))
    print(markdown)


def _default(o):
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, pd.DataFrame):
        return json.loads(o.to_json(orient="index"))
    return str(o)
