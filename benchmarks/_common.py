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
