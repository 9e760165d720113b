"""Command line: ``scimpute impute``, ``scimpute benchmark``, ``scimpute demo``, ``scimpute methods``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

DEMO_METHODS = (
    "context_mean",
    "perturbation_mean",
    "two_way_mean",
    "additive",
    "synthetic_interventions",
    "ntk",
)


def _value(text: str):
    """Parse a ``--param`` value: JSON (numbers, true/false/null, lists) or a plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _params(items: Sequence[str] | None) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--param expects NAME=VALUE, got {item!r}.")
        k, v = item.split("=", 1)
        out[k.strip()] = _value(v.strip())
    return out


def _load_grid(args):
    import anndata as ad

    from . import pp
    from ._keys import Key

    path = Path(args.input)
    if not path.is_file():
        raise SystemExit(f"Input file {str(path)!r} does not exist.")
    adata = ad.read_h5ad(path)
    if Key.uns.grid in adata.uns:
        return adata
    if not args.context_key or not args.perturbation_key:
        raise SystemExit(
            "The input is not a perturbation grid yet: pass --context-key and "
            "--perturbation-key (and --control, or --no-control) to build one."
        )
    control = None if args.no_control else args.control
    return pp.perturbation_grid(
        adata,
        args.context_key,
        args.perturbation_key,
        control=control,
        layer=args.layer,
        min_cells=args.min_cells,
        dose_key=args.dose_key,
    )


def _grid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="AnnData (.h5ad) of cells / profiles, or a grid made earlier")
    p.add_argument("--context-key", help="obs column of the context (cell type, cell line)")
    p.add_argument("--perturbation-key", help="obs column of the perturbation")
    p.add_argument("--control", default="control", help="control label (default: control)")
    p.add_argument("--no-control", action="store_true", help="data are effects already")
    p.add_argument("--layer", default=None, help="layer to aggregate instead of X")
    p.add_argument("--min-cells", type=int, default=1, help="cells needed to call a pair measured")
    p.add_argument("--dose-key", default=None, help="obs column of doses")


def _cmd_impute(args) -> int:
    from . import tl

    grid = _load_grid(args)
    params = _params(args.param)
    tl.impute(grid, method=args.method, key_added=args.key_added, random_state=args.seed, **params)
    key = args.key_added or f"imputed_{args.method}"
    grid.write_h5ad(args.output)
    rec = grid.uns[key]
    print(
        f"imputed {rec['n_imputed']} pairs with {args.method!r} "
        f"(sources: {dict(rec['fallbacks'])}); wrote {args.output}"
    )
    return 0


def _write_table(summary, out: str | None) -> None:
    text = summary.to_markdown() if _has_tabulate() else summary.to_string()
    print(text)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".csv":
            summary.to_csv(path)
        elif path.suffix == ".json":
            summary.to_json(path, orient="index", indent=2)
        else:
            path.write_text(text + "\n")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def _cmd_benchmark(args) -> int:
    from . import tl

    grid = _load_grid(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    scores = tl.cross_validate(
        grid,
        methods=methods,
        holdout=args.holdout,
        n_folds=args.n_folds,
        random_state=args.seed,
        **_params(args.param),
    )
    summary = tl.summarize_cross_validation(scores)
    _write_table(summary, args.output)
    if args.scores:
        scores.to_csv(args.scores, index=False)
    return 0


def _cmd_demo(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from . import datasets, methods, pl, pp, tl

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        adata = datasets.cmap(args.data_dir)
        grid = pp.perturbation_grid(adata, "cell_id", "pert_id", control="DMSO")
        where = "CMap L1000, 24 cell lines x 20 compounds (real data)"
    except FileNotFoundError as err:
        print(f"{err}\n-> running the demo on a simulated grid instead.")
        grid = datasets.simulate_grid(20, 30, 200, noise=0.3, random_state=args.seed)
        where = "a simulated 20 x 30 grid (latent factor model)"
    registered = set(methods.available_methods().index)
    chosen = [m for m in (args.methods.split(",") if args.methods else DEMO_METHODS) if m]
    unknown = [m for m in chosen if m not in registered]
    if args.methods and unknown:
        raise SystemExit(f"Unknown method(s) {unknown}; available: {sorted(registered)}.")
    chosen = [m for m in chosen if m in registered]
    n_meas = int(grid.obs["measured"].sum())
    print(f"grid: {where}; {grid.n_obs} pairs, {n_meas} measured, {grid.n_vars} features")
    print(f"leave-one-out cross-validation of: {', '.join(chosen)}")
    scores = tl.cross_validate(
        grid, methods=chosen, holdout="leave_one_out", random_state=args.seed
    )
    summary = tl.summarize_cross_validation(scores)
    cols = [
        "n_pairs",
        "median_r2",
        "median_cosine_effect",
        "median_relative_mse",
        "frac_better_than_context_mean",
    ]
    _write_table(summary[cols].round(3), str(out / "demo_cross_validation.md"))
    best = summary.index[0]
    tl.impute(grid, method=best, key_added="imputed", random_state=args.seed)
    fig_path = out / "demo_cross_validation.png"
    pl.cross_validation(scores, metric="r2", clip=(-1, 1), save=fig_path)
    pl.grid(grid, key="imputed", save=out / "demo_grid.png")
    grid.write_h5ad(out / "demo_grid.h5ad")
    print(
        f"best method by median R2: {best}; imputed grid -> {out / 'demo_grid.h5ad'}; "
        f"figures -> {fig_path}, {out / 'demo_grid.png'}"
    )
    return 0


def _cmd_methods(args) -> int:
    from .methods import available_methods

    table = available_methods()
    for name, row in table.iterrows():
        print(f"{name:26s} {row['description']}")
        if row["parameters"]:
            print(f"{'':26s} parameters: {row['parameters']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``scimpute`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="scimpute", description="Causal imputation of unmeasured perturbation responses."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("impute", help="impute every unmeasured pair of a grid")
    _grid_args(p)
    p.add_argument("--method", required=True, help="registered method (see `scimpute methods`)")
    p.add_argument("--param", action="append", help="method parameter NAME=VALUE (repeatable)")
    p.add_argument("--key-added", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, help="output .h5ad")
    p.set_defaults(func=_cmd_impute)

    p = sub.add_parser("benchmark", help="cross-validate methods on a grid, print a summary")
    _grid_args(p)
    p.add_argument("--methods", default="context_mean,perturbation_mean,two_way_mean,additive")
    p.add_argument(
        "--holdout",
        default="leave_one_out",
        choices=["leave_one_out", "random", "contexts", "perturbations"],
    )
    p.add_argument("--n-folds", type=int, default=5)
    p.add_argument("--param", action="append", help="method parameter NAME=VALUE (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default=None, help="summary table (.md, .csv or .json)")
    p.add_argument("--scores", default=None, help="per-pair scores (.csv)")
    p.set_defaults(func=_cmd_benchmark)

    p = sub.add_parser("demo", help="end-to-end demo on CMap (or a simulated grid)")
    p.add_argument("--data-dir", default=None, help="directory of the shared datasets")
    p.add_argument("--out-dir", default="scimpute_demo", help="where results are written")
    p.add_argument("--methods", default=None, help="comma-separated methods to compare")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("methods", help="list the registered methods")
    p.set_defaults(func=_cmd_methods)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scimpute`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"scimpute {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
