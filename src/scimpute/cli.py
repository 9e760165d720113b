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
BENCHMARK_METHODS = "context_mean,perturbation_mean,two_way_mean,additive"
HOLDOUTS = ("leave_one_out", "random", "contexts", "perturbations")
#: suffixes of ``benchmark -o``: how the summary table is written.
SUMMARY_SUFFIXES = (".md", ".txt", ".csv", ".json")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


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


def _method_list(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise CLIError(f"--methods names no method (got {text!r}); give a comma-separated list.")
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


def _check_input(path: str) -> Path:
    """Check that the input is an existing ``.h5ad`` (HDF5) file, before reading it."""
    p = Path(path)
    if not p.exists():
        raise CLIError(f"input file {path!r} does not exist.")
    if p.is_dir():
        raise CLIError(f"input {path!r} is a directory, not an .h5ad file.")
    if p.suffix.lower() == ".h5mu":
        raise CLIError(
            f"input {path!r} is a MuData file (.h5mu); this command reads one AnnData (.h5ad). "
            "Write the modality you want with mdata[mod].write_h5ad(...)."
        )
    size = p.stat().st_size
    if size == 0:
        raise CLIError(f"input {path!r} is an empty file; expected an AnnData .h5ad file.")
    if not _is_hdf5(p, size):
        raise CLIError(f"input {path!r} is not an HDF5 file; expected an AnnData .h5ad file.")
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


def _read_h5ad(path: Path):
    import anndata as ad
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
    if str(encoding).lower() == "mudata":
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
    src = _check_input(args.input)
    out = _check_output(args.output, "-o/--output", (".h5ad",), inputs=[src], force=args.force)
    params = _params(args.param)

    def check_method():
        from .methods import get_method

        return get_method(args.method).parse(params)

    _usage(check_method)
    grid = _load_grid(args, src)
    _check_needs_control(grid, [args.method])

    from . import tl
    from ._keys import SOURCE_CONTROL_FILL, SOURCE_MEASURED, Key

    key = args.key_added or Key.uns.imputed(args.method)
    _run(
        lambda: tl.impute(grid, method=args.method, key_added=key, random_state=args.seed, **params)
    )
    _run(lambda: _atomic_write(out, grid.write_h5ad))
    sources = grid.obs[Key.obs.source(key)].astype(str)
    imputed = sources[~sources.isin([SOURCE_MEASURED, SOURCE_CONTROL_FILL])]
    counts = {str(k): int(v) for k, v in imputed.value_counts().items()}
    print(f"imputed {len(imputed)} pairs with {args.method!r} (sources: {counts}); wrote {out}")
    return 0


def _write_table(summary, path: Path | None) -> None:
    text = summary.to_markdown() if _has_tabulate() else summary.to_string()
    print(text)
    if path is None:
        return
    suffix = path.suffix.lower()
    if suffix == ".csv":
        _atomic_write(path, summary.to_csv)
    elif suffix == ".json":
        _atomic_write(path, lambda p: summary.to_json(p, orient="index", indent=2))
    else:
        _atomic_write(path, lambda p: p.write_text(text + "\n"))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


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
    summary = _run(lambda: tl.summarize_cross_validation(scores))
    _run(lambda: _write_table(summary, out))
    if scores_out is not None:
        _run(lambda: _atomic_write(scores_out, lambda p: scores.to_csv(p, index=False)))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out-dir {args.out_dir!r} exists and is not a directory.")
    chosen = _method_list(args.methods) if args.methods else None

    def check_methods():
        from .methods import get_method

        for name in chosen or ():
            get_method(name)

    _usage(check_methods)

    import matplotlib

    matplotlib.use("Agg")
    from . import datasets, methods, pl, pp, tl
    from ._keys import Key

    if chosen is None:
        registered = set(methods.available_methods().index)
        chosen = [m for m in DEMO_METHODS if m in registered]
    _usage(lambda: out.mkdir(parents=True, exist_ok=True))
    try:
        adata = datasets.cmap(args.data_dir)
        grid = pp.perturbation_grid(adata, "cell_id", "pert_id", control="DMSO")
        where = "CMap L1000, 24 cell lines x 20 compounds (real data)"
    except FileNotFoundError as err:
        print(f"{err}\n-> running the demo on a simulated grid instead.")
        grid = datasets.simulate_grid(20, 30, 200, noise=0.3, random_state=args.seed)
        where = "a simulated 20 x 30 grid (latent factor model)"
    n_meas = int(grid.obs[Key.obs.measured].sum())
    print(f"grid: {where}; {grid.n_obs} pairs, {n_meas} measured, {grid.n_vars} features")
    print(f"leave-one-out cross-validation of: {', '.join(chosen)}")

    def work():
        scores = tl.cross_validate(
            grid, methods=chosen, holdout="leave_one_out", random_state=args.seed, progress=False
        )
        summary = tl.summarize_cross_validation(scores)
        cols = [
            "n_pairs",
            "median_r2",
            "median_cosine_effect",
            "median_relative_mse",
            "frac_better_than_context_mean",
        ]
        _write_table(summary[cols].round(3), out / "demo_cross_validation.md")
        best = summary.index[0]
        tl.impute(grid, method=best, key_added="imputed", random_state=args.seed)
        fig_path = out / "demo_cross_validation.png"
        pl.cross_validation(scores, metric="r2", clip=(-1, 1), save=fig_path, show=False)
        pl.grid(grid, key="imputed", save=out / "demo_grid.png", show=False)
        _atomic_write(out / "demo_grid.h5ad", grid.write_h5ad)
        print(
            f"best method by median R2: {best}; imputed grid -> {out / 'demo_grid.h5ad'}; "
            f"figures -> {fig_path}, {out / 'demo_grid.png'}"
        )

    _run(work)
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


def _param_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="method parameter, value parsed as JSON or taken as a string (repeatable)",
    )


def _seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed", type=_int_at_least(0), default=0, help="random seed of folds and methods"
    )


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
            "The input file is never overwritten unless --force is given."
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
        "--method", required=True, help="registered method (list them: scimpute methods)"
    )
    _param_arg(m)
    m.add_argument(
        "--key-added", default=None, help="key of the results (default: imputed_<method>)"
    )
    _seed_arg(m)
    p.add_argument("-o", "--output", required=True, help="output file (.h5ad)")
    p.add_argument(
        "--force",
        action="store_true",
        help="allow OUTPUT to be the input file (replaced atomically)",
    )
    p.set_defaults(func=_cmd_impute)

    p = sub.add_parser(
        "benchmark",
        help="cross-validate methods on a grid and print a summary",
        description=(
            "Hide measured pairs fold by fold, impute them with each method, score the "
            "predictions and print one summary row per method (best first)."
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
        help="comma-separated registered methods to compare",
    )
    b.add_argument(
        "--holdout",
        default="leave_one_out",
        choices=HOLDOUTS,
        metavar="HOLDOUT",
        help=f"what is hidden in each fold: {', '.join(HOLDOUTS)}",
    )
    b.add_argument(
        "--n-folds",
        type=_int_at_least(2),
        default=5,
        help="folds of the random and grouped hold-outs",
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
    p.set_defaults(func=_cmd_benchmark)

    p = sub.add_parser(
        "demo",
        help="end-to-end demo on CMap (or a simulated grid)",
        description=(
            "Cross-validate methods on the CMap L1000 grid (a simulated grid when the data "
            "are not found), impute it with the best one and write a table, two figures and "
            "the imputed grid into OUT_DIR."
        ),
        epilog="example:\n  scimpute demo --out-dir demo --methods context_mean,additive",
        formatter_class=_Formatter,
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory of the shared datasets (default: $SCIMPUTE_DATA_DIR)",
    )
    p.add_argument("--out-dir", default="scimpute_demo", help="directory of the results")
    p.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated methods to compare (default: {','.join(DEMO_METHODS)})",
    )
    _seed_arg(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "methods",
        help="list the registered methods",
        description="List the registered imputation methods, their parameters and defaults.",
        epilog="example:\n  scimpute methods",
        formatter_class=_Formatter,
    )
    p.set_defaults(func=_cmd_methods)
    return parser


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
