"""Group sizes of synthetic interventions at the genome-wide Perturb-seq shape, from the mask.

Counts the groups (shared factorisations) of both presets on a random 4 x 10,000 mask at
90% measured and times one ``eigh`` and one Cholesky of a 2,000 x 2,000 matrix, to size the
full run (see ``results/si_dense_4x10000.md``):

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/si_groups.py
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from scimpute.methods.synthetic_interventions import SIParams
from scimpute.methods.synthetic_interventions import _engine as E
from scimpute.methods.synthetic_interventions._direction import _usable_levels


def main(contexts: int = 4, perturbations: int = 10000, fraction: float = 0.9) -> dict:
    rng = np.random.default_rng(0)
    M = rng.random((contexts, perturbations + 1)) < fraction
    M[:, 0] = True  # control
    t = np.argwhere(~M)
    t = t[t[:, 1] != 0]
    res: dict = {"n_targets": len(t)}
    for preset in ("validated", "published"):
        prm = SIParams(preset=preset).resolved()
        last = prm.min_train_units if prm.select == "max_donors" else None
        paths = _usable_levels(E.greedy_paths(M, t, None, last), len(t), prm)
        used = np.unique(paths.cand_key)
        nD = paths.n_D[used].astype(float)
        res[preset] = {
            "groups": int(used.size),
            "median_donors": float(np.median(nD)),
            "max_donors": int(nD.max()),
            "sum_donors_cubed": float(np.sum(nD**3)),
            "median_train_units": float(np.median(paths.n_T[used])),
        }
    n = 2000
    X = rng.normal(size=(n, n))
    A = X @ X.T + n * np.eye(n)
    for name, fn in (("eigh_2000_s", np.linalg.eigh), ("cholesky_2000_s", np.linalg.cholesky)):
        t0 = time.perf_counter()
        fn(A)
        res[name] = time.perf_counter() - t0
    res["load_avg"] = os.getloadavg()[0]
    return res


if __name__ == "__main__":
    print(json.dumps(main()))
