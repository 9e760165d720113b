"""Command line: ``scimpute impute``, ``scimpute benchmark``, ``scimpute demo``, ``scimpute methods``.

Every command checks its arguments, output paths, method names and method parameters before
it reads or computes anything. Errors have one format, ``scimpute <command>: error: <what>``
on stderr, and no traceback; the exit status is 2 for bad usage or input and 1 for a failure
while the work runs. Outputs are written atomically (a temporary file in the same directory,
then :func:`os.replace`), and the input file is never overwritten unless ``--force`` is given.

Only :mod:`argparse` is imported at start-up, so ``scimpute --help`` is fast; AnnData, JAX and
the methods load inside the commands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._jax_cache import enable_compile_cache  # imports jax only when called
from ._keys import AUTO_RECORD, DATA_DIR_ENV, INTERVAL, MM_KEY  # constants only: no heavy import

#: exit status of bad usage or bad input (also argparse's).
EXIT_USAGE = 2
#: exit status of a failure while the work runs.
EXIT_FAILURE = 1

DEMO_METHODS = (
    "context_mean",
    "perturbation_mean",
    "two_way_mean",
    "additive",
    "synthetic_interventions",
    "ntk",
)
#: the demo's runtimes with the default methods, measured with ``scimpute demo`` on the
#: project's shared 2-core CPU machine while other jobs ran (CMap: 332 s and 362 s wall,
#: 134-152 s of CPU time; simulated: 297 s wall, 86 s of CPU time).
DEMO_RUNTIME_CMAP = "about 5-6 minutes on a shared 2-core CPU (5 minutes of CPU time)"
DEMO_RUNTIME_SIMULATED = "about 5 minutes on a shared 2-core CPU (1.5 minutes of CPU time)"
#: contexts, perturbations and features of the simulated fallback grid.
DEMO_SIMULATED = (20, 30, 200)
BENCHMARK_METHODS = "context_mean,perturbation_mean,two_way_mean,additive"
HOLDOUTS = ("leave_one_out", "random", "contexts", "perturbations")
#: suffixes of ``benchmark -o``: how the summary table is written.
SUMMARY_SUFFIXES = (".md", ".txt", ".csv", ".json")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: column of the summaries: share of the hidden pairs a method predicted itself.
OWN_SHARE = "own_share"
#: columns of the short summary (``benchmark`` without ``--full``, ``demo``).
SHORT_COLUMNS = ("n_pairs", "median_r2", "median_relative_mse", OWN_SHARE)


class CLIError(Exception):
    """An error reported as one line ``scimpute <command>: error: <message>``.

    Parameters
    ----------
    message
        What is wrong and how to fix it.
    code
        Exit status: :data:`EXIT_USAGE` (2) for bad usage or input, :data:`EXIT_FAILURE` (1)
        for a failure while the work runs.

    """

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _message(err: BaseException) -> str:
    """One line for an exception (a KeyError's message without the quotes repr adds)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(text.split())
    return text or type(err).__name__


def _usage(fn: Callable[[], Any]) -> Any:
    """Run a preparation step; any error in it is bad usage or input (exit status 2)."""
    try:
        return fn()
    except CLIError:
        raise
    except (KeyError, ValueError, TypeError, OSError) as err:
        raise CLIError(_message(err), EXIT_USAGE) from err


# ---------------------------------------------------------------------------------------------
# argument values


def _value(text: str) -> Any:
    """Parse a ``--param`` value: JSON (numbers, true/false/null, lists) or a plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _params(items: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise CLIError(f"--param expects NAME=VALUE, got {item!r}.")
        out[name.strip()] = _value(value.strip())
    return out


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _method_list(text: str, option: str = "--methods") -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        what = "method" if option == "--methods" else "name"
        raise CLIError(f"{option} names no {what} (got {text!r}); give a comma-separated list.")
    return names


# ---------------------------------------------------------------------------------------------
# paths


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file (symlinks, relative paths, hard links)."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _check_output(
    path: str | None,
    option: str,
    suffixes: Sequence[str],
    *,
    inputs: Sequence[Path] = (),
    force: bool = False,
) -> Path | None:
    """Check an output path before any work: its suffix, its directory, not an input file."""
    if path is None:
        return None
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise CLIError(
            f"{option} {path!r}: unknown output format {out.suffix or '(no suffix)'!r}; "
            f"use a file ending in {' or '.join(suffixes)}."
        )
    if out.is_dir():
        raise CLIError(f"{option} {path!r} is a directory; give a file name.")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise CLIError(
            f"{option} {path!r}: the directory {str(parent)!r} does not exist; create it first."
        )
    for src in inputs:
        if _same_file(out, src) and not force:
            raise CLIError(
                f"{option} {path!r} is the input file: refusing to overwrite it. Write to another "
                "file, or pass --force to replace the input (written atomically)."
            )
    return out


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file next to ``path``, then rename it onto ``path``.

    A symbolic link is followed, so the file it points to is replaced, not the link. The
    destination is untouched if ``write`` fails.
    """
    target = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes the file private (0600): give it the mode a plain open() would
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_FORMATS = {
    "h5ad": ("an AnnData", ".h5ad"),
    "h5mu": ("a MuData", ".h5mu"),
}


def _check_input(path: str, kind: str = "h5ad") -> Path:
    """Check that the input is an existing HDF5 file of the ``kind`` wanted, before reading it.

    ``kind`` is ``"h5ad"`` (one AnnData) or ``"h5mu"`` (a MuData).
    """
    what, suffix = _FORMATS[kind]
    p = Path(path)
    if not p.exists():
        raise CLIError(f"input file {path!r} does not exist.")
    if p.is_dir():
        raise CLIError(f"input {path!r} is a directory, not an {suffix} file.")
    if kind == "h5ad" and p.suffix.lower() == ".h5mu":
        raise CLIError(
            f"input {path!r} is a MuData file (.h5mu); this command reads one AnnData (.h5ad). "
            "Write the modality you want with mdata[mod].write_h5ad(...)."
        )
    if kind == "h5mu" and p.suffix.lower() == ".h5ad":
        raise CLIError(
            f"input {path!r} is an AnnData file (.h5ad); this command reads a MuData (.h5mu) "
            "with two or more modalities."
        )
    size = p.stat().st_size
    if size == 0:
        raise CLIError(f"input {path!r} is an empty file; expected {what} {suffix} file.")
    if not _is_hdf5(p, size):
        raise CLIError(f"input {path!r} is not an HDF5 file; expected {what} {suffix} file.")
    return p


def _is_hdf5(path: Path, size: int) -> bool:
    """Whether the HDF5 signature is at offset 0, 512, 1024, 2048, ... (after a user block)."""
    offset = 0
    with path.open("rb") as fh:
        while offset + len(_HDF5_SIGNATURE) <= size:
            fh.seek(offset)
            if fh.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else 2 * offset
    return False


def _encoding(path: Path) -> str:
    """The ``encoding-type`` attribute of an HDF5 file (``"anndata"``, ``"MuData"``, ...)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            encoding = f.attrs.get("encoding-type", "")
    except OSError as err:
        raise CLIError(
            f"cannot read input {str(path)!r}: it is a damaged or truncated HDF5 file "
            f"({_message(err)})."
        ) from err
    if isinstance(encoding, bytes):
        encoding = encoding.decode()
    return str(encoding).lower()


def _read_h5ad(path: Path):
    import anndata as ad

    if _encoding(path) == "mudata":
        raise CLIError(
            f"input {str(path)!r} holds a MuData object; this command reads one AnnData (.h5ad)."
        )
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # anndata raises many types for damaged files
        raise CLIError(
            f"cannot read input {str(path)!r} as AnnData: {_message(err)}. Is it a complete "
            ".h5ad file?"
        ) from err


def _read_h5mu(path: Path):
    import mudata as md

    if _encoding(path) != "mudata":
        raise CLIError(
            f"input {str(path)!r} is not a MuData file (it holds no MuData object); this "
            "command reads a .h5mu written by mudata."
        )
    try:
        return md.read_h5mu(path)
    except Exception as err:  # mudata and anndata raise many types for damaged files
        raise CLIError(
            f"cannot read input {str(path)!r} as MuData: {_message(err)}. Is it a complete "
            ".h5mu file?"
        ) from err


# ---------------------------------------------------------------------------------------------
# the grid


def _load_grid(args: argparse.Namespace, path: Path):
    """Read the input; build the grid from it unless it is one already (exit 2 on errors)."""
    from ._keys import Key

    adata = _read_h5ad(path)
    if Key.uns.grid in adata.uns:
        from ._validate import check_grid

        info = _usage(lambda: check_grid(adata))
        given = {"--context-key": args.context_key, "--perturbation-key": args.perturbation_key}
        recorded = {"--context-key": info.context_key, "--perturbation-key": info.perturbation_key}
        for option, value in given.items():
            if value is not None and value != recorded[option]:
                raise CLIError(
                    f"input {str(path)!r} is a grid built with {option} "
                    f"{recorded[option]!r}, not {value!r}: drop the grid options, or pass the "
                    "cells the grid was built from."
                )
        return adata
    if not args.context_key or not args.perturbation_key:
        raise CLIError(
            f"input {str(path)!r} is not a perturbation grid yet: pass --context-key and "
            "--perturbation-key (and --control, or --no-control) to build one."
        )
    from . import pp

    control = None if args.no_control else args.control
    return _usage(
        lambda: pp.perturbation_grid(
            adata,
            args.context_key,
            args.perturbation_key,
            control=control,
            layer=args.layer,
            min_cells=args.min_cells,
            dose_key=args.dose_key,
        )
    )


def _check_needs_control(grid, names: Sequence[str]) -> None:
    from ._validate import check_grid
    from .methods import get_method

    info = check_grid(grid)
    if info.control is None:
        needy = [n for n in names if get_method(n).needs_control]
        if needy:
            raise CLIError(
                f"method(s) {', '.join(map(repr, needy))} need a control perturbation, but the "
                "grid has none (--no-control); pass --control LABEL."
            )


def _check_something_to_impute(grid, path: Path) -> None:
    """Refuse a grid whose every non-control pair is measured: there is nothing to impute."""
    from ._keys import Key
    from ._validate import check_grid

    info = check_grid(grid)
    obs = grid.obs
    open_ = ~obs[Key.obs.measured].to_numpy(bool)
    if info.control is not None:
        open_ &= obs[info.perturbation_key].astype(str).to_numpy() != str(info.control)
    if not open_.any():
        raise CLIError(
            f"nothing to impute: every (context, perturbation) pair of {str(path)!r} is "
            "measured. To predict a context's perturbed cells from its control cells, hold "
            "them out with 'scimpute transfer' (see scimpute transfer --help); to score "
            "methods on the measured pairs, use 'scimpute benchmark'."
        )


def _run(fn: Callable[[], Any]) -> Any:
    """Run the work; an error in it is a failure of the run (exit status 1)."""
    try:
        return fn()
    except CLIError:
        raise
    except Exception as err:
        raise CLIError(f"{type(err).__name__}: {_message(err)}", EXIT_FAILURE) from err


# ---------------------------------------------------------------------------------------------
# commands


def _cmd_impute(args: argparse.Namespace) -> int:
    enable_compile_cache()  # persistent JAX cache (SCIMPUTE_JAX_CACHE=0 turns it off)
    src = _check_input(args.input)
    out = _check_output(args.output, "-o/--output", (".h5ad",), inputs=[src], force=args.force)
    params = _params(args.param)

    def check_method():
        from .methods import get_method

        return get_method(args.method).parse(params)

    _usage(check_method)
    grid = _load_grid(args, src)
    _check_needs_control(grid, [args.method])
    _check_something_to_impute(grid, src)

    from . import tl
    from ._keys import SOURCE_CONTROL_FILL, SOURCE_MEASURED, Key

    key = args.key_added or Key.uns.imputed(args.method)
    _run(
        lambda: tl.impute(
            grid,
            method=args.method,
            interval=args.interval,
            key_added=key,
            random_state=args.seed,
            **params,
        )
    )
    _run(lambda: _atomic_write(out, grid.write_h5ad))
    sources = grid.obs[Key.obs.source(key)].astype(str)
    imputed = sources[~sources.isin([SOURCE_MEASURED, SOURCE_CONTROL_FILL])]
    counts = {str(k): int(v) for k, v in imputed.value_counts().items()}
    print(f"imputed {len(imputed)} pairs with {args.method!r} (sources: {counts}); wrote {out}")
    rec = grid.uns[key]
    if AUTO_RECORD in rec:
        print(_auto_text(rec))
    if INTERVAL in rec:
        print(
            f"{rec[INTERVAL]['level']:.0%} conformal intervals in layers[{key + '_lower'!r}] / "
            f"[{key + '_upper'!r}]; predicted error and trust in obs[{key + '_error'!r}] / "
            f"[{key + '_trust'!r}]"
        )
    return 0


def _auto_text(rec) -> str:
    """One line on what ``auto`` chose and what produced the imputed pairs."""
    auto = rec[AUTO_RECORD]
    scores = ", ".join(
        f"{k} {v:.3f}" for k, v in sorted(auto["cv_scores"].items(), key=lambda kv: -kv[1])
    )
    if auto["rule"] == "grid":
        rule = f"one method for the grid: {auto['chosen']}"
        shares = _own_share_text(rec["fallbacks"], auto["chosen"])
    elif auto["rule"] == "stack":
        w = ", ".join(f"{k} {v:.2f}" for k, v in auto["weights"].items() if v > 0)
        rule, shares = f"a convex stack ({w})", _own_share_text(rec["fallbacks"], "stack")
    else:
        rule = "a method per pair"
        total = max(sum(rec["fallbacks"].values()), 1)
        shares = ", ".join(f"{k}: {v / total:.1%}" for k, v in sorted(rec["fallbacks"].items()))
    return (
        f"auto (nested CV on the measured pairs; inner median R2: {scores}) chose {rule}; "
        f"{shares}; best baseline: {auto['baseline']}"
    )


def _summary(scores, *, full: bool = False):
    """Summary of a cross-validation table, one row per method (best median R² first).

    The short form has :data:`SHORT_COLUMNS`; ``full`` keeps every column of
    :func:`scimpute.tl.summarize_cross_validation`. Both add :data:`OWN_SHARE`, the share of
    the hidden pairs each method predicted itself (its ``source``) rather than by a fallback.
    """
    from . import tl
    from ._keys import Key

    summary = tl.summarize_cross_validation(scores)
    methods = scores[Key.table.method].astype(str)
    own = (scores[Key.table.source].astype(str) == methods).groupby(methods).mean()
    summary[OWN_SHARE] = own.reindex(summary.index.astype(str)).to_numpy(float)
    if not full:
        summary = summary[[c for c in SHORT_COLUMNS if c in summary.columns]]
    summary.index.name = "method"
    return summary


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _format_table(table, markdown: bool = False) -> str:
    """The table as aligned text (pandas) or as a markdown table, floats with 3 decimals."""
    if not markdown:
        return table.reset_index().to_string(index=False, float_format=lambda v: f"{v:.3f}")
    header = [table.index.name or "", *map(str, table.columns)]
    rows = [
        [str(idx), *(_cell(v) for v in row)]
        for idx, row in zip(table.index, table.itertuples(index=False), strict=True)
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


#: printed under every summary table.
OWN_SHARE_NOTE = (
    f"{OWN_SHARE}: share of the hidden pairs each method predicted itself; the rest fell back "
    "to a simpler estimator (context_mean, perturbation_mean, global mean)."
)


def _write_table(summary, path: Path | None) -> None:
    """Print the summary (3 decimals) and write it to ``path`` (by its suffix), atomically."""
    print(_format_table(summary))
    print(OWN_SHARE_NOTE)
    if path is None:
        return
    suffix = path.suffix.lower()
    if suffix == ".csv":
        _atomic_write(path, summary.to_csv)
    elif suffix == ".json":
        _atomic_write(path, lambda p: summary.to_json(p, orient="index", indent=2))
    else:
        text = _format_table(summary, markdown=suffix == ".md")
        _atomic_write(path, lambda p: p.write_text(f"{text}\n\n{OWN_SHARE_NOTE}\n"))


def _cmd_benchmark(args: argparse.Namespace) -> int:
    src = _check_input(args.input)
    out = _check_output(args.output, "-o/--output", SUMMARY_SUFFIXES, inputs=[src])
    scores_out = _check_output(args.scores, "--scores", (".csv",), inputs=[src])
    if out is not None and scores_out is not None and _same_file(out, scores_out):
        raise CLIError("-o/--output and --scores name the same file; give two different files.")
    methods = _method_list(args.methods)
    params = _params(args.param)

    def check_methods():
        from .methods import get_method
        from .tl._cross_validate import _normalise_methods

        for name, p in _normalise_methods(methods, params).values():
            get_method(name).parse(p)

    _usage(check_methods)
    grid = _load_grid(args, src)
    _check_needs_control(grid, methods)

    from . import tl

    scores = _run(
        lambda: tl.cross_validate(
            grid,
            methods=methods,
            holdout=args.holdout,
            n_folds=args.n_folds,
            random_state=args.seed,
            progress=False,
            **params,
        )
    )
    summary = _run(lambda: _summary(scores, full=args.full))
    _run(lambda: _write_table(summary, out))
    if "auto" not in methods:
        print(_run(lambda: _auto_choice(grid, methods, args.seed)))
    if scores_out is not None:
        _run(lambda: _atomic_write(scores_out, lambda p: scores.to_csv(p, index=False)))
    return 0


def _auto_choice(grid, methods: Sequence[str], seed: int) -> str:
    """What ``auto`` over ``methods`` would choose on this grid (its inner CV, run once)."""
    from .tl._auto import AutoParams, fit_assessment
    from .tl._data import default_targets, to_grid_data

    data, _ = to_grid_data(grid)
    fit = fit_assessment(
        data, default_targets(data), None, AutoParams(candidates=tuple(methods)), random_state=seed
    )
    auto = fit.info[AUTO_RECORD]
    what = {"grid": f"one method: {auto.get('chosen')}", "stack": "a convex stack"}.get(
        auto["rule"], "a method per pair"
    )
    scores = ", ".join(f"{k} {v:.3f}" for k, v in auto["rule_scores"].items())
    return (
        f"auto over these methods (nested CV, 10 inner folds weighted like the real gaps) "
        f"would use {what} (rule scores, median R2: {scores}); run "
        "`scimpute impute` for it, or add auto to --methods to cross-validate it."
    )


def _stage_bar(total: int, enabled: bool):
    """A bar over the demo's steps that names the step running and shows no ETA.

    The first step includes JAX's compilation, so a rate-based estimate of the time left
    would be far off; the bar shows the steps done and the time elapsed only.
    """
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        disable=not enabled,
        bar_format="{desc} | step {n_fmt}/{total_fmt} | {elapsed} elapsed",
        leave=False,
    )


def _demo_grid(args: argparse.Namespace):
    """The CMap grid, or a simulated one (announced in one line) when no data are found.

    An explicit ``--data-dir`` without the CMap file is an error (exit status 2).
    """
    from . import datasets, pp

    try:
        adata = datasets.cmap(args.data_dir)
    except FileNotFoundError as err:
        if args.data_dir is not None:
            raise CLIError(f"--data-dir {args.data_dir!r}: {_message(err)}") from err
        from .datasets._loaders import _candidates

        tried = ", ".join(str(c) for c in _candidates(None))
        print(
            f"CMap data not found (looked in {tried}; set ${DATA_DIR_ENV} or --data-dir): "
            f"running the demo on a simulated {DEMO_SIMULATED[0]} x {DEMO_SIMULATED[1]} grid."
        )
        grid = datasets.simulate_grid(*DEMO_SIMULATED, noise=0.3, random_state=args.seed)
        return grid, "a simulated 20 x 30 grid (latent factor model)", DEMO_RUNTIME_SIMULATED
    grid = _usage(lambda: pp.perturbation_grid(adata, "cell_id", "pert_id", control="DMSO"))
    return grid, "CMap L1000, 24 cell lines x 20 compounds (real data)", DEMO_RUNTIME_CMAP


def _own_share_text(fallbacks: dict[str, int], method: str) -> str:
    """``"95.0% of 178 pairs by ntk itself, 5.0% by fallbacks (context_mean: 9)"``."""
    total = sum(fallbacks.values())
    own = fallbacks.get(method, 0)
    others = {k: v for k, v in fallbacks.items() if k != method}
    text = f"{own / max(total, 1):.1%} of {total} pairs by {method} itself"
    if others:
        listed = ", ".join(f"{k}: {v}" for k, v in sorted(others.items()))
        text += f", {1 - own / max(total, 1):.1%} by fallbacks ({listed})"
    return text


def _cmd_demo(args: argparse.Namespace) -> int:
    enable_compile_cache()  # persistent JAX cache (SCIMPUTE_JAX_CACHE=0 turns it off)
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out-dir {args.out_dir!r} exists and is not a directory.")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise CLIError(
            f"--data-dir {args.data_dir!r} is not a directory; point it at the folder holding "
            "the shared datasets, or leave it out to use $SCIMPUTE_DATA_DIR (a simulated grid "
            "when the data are not found)."
        )
    chosen = _method_list(args.methods) if args.methods else None

    def check_methods():
        from .methods import get_method

        for name in chosen or ():
            get_method(name)

    _usage(check_methods)

    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from . import methods, pl, tl
    from ._keys import Key

    if chosen is None:
        registered = set(methods.available_methods().index)
        chosen = [m for m in DEMO_METHODS if m in registered]
    grid, where, runtime = _demo_grid(args)
    _usage(lambda: out.mkdir(parents=True, exist_ok=True))
    n_meas = int(grid.obs[Key.obs.measured].sum())
    print(f"grid: {where}; {grid.n_obs} pairs, {n_meas} measured, {grid.n_vars} features")
    print(f"leave-one-out cross-validation of: {', '.join(chosen)}")
    if args.methods is None:
        print(f"this takes {runtime} (the first method includes JAX's compilation)")

    def work():
        bar = _stage_bar(len(chosen) + 2, args.progress)
        tables = []
        for name in chosen:
            bar.set_description_str(f"cross-validating {name} (leave-one-out)")
            tables.append(
                tl.cross_validate(
                    grid,
                    methods=[name],
                    holdout="leave_one_out",
                    random_state=args.seed,
                    key_added=None,
                    progress=False,
                )
            )
            bar.update()
        scores = pd.concat(tables, ignore_index=True)
        summary = _summary(scores)
        best = str(summary.index[0])
        bar.set_description_str(f"imputing the grid with auto over {', '.join(chosen)}")
        tl.impute(
            grid, method="auto", candidates=tuple(chosen), key_added="imputed",
            random_state=args.seed,
        )  # fmt: skip
        bar.update()
        bar.set_description_str("drawing the figures")
        fig_path = out / "demo_cross_validation.png"
        pl.cross_validation(scores, metric="r2", clip=(-1, 1), save=fig_path, show=False)
        pl.grid(grid, key="imputed", save=out / "demo_grid.png", show=False)
        _atomic_write(out / "demo_grid.h5ad", grid.write_h5ad)
        bar.update()
        bar.close()
        _write_table(summary, out / "demo_cross_validation.md")
        cv_share = summary.loc[best, OWN_SHARE]
        rest = ", the rest by fallbacks" if cv_share < 1 else ""
        print(
            f"highest median R² in leave-one-out: {best} ({summary.loc[best, 'median_r2']:.3f}; "
            f"{cv_share:.1%} of its held-out pairs predicted by {best} itself{rest})."
        )
        print(f"imputed grid: {_auto_text(grid.uns['imputed'])} -> {out / 'demo_grid.h5ad'}")
        print(f"figures -> {fig_path}, {out / 'demo_grid.png'}")

    _run(work)
    return 0


def _cmd_transfer(args: argparse.Namespace) -> int:
    src = _check_input(args.input)
    out = _check_output(args.output, "-o/--output", (".h5ad",), inputs=[src], force=args.force)
    fit = {**_params(args.param), "model": args.model, "progress": args.progress}
    if args.max_epochs is not None:
        fit["max_epochs"] = args.max_epochs

    def check_params():
        from .tl._transfer._params import transfer_params

        transfer_params(fit)

    _usage(check_params)
    adata = _read_h5ad(src)
    labels = _usage(lambda: _transfer_labels(adata, args))
    ctx, pert = labels
    answer = (ctx == args.target_context) & (pert == args.target_perturbation)
    if answer.any():
        if not args.holdout:
            raise CLIError(
                f"input {str(src)!r} holds {int(answer.sum())} cells of "
                f"({args.target_context!r}, {args.target_perturbation!r}), the cells to predict: "
                "the model would be trained on the answer. Pass --holdout to remove them "
                "before fitting, or remove them from the input."
            )
        adata = adata[~answer].copy()

    from . import tl
    from ._keys import TRANSFER_KEY

    adata.uns.pop(TRANSFER_KEY, None)  # a model stored in the input may have seen the answer

    def work():
        return tl.transfer(
            adata,
            args.context_key,
            args.perturbation_key,
            control=args.control,
            target_context=args.target_context,
            target_perturbation=args.target_perturbation,
            random_state=args.seed,
            **fit,
        )

    predicted = _run(work)
    _run(lambda: _atomic_write(out, predicted.write_h5ad))
    held = f" ({int(answer.sum())} measured cells held out)" if answer.any() else ""
    print(
        f"predicted {predicted.n_obs} cells of ({args.target_context!r}, "
        f"{args.target_perturbation!r}) from its control cells with the {args.model}{held}; "
        f"wrote {out}"
    )
    return 0


def _transfer_labels(adata, args: argparse.Namespace):
    """Context and perturbation labels of the cells, with the targets checked (bad input)."""
    from ._keys import COMBINATION_SEP
    from .tl._transfer._data import cell_labels

    ctx, pert = cell_labels(adata, args.context_key, args.perturbation_key, args.control)
    target, label = args.target_context, args.target_perturbation
    if target not in set(ctx):
        raise CLIError(f"--target-context {target!r} does not occur in obs[{args.context_key!r}].")
    if not ((ctx == target) & (pert == args.control)).any():
        raise CLIError(
            f"--target-context {target!r} has no control cells ({args.control!r}): there is "
            "nothing to move."
        )
    if label == args.control:
        raise CLIError("--target-perturbation is the control; name a perturbation.")
    elsewhere = set(pert[ctx != target])
    parts = [label] if label in elsewhere else label.split(COMBINATION_SEP)
    if not all(p in elsewhere for p in parts):
        raise CLIError(
            f"--target-perturbation {label!r} is measured in no context other than "
            f"{target!r}: there is no effect to transfer."
        )
    return ctx, pert


def _cmd_integrate(args: argparse.Namespace) -> int:
    src = _check_input(args.input, "h5mu")
    out = _check_output(args.output, "-o/--output", (".h5mu",), inputs=[src], force=args.force)
    params = _params(args.param)
    if args.max_epochs is not None:
        params["max_epochs"] = args.max_epochs
    modalities = _method_list(args.modalities, "--modalities") if args.modalities else None

    def check_params():
        from .mm._params import IntegrateParams

        IntegrateParams.from_kwargs("mm.integrate", params)

    _usage(check_params)
    mdata = _read_h5mu(src)

    def check_modalities():
        from .mm._data import check_modalities

        return check_modalities(mdata, modalities)

    mods = _usage(check_modalities)

    from . import mm

    _run(
        lambda: mm.integrate(
            mdata,
            modalities=mods,
            key_added=args.key_added,
            random_state=args.seed,
            progress=args.progress,
            **params,
        )
    )
    _run(lambda: _atomic_write(out, mdata.write))
    shape = mdata.obsm[args.key_added].shape
    print(
        f"integrated {', '.join(mods)}: shared latent ({shape[0]} cells x {shape[1]}) in "
        f"obsm[{args.key_added!r}]; wrote {out}"
    )
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .methods import available_methods

    table = available_methods()
    for name, row in table.iterrows():
        print(f"{name:26s} {row['description']}")
        if row["parameters"]:
            print(f"{'':26s} parameters: {row['parameters']}")
    return 0


# ---------------------------------------------------------------------------------------------
# the parser


class _Formatter(argparse.HelpFormatter):
    """Wrap prose but keep indented example lines; show each option's default when it has one."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for para in text.splitlines():
            if not para.strip() or para.startswith(" ") or para.endswith(":"):
                lines.append(indent + para)
            else:
                lines.append(
                    textwrap.fill(para, width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n".join(lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" in text
            or "(default" in text
            or not action.option_strings
            or action.nargs == 0  # flags: --force, --no-progress
            or action.default is None
            or action.default is False
            or action.default is argparse.SUPPRESS
        ):
            return text
        return text + " (default: %(default)s)"


def _version() -> str:
    from . import __version__

    return __version__


def _grid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input", help="AnnData (.h5ad) of cells or profiles, or a grid written by scimpute"
    )
    g = p.add_argument_group("building the grid (when INPUT holds cells or profiles)")
    g.add_argument("--context-key", help="obs column of the context (cell type, cell line)")
    g.add_argument("--perturbation-key", help="obs column of the perturbation")
    g.add_argument("--control", default="control", help="label of the control perturbation")
    g.add_argument(
        "--no-control", action="store_true", help="the data are effects already (no control)"
    )
    g.add_argument("--layer", default=None, help="layer to aggregate instead of X")
    g.add_argument(
        "--min-cells",
        type=_int_at_least(1),
        default=1,
        help="fewest cells (rows) for a pair to count as measured",
    )
    g.add_argument("--dose-key", default=None, help="obs column of doses (labels 'drug@dose')")


def _param_arg(p: argparse.ArgumentParser, what: str = "method parameter") -> None:
    p.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help=f"{what}; the value is parsed as JSON or taken as a string (repeatable)",
    )


def _seed_arg(p: argparse.ArgumentParser, what: str = "folds and methods") -> None:
    p.add_argument("--seed", type=_int_at_least(0), default=0, help=f"random seed of {what}")


def _progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="do not show progress bars (on stderr)",
    )


def _output_args(p: argparse.ArgumentParser, what: str) -> None:
    """``-o/--output`` (required) and ``--force``."""
    p.add_argument("-o", "--output", required=True, help=what)
    p.add_argument(
        "--force",
        action="store_true",
        help="allow OUTPUT to be the input file (replaced atomically)",
    )


def _training_args(g, defaults: str, param_help: str, seed_help: str) -> None:
    """``--max-epochs``, ``--param``, ``--seed`` and ``--no-progress`` of a trained model."""
    g.add_argument(
        "--max-epochs",
        type=_int_at_least(1),
        default=None,
        help=f"most training epochs (default: {defaults}, with early stopping)",
    )
    _param_arg(g, param_help)
    _seed_arg(g, seed_help)
    _progress_arg(g)


def build_parser() -> argparse.ArgumentParser:
    """The ``scimpute`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="scimpute",
        description="Causal imputation of unmeasured (context, perturbation) responses.",
        epilog="Run 'scimpute <command> --help' for a command's options and an example.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    p = sub.add_parser(
        "impute",
        help="impute every unmeasured pair of a grid",
        description=(
            "Build the (context x perturbation) grid of INPUT (or read the grid it holds), "
            "predict every unmeasured pair with one method, and write the grid to OUTPUT.\n"
            "The input file is never overwritten unless --force is given. A grid whose every "
            "pair is measured (e.g. single cells of every cell type x condition) has nothing "
            "to impute: use 'scimpute transfer' to predict held-out cells."
        ),
        epilog=(
            "example:\n"
            "  scimpute impute cells.h5ad --context-key cell_type --perturbation-key drug \\\n"
            "      --control DMSO --method additive -o grid_imputed.h5ad"
        ),
        formatter_class=_Formatter,
    )
    _grid_args(p)
    m = p.add_argument_group("imputation")
    m.add_argument(
        "--method",
        default="auto",
        help=(
            "registered method (list them: scimpute methods); auto (default) picks among "
            "every applicable method by nested cross-validation"
        ),
    )
    m.add_argument(
        "--interval",
        type=float,
        default=None,
        help="nominal coverage of conformal intervals (default: 0.9 for auto, none otherwise)",
    )
    _param_arg(m)
    m.add_argument(
        "--key-added",
        default=None,
        help="key of the results in .layers, .obs and .uns (default: imputed_<method>)",
    )
    _seed_arg(m)
    _output_args(p, "output file (.h5ad)")
    p.set_defaults(func=_cmd_impute)

    p = sub.add_parser(
        "benchmark",
        help="cross-validate methods on a grid and print a summary",
        description=(
            "Hide measured pairs fold by fold, impute them with each method, score the "
            "predictions and print one summary row per method (best median R² first): "
            "n_pairs, median R², median relative MSE (vs context_mean, < 1 is better) and "
            "own_share, the share of hidden pairs the method predicted itself rather than by "
            "a fallback. --full shows every column."
        ),
        epilog=(
            "example:\n"
            "  scimpute benchmark grid.h5ad --methods context_mean,additive \\\n"
            "      --holdout contexts --n-folds 5 -o summary.md --scores pairs.csv"
        ),
        formatter_class=_Formatter,
    )
    _grid_args(p)
    b = p.add_argument_group("cross-validation")
    b.add_argument(
        "--methods",
        default=BENCHMARK_METHODS,
        help="comma-separated registered methods to compare (list them: scimpute methods)",
    )
    b.add_argument(
        "--holdout",
        default="leave_one_out",
        choices=HOLDOUTS,
        metavar="HOLDOUT",
        help=(
            "what is hidden in each fold: leave_one_out (one pair), random (random pairs), "
            "contexts or perturbations (every pair of a group of contexts / perturbations)"
        ),
    )
    b.add_argument(
        "--n-folds",
        type=_int_at_least(2),
        default=5,
        help="folds of the random and grouped hold-outs (leave_one_out: one per pair)",
    )
    _param_arg(b)
    _seed_arg(b)
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="summary table file (.md or .txt: text, .csv, .json); printed in any case",
    )
    p.add_argument("--scores", default=None, help="per-pair scores file (.csv)")
    p.add_argument(
        "--full",
        action="store_true",
        help="every summary column (medians and means of all metrics), not the short table",
    )
    p.set_defaults(func=_cmd_benchmark)

    p = sub.add_parser(
        "demo",
        help="end-to-end demo on CMap (or a simulated grid)",
        description=(
            "Cross-validate methods leave-one-out on the CMap L1000 grid, impute the grid "
            "with the method of highest median R² and write a table, two figures and the "
            "imputed grid into OUT_DIR. The table gives, per method, the share of pairs it "
            "predicted itself (own_share) rather than by a fallback.\n"
            f"The data are looked for in --data-dir, else in ${DATA_DIR_ENV}, else in "
            "../shared/data; when neither option nor variable finds them the demo says so "
            "in one line and runs on a simulated grid. A --data-dir without the data is an "
            "error.\n"
            f"Runtime with the default methods: {DEMO_RUNTIME_CMAP} on CMap, "
            f"{DEMO_RUNTIME_SIMULATED} on the simulated grid."
        ),
        epilog="example:\n  scimpute demo --out-dir demo --methods context_mean,additive",
        formatter_class=_Formatter,
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"directory of the shared datasets (default: ${DATA_DIR_ENV}, then ../shared/data, "
        "then a simulated grid)",
    )
    p.add_argument("--out-dir", default="scimpute_demo", help="directory of the results")
    p.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated methods to compare (default: {', '.join(DEMO_METHODS)})",
    )
    _seed_arg(p)
    _progress_arg(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "transfer",
        help="predict a context's perturbed cells from its control cells",
        description=(
            "Train an autoencoder (or scGen's VAE) on the cells of INPUT, move the control "
            "cells of --target-context by the latent shift of --target-perturbation measured "
            "in the other contexts, decode them and write the predicted cells to OUTPUT "
            "(one per control cell of the target; obs 'predicted' and 'source_cell').\n"
            "The model must not see the cells it predicts: INPUT should not contain cells of "
            "(target context, target perturbation). If it does, the command stops, unless "
            "--holdout removes them before training. A model stored in INPUT is not used; "
            "a new one is trained."
        ),
        epilog=(
            "example:\n"
            "  scimpute transfer kang.h5ad --context-key cell_type --perturbation-key "
            "condition \\\n"
            "      --control control --target-context 'CD4 T cells' \\\n"
            "      --target-perturbation stimulated --holdout -o cd4_predicted.h5ad"
        ),
        formatter_class=_Formatter,
    )
    p.add_argument("input", help="AnnData (.h5ad) of cells x genes, log-normalised")
    g = p.add_argument_group("cells")
    g.add_argument("--context-key", required=True, help="obs column of the context (cell type)")
    g.add_argument(
        "--perturbation-key", required=True, help="obs column of the perturbation (condition)"
    )
    g.add_argument("--control", default="control", help="label of the control cells")
    g.add_argument("--target-context", required=True, help="context whose cells to predict")
    g.add_argument(
        "--target-perturbation",
        required=True,
        help="perturbation to transfer (measured in other contexts; 'A+B': sum of shifts)",
    )
    g.add_argument(
        "--holdout",
        action="store_true",
        help="remove the target's perturbed cells from INPUT before training",
    )
    t = p.add_argument_group("model")
    t.add_argument(
        "--model",
        default="autoencoder",
        choices=("autoencoder", "vae"),
        help="autoencoder (deterministic) or vae (scGen's)",
    )
    _training_args(
        t,
        "the model's",
        "fit_transfer parameter, e.g. width=64 or learning_rate=0.001",
        "the split and of training",
    )
    _output_args(p, "output file of predicted cells (.h5ad)")
    p.set_defaults(func=_cmd_transfer)

    p = sub.add_parser(
        "integrate",
        help="shared latent space of the modalities of a MuData",
        description=(
            "Train a cross-modal autoencoder on the modalities of INPUT (cells with the same "
            "obs name in two modalities are anchors) and write the MuData with the shared "
            "latent of every cell in .obsm[KEY] (per modality in mdata[m].obsm[KEY]) and the "
            "record in .uns[KEY] to OUTPUT. Each modality should be log-normalised "
            "(scimpute.mm.normalize). The input file is never overwritten unless --force "
            "is given."
        ),
        epilog=(
            "example:\n  scimpute integrate citeseq.h5mu --modalities rna,prot -o integrated.h5mu"
        ),
        formatter_class=_Formatter,
    )
    p.add_argument("input", help="MuData (.h5mu) with two or more modalities")
    g = p.add_argument_group("integration")
    g.add_argument(
        "--modalities",
        default=None,
        help="comma-separated modalities to integrate (default: all)",
    )
    g.add_argument(
        "--key-added",
        default=MM_KEY,
        help="key of the shared latent in .obsm and of the record in .uns",
    )
    _training_args(
        g,
        "mm.integrate's",
        "mm.integrate parameter, e.g. n_latent=16 or batch_size=64",
        "initialisation, anchors and batches",
    )
    _output_args(p, "output file (.h5mu)")
    p.set_defaults(func=_cmd_integrate)

    _add_rank_parser(sub)

    p = sub.add_parser(
        "methods",
        help="list the registered methods",
        description="List the registered imputation methods, their parameters and defaults.",
        epilog="example:\n  scimpute methods",
        formatter_class=_Formatter,
    )
    p.set_defaults(func=_cmd_methods)
    return parser


# ---------------------------------------------------------------------------------------------
# rank: which pair to measure next (tl.rank_experiments)

#: ``--method`` value of ``scimpute rank`` that runs no imputation (the surrogate's variance).
RANK_NO_METHOD = "none"


def _cmd_rank(args: argparse.Namespace) -> int:
    """Rank the unmeasured pairs of a grid; print the top ones; optionally write the grid."""
    src = _check_input(args.input)
    out = _check_output(args.output, "-o/--output", (".h5ad",), inputs=[src], force=args.force)
    csv = _check_output(args.csv, "--csv", (".csv",), inputs=[src])
    method = None if args.method.lower() == RANK_NO_METHOD else args.method
    params = _params(args.param)
    if method is None and params:
        raise CLIError(f"--param needs a method; --method {RANK_NO_METHOD} runs none.")

    def check_method():
        from .methods import get_method

        if method is not None and args.key is None:
            get_method(method).parse(params)

    _usage(check_method)
    grid = _load_grid(args, src)
    _check_something_to_impute(grid, src)
    if method is not None and args.key is None:
        _check_needs_control(grid, [method])

    from . import tl

    # bad key, candidates or key_added are bad input (2); anything else fails the run (1)
    _usage(
        lambda: tl.rank_experiments(
            grid,
            method=method,
            n=args.n,
            key=args.key,
            candidates=args.candidates,
            key_added=args.key_added,
            random_state=args.seed,
            **params,
        )
    )
    from ._keys import RANK_KEY

    key = args.key_added or RANK_KEY
    table = tl.top_pairs(grid, key=key, n=args.n)[["context", "perturbation", "rank", "gain"]]
    record = grid.uns[key]
    print(
        f"top {len(table)} of {record['n_candidates']} unmeasured pairs to measure next "
        f"(gain: expected error removed from the other unmeasured pairs; error from "
        f"{record['error_from']}):"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if csv is not None:
        _run(lambda: _atomic_write(csv, lambda p: table.to_csv(p, index=False)))
    if out is not None:
        _run(lambda: _atomic_write(out, grid.write_h5ad))
        print(f"wrote the ranking (obs {key}_rank, {key}_gain; uns {key}) to {out}")
    return 0


def _add_rank_parser(sub) -> None:
    p = sub.add_parser(
        "rank",
        help="rank the unmeasured pairs: which to measure next",
        description=(
            "Rank the unmeasured pairs of INPUT by the expected reduction of the error of the "
            "other unmeasured pairs if each were measured (scimpute.tl.rank_experiments: a "
            "Gaussian-process surrogate of the grid fitted to its measured pairs, each pair "
            "weighted by the imputation's predicted error) and print the top N (context, "
            "perturbation, rank, gain). The top N are chosen jointly, so they do not spend "
            "two measurements on the same gap. INPUT is only read; -o writes the grid with "
            "the ranking to another file (the input only with --force)."
        ),
        epilog=(
            "example:\n"
            "  scimpute rank grid.h5ad -n 10\n"
            "  scimpute rank grid.h5ad -n 20 --method none --csv next.csv -o ranked.h5ad"
        ),
        formatter_class=_Formatter,
    )
    _grid_args(p)
    r = p.add_argument_group("ranking")
    r.add_argument(
        "-n", type=_int_at_least(1), default=10, help="number of pairs to choose and print"
    )
    r.add_argument(
        "--method",
        default="auto",
        help=(
            "imputation method whose predicted error per pair weights the ranking "
            f"('{RANK_NO_METHOD}': no imputation, the surrogate's own variance)"
        ),
    )
    r.add_argument(
        "--key",
        default=None,
        help="use obs KEY_error of an earlier impute run in INPUT instead of imputing",
    )
    r.add_argument(
        "--candidates",
        default=None,
        help="boolean obs column marking the pairs that can be measured (default: all)",
    )
    r.add_argument(
        "--key-added",
        default=None,
        help="key of the ranking in .obs and .uns (default: acquisition)",
    )
    _param_arg(r)
    _seed_arg(r, "the imputation and the surrogate's fit")
    p.add_argument("--csv", default=None, help="also write the top pairs to this file (.csv)")
    p.add_argument("-o", "--output", default=None, help="write the ranked grid (.h5ad)")
    p.add_argument(
        "--force", action="store_true", help="allow OUTPUT to be the input file (atomically)"
    )
    p.set_defaults(func=_cmd_rank)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scimpute`` command.

    Parameters
    ----------
    argv
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    The exit status: 0 on success, 2 for bad usage or input, 1 for a failure during the run.
    Errors are printed as ``scimpute <command>: error: <message>`` on stderr.

    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or argparse's usage error (status 2)
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except CLIError as err:
        print(f"scimpute {args.command}: error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print(f"scimpute {args.command}: error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a failure outside the checked steps: still one line
        print(
            f"scimpute {args.command}: error: {type(err).__name__}: {_message(err)}",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
