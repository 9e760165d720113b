"""Trust benchmark: ``method="auto"`` vs every single method, intervals, error and trust scores.

For each shared grid, an outer hold-out the inner cross-validation of ``auto`` never sees:

- ``random5``: exact nested cross-validation. The measured non-control pairs are split into 5
  random outer folds; for each fold every candidate is run on the grid with the fold hidden
  (the fixed methods' scores) and ``auto`` is fitted on the remaining measured pairs only
  (its own 10-fold inner hold-out, rule, difficulty and trust models) and applied to the fold.
- ``loo`` (CMap only): exact nested leave-one-out on a seeded random subset of
  :data:`N_LOO` of the 302 measured pairs (``numpy.random.default_rng(SEED)``). For each
  pair, every candidate is run on the grid with that one pair hidden, and ``auto`` is fitted
  from scratch on the other 301 measured pairs (its own 10-fold inner hold-out, rule,
  difficulty and trust models; with one target its hold-out is unweighted) and applied to
  the pair. Nothing about the pair reaches ``auto`` before it predicts it. Every pair would
  take about 5 h of this shared machine; the subset is stated in the results. Coverage and
  AUROC over so few pairs are noisy (coverage is over the pairs' 978 features).

Reported per grid: median R2 of every candidate and of ``auto``; for ``auto``'s 90% intervals
the coverage (fraction of held-out feature values inside their interval) and mean width; the
Spearman correlation of the predicted error with the real normalised error; the AUROC of
``1 - trust`` for "worse than the validated best baseline" (SSE above the baseline's).

Stages are cached as JSON under ``$SCIMPUTE_TRUST_CACHE`` (default ``/tmp/scimpute_trust``);
``python benchmarks/trust.py <stage> ...`` runs stages, ``python benchmarks/trust.py report``
writes ``results/trust.md`` / ``.json`` from the cached ones. Stages: ``korkut``,
``lincs``, ``cmap_random5``, ``cmap_loo``. The networks (``autoencoder``, ``vae``) are left out
of the candidates here for time (each trains for about a minute per fit on this machine);
``auto``'s screening keeps them out when they lose on the first inner fold.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _ntk_common import single_threaded_blas

single_threaded_blas()  # before numpy: 2 shared cores, where threaded OpenBLAS crawls
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _common import write_results  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

import scimpute as si  # noqa: E402
from scimpute.methods._stats import fallback_chain, group_means, validated_order  # noqa: E402
from scimpute.metrics import r2  # noqa: E402
from scimpute.tl._auto import (  # noqa: E402
    AutoParams,
    apply_assessment,
    candidate_specs,
    fit_assessment,
    fit_from_oof,
)
from scimpute.tl._auto._trust import beats_baseline  # noqa: E402
from scimpute.tl._data import to_grid_data  # noqa: E402
from scimpute.tl._run import run_method  # noqa: E402

CACHE = Path(os.environ.get("SCIMPUTE_TRUST_CACHE", "/tmp/scimpute_trust"))
EXCLUDE = ("autoencoder", "vae")
LEVEL = 0.9
SEED = 0
#: pairs of the exact nested leave-one-out on CMap (a seeded random subset).
N_LOO = int(os.environ.get("SCIMPUTE_TRUST_N_LOO", 30))
#: grid shape (contexts, perturbations, features, measured non-control pairs) per stage run.
SHAPES: dict[str, list[int]] = {}
#: outer folds of the stage run whose candidates' runs came from the cache (:func:`_fit_fold`).
CACHED: list[str] = []


def _shape(name, data) -> None:
    SHAPES[name] = [*map(int, data.Y.shape), int(data.treated_mask().sum())]


def grid_of(name: str):
    if name == "cmap":
        return si.pp.perturbation_grid(si.datasets.cmap(), "cell_id", "pert_id", control="DMSO")
    if name == "lincs":
        return si.pp.perturbation_grid(
            si.datasets.lincs_doses(), "cell_id", "pert_iname", control="DMSO",
            dose_key="pert_dose_um",
        )  # fmt: skip
    a = si.datasets.korkut()
    a.obs["context"] = "SKMEL-133"
    return si.pp.perturbation_grid(a, "context", "perturbation", control="control", dose_key="dose")


def _hide(data, pairs):
    m = data.measured.copy()
    m[pairs[:, 0], pairs[:, 1]] = False
    return data.with_measured(m)


def _fit_fold(stage, tag, data, hidden, cands, seed):
    """``(grid with hidden pairs, fixed results, auto's Fitted)`` for one outer fold.

    The expensive part, every candidate run on the outer fold and ``auto``'s out-of-fold
    record (:func:`~scimpute.tl._auto.fit_assessment`), is cached as a pickle under
    ``<cache>/oof/`` (``SCIMPUTE_TRUST_FRESH=1`` recomputes it); what is learnt from that
    record (rule, error and trust models: :func:`~scimpute.tl._auto.fit_from_oof`) is always
    recomputed, so the judgement layer can be changed and re-measured without rerunning the
    candidates. Neither the record nor the candidates' runs depend on the judgement layer.
    """
    fd = _hide(data, hidden)
    path = CACHE / "oof" / f"{stage}_{tag}.pkl"
    if path.exists() and not os.environ.get("SCIMPUTE_TRUST_FRESH"):
        fixed, oof = pickle.loads(path.read_bytes())
        CACHED.append(tag)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fixed = {
                c: run_method(m, fd, hidden, random_state=SEED, params=p)
                for c, (m, p) in cands.items()
            }
            oof = fit_assessment(fd, hidden, cands, AutoParams(), random_state=seed).oof
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps((fixed, oof)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit = fit_from_oof(fd, oof, cands, AutoParams())
    return fd, fixed, fit


def _rows(data, fd, hidden, fixed, a, fold):
    """Per-pair table of one outer fold: every candidate's R2 and auto's trust columns."""
    y = np.asarray(data.Y[hidden[:, 0], hidden[:, 1]], dtype=np.float64)
    gm = group_means(fd)
    base = fallback_chain(fd, hidden, list(validated_order(fd, gm)), gm).prediction
    pred = np.asarray(a.result.prediction, dtype=np.float64)
    out = {
        "fold": fold,
        "context": np.asarray(data.contexts)[hidden[:, 0]].astype(str),
        "perturbation": np.asarray(data.perturbations)[hidden[:, 1]].astype(str),
        "auto": r2(y, pred),
        "auto_source": np.asarray(a.result.source, dtype=str),
        "auto_rule": a.rule.kind,
        "error_model": a.result.info["auto"]["error_model"],
        "trust_model": a.result.info["auto"]["trust_model"],
        "coverage": ((y >= a.lower) & (y <= a.upper)).mean(axis=1),
        "width": (a.upper - a.lower).mean(axis=1),
        "predicted_error": a.result.per_target["error"],
        "error": np.mean((pred - y) ** 2 / a.oof.feature_var, axis=1),
        "trust": a.result.per_target["trust"],
        "beats_baseline": beats_baseline(y, pred, base),
    }
    for name, res in fixed.items():
        out[name] = r2(y, res.prediction)
        out[f"{name}_own"] = np.asarray(res.source, dtype=str) == name
    return pd.DataFrame(out)


def run_random5(name: str) -> pd.DataFrame:
    g = grid_of(name)
    data, _ = to_grid_data(g)
    _shape(name, data)
    cands, _ = candidate_specs(data, exclude=EXCLUDE)
    rng = np.random.default_rng(SEED)
    pairs = np.argwhere(data.treated_mask())
    folds = np.array_split(rng.permutation(len(pairs)), 5)
    tables = []
    for f, idx in enumerate(folds):
        hidden = pairs[np.sort(idx)]
        fd, fixed, fit = _fit_fold(name, f"random5_{f}", data, hidden, cands, SEED + f)
        a = apply_assessment(fit, fd, hidden, level=LEVEL, final=fixed)
        tables.append(_rows(data, fd, hidden, fixed, a, f))
        print(f"{name} fold {f}: rule {a.rule.kind} {a.rule.describe()}", flush=True)
    return pd.concat(tables, ignore_index=True)


def run_loo(name: str) -> pd.DataFrame:
    """Exact nested LOO over the first :data:`N_LOO` pairs of a seeded permutation.

    Each finished pair is appended to ``<cache>/<name>_loo.partial.jsonl`` (``report`` reads
    the pairs done when the stage was interrupted) and its candidates' runs are cached
    (:func:`_fit_fold`), so a rerun resumes where an interrupted one stopped: a prefix of the
    same seeded order, itself a seeded random subset.
    """
    g = grid_of(name)
    data, _ = to_grid_data(g)
    _shape(name, data)
    cands, _ = candidate_specs(data, exclude=EXCLUDE)
    pairs = np.argwhere(data.treated_mask())
    order = np.random.default_rng(SEED).permutation(len(pairs))[:N_LOO]
    part = CACHE / f"{name}_loo.partial.jsonl"
    part.write_text("")  # rewritten: the expensive part of each pair is cached (_fit_fold)
    for i in order:
        hidden = pairs[i][None, :]
        t0 = time.perf_counter()
        fd, fixed, fit = _fit_fold(name, f"loo_{i}", data, hidden, cands, SEED + int(i))
        a = apply_assessment(fit, fd, hidden, level=LEVEL, final=fixed)
        row = _rows(data, fd, hidden, fixed, a, int(i))
        with part.open("a") as fh:
            fh.write(json.dumps(row.to_dict(orient="list"), default=float) + "\n")
        print(
            f"{name} loo pair {i}: rule {a.rule.kind} {a.rule.describe()} "
            f"{time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    return loo_table(name)


def loo_table(name: str) -> pd.DataFrame:
    """The leave-one-out pairs done so far (:func:`run_loo`)."""
    part = CACHE / f"{name}_loo.partial.jsonl"
    rows = [pd.DataFrame(json.loads(x)) for x in part.read_text().splitlines()]
    return pd.concat(rows, ignore_index=True)


STAGES = {
    "korkut": lambda: run_random5("korkut"),
    "lincs": lambda: run_random5("lincs"),
    "cmap_random5": lambda: run_random5("cmap"),
    "cmap_loo": lambda: run_loo("cmap"),
}


#: bootstrap resamples of the pairs for the 95% intervals of the AUROC and the Spearman.
N_BOOT = 2000


def _bootstrap(df: pd.DataFrame, worse: np.ndarray):
    """95% percentile bootstrap interval of the trust AUROC over the pairs (None if undefined)."""
    rng = np.random.default_rng(SEED)
    s, out = 1 - df["trust"].to_numpy(float), []
    for _ in range(N_BOOT):
        i = rng.integers(0, len(df), len(df))
        if 0 < worse[i].sum() < len(i):
            out.append(roc_auc_score(worse[i], s[i]))
    return tuple(float(q) for q in np.quantile(out, [0.025, 0.975])) if out else (None, None)


def _bootstrap_spearman(df: pd.DataFrame):
    """95% percentile bootstrap interval of the error score's Spearman correlation."""
    rng = np.random.default_rng(SEED)
    a, b = df["predicted_error"].to_numpy(float), df["error"].to_numpy(float)
    out = [spearmanr(a[i], b[i])[0] for i in rng.integers(0, len(a), (N_BOOT, len(a)))]
    return tuple(float(q) for q in np.nanquantile(out, [0.025, 0.975]))


def summary(df: pd.DataFrame) -> dict:
    methods = [c for c in df.columns if f"{c}_own" in df.columns]
    med = {m: float(df[m].median()) for m in methods}
    best = max(med, key=med.get)
    worse = ~df["beats_baseline"].to_numpy(bool)
    auroc = float(roc_auc_score(worse, 1 - df["trust"])) if 0 < worse.sum() < len(df) else None
    lo, hi = _bootstrap(df, worse)
    return {
        "n_pairs": len(df),
        "median_r2": {"auto": float(df["auto"].median()), **med},
        "best_single": best,
        "auto_minus_best": float(df["auto"].median() - med[best]),
        "auto_rules": df.groupby("fold")["auto_rule"].first().value_counts().to_dict(),
        "coverage_90": float(df["coverage"].mean()),
        "mean_width": float(df["width"].mean()),
        "error_spearman": float(spearmanr(df["predicted_error"], df["error"])[0]),
        "trust_auroc_worse": auroc,
        "trust_auroc_ci95": [lo, hi],
        "error_spearman_ci95": list(_bootstrap_spearman(df)),
        "n_worse_than_baseline": int(worse.sum()),
        "frac_worse_than_baseline": float(worse.mean()),
        "own_share": {m: float(df[f"{m}_own"].mean()) for m in methods},
        **{  # the error and trust models the inner validation chose, per outer fold
            f"{c}s": df.groupby("fold")[c].first().value_counts().to_dict()
            for c in ("error_model", "trust_model")
            if c in df.columns
        },
    }


def _loo_time(rec: dict) -> str:
    """Wall time of the leave-one-out stage as run (from its cached record)."""
    if "wall_s" not in rec:
        return "an interrupted run"
    n = rec.get("n_loo") or 1
    load = rec.get("load_avg", [float("nan")])[0]
    cached = (
        f"; the candidates' runs and out-of-fold records of {rec['n_folds_cached']} pairs came "
        "from the cache, so this is mostly the judgement layer's time"
        if rec.get("n_folds_cached")
        else ""
    )
    return (
        f"{rec['wall_s'] / 60:.0f} min in all, {rec['wall_s'] / n:.0f} s per pair, at load "
        f"{load:.1f} on 2 shared cores{cached}"
    )


def _ci(v) -> str:
    return "n/a" if v[0] is None else f"{v[0]:.2f}-{v[1]:.2f}"


def report() -> None:
    rows, meta = {}, {}
    for stage in STAGES:
        path = CACHE / f"{stage}.json"
        if path.exists():
            rec = json.loads(path.read_text())
            rows[stage] = summary(pd.read_json(path.with_suffix(".pairs.json")))
            meta[stage] = rec
        elif stage.endswith("_loo") and (CACHE / f"{stage}.partial.jsonl").exists():
            df = loo_table(stage.removesuffix("_loo"))  # an interrupted run: the pairs done
            rows[stage] = summary(df)
            meta[stage] = {"partial": True, "n_done": len(df), "n_loo": N_LOO}
    table = pd.DataFrame(
        {
            s: {
                "pairs": r["n_pairs"],
                "auto median R2": r["median_r2"]["auto"],
                "best single": r["best_single"],
                "best single median R2": r["median_r2"][r["best_single"]],
                "auto - best": r["auto_minus_best"],
                "90% coverage": r["coverage_90"],
                "mean width": r["mean_width"],
                "error Spearman": r["error_spearman"],
                "Spearman 95% CI": _ci(r["error_spearman_ci95"]),
                "pairs worse than baseline": r["n_worse_than_baseline"],
                "trust AUROC (worse than baseline)": r["trust_auroc_worse"],
                "AUROC 95% CI": _ci(r["trust_auroc_ci95"]),
            }
            for s, r in rows.items()
        }
    ).T
    per_method = pd.DataFrame({s: r["median_r2"] for s, r in rows.items()})
    loo = meta.get("cmap_loo", {})
    n_loo = loo.get("n_done", rows.get("cmap_loo", {}).get("n_pairs"))
    schemes = (
        "- korkut, lincs, cmap_random5: exact nested CV, 5 random outer folds over every "
        "measured non-control pair (auto fitted on the other 4 folds only, 10-fold inner "
        "hold-out).\n"
        f"- cmap_loo: exact nested leave-one-out on {n_loo} pairs, the first of a seeded "
        f"random permutation (numpy default_rng({SEED})) of the 302 measured pairs; auto "
        "refitted from scratch on the other 301 for each pair. Fewer pairs than the 302 for "
        f"time ({_loo_time(loo)}); coverage is over the pairs' 978 features, the AUROC over "
        "few pairs is noisy.\n"
        f"- One BLAS thread (OPENBLAS_NUM_THREADS=1); load average when this report was "
        f"written: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (per stage: Run)."
    )
    sections = {
        "Schemes": schemes,
        "Summary": table,
        "Median R2 per method (outer hold-out)": per_method,
        "Details": "\n".join(f"- {s}: {json.dumps(r, default=str)}" for s, r in rows.items()),
    }
    write_results(
        "trust",
        "Trust: method='auto', 90% conformal intervals, error and trust scores (outer hold-out)",
        sections,
        {"stages": meta, "summaries": rows, "level": LEVEL, "excluded": list(EXCLUDE)},
    )


def main(argv: list[str]) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    for stage in argv or list(STAGES):
        if stage == "report":
            report()
            continue
        t0 = time.perf_counter()
        SHAPES.clear()
        CACHED.clear()
        df = STAGES[stage]()
        wall = time.perf_counter() - t0
        df.to_json(CACHE / f"{stage}.pairs.json")
        (CACHE / f"{stage}.json").write_text(
            json.dumps(
                {
                    "wall_s": wall,
                    "load_avg": os.getloadavg(),
                    "shape": next(iter(SHAPES.values()), None),
                    "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
                    "n_folds_cached": len(CACHED),
                    **({"n_loo": N_LOO} if stage.endswith("loo") else {}),
                }
            )
        )
        print(stage, f"{wall:.0f} s, load {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
