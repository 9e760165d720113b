import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import scimpute as si
from scimpute.cli import main


def test_impute_and_benchmark_commands(tmp_path, capsys):
    g = si.datasets.simulate_grid(5, 6, 10, random_state=0)
    # write as bulk profiles (one row per measured pair), the way users hold data
    bulk = g[g.obs["measured"].to_numpy()].copy()
    bulk.obs = bulk.obs[["context", "perturbation"]].astype(str)
    bulk.layers = {}
    bulk.uns = {}
    src = tmp_path / "bulk.h5ad"
    bulk.write_h5ad(src)
    out = tmp_path / "out.h5ad"
    rc = main(
        [
            "impute",
            str(src),
            "--context-key",
            "context",
            "--perturbation-key",
            "perturbation",
            "--method",
            "additive",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    res = ad.read_h5ad(out)
    assert np.isfinite(res.layers["imputed_additive"]).all()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() makes it
    assert "imputed" in capsys.readouterr().out
    table = tmp_path / "summary.csv"
    rc = main(
        [
            "benchmark",
            str(out),
            "--methods",
            "context_mean,additive",
            "--holdout",
            "random",
            "--n-folds",
            "3",
            "-o",
            str(table),
        ]
    )
    assert rc == 0 and table.read_text().count("\n") == 3


def test_cli_errors(tmp_path, capsys):
    g = si.datasets.simulate_grid(4, 4, 6, random_state=0)
    p = tmp_path / "g.h5ad"
    g.write_h5ad(p)
    assert main(["impute", str(p), "--method", "nope", "-o", str(tmp_path / "x.h5ad")]) == 2
    assert "Unknown method" in capsys.readouterr().err
    assert (
        main(
            [
                "impute",
                str(p),
                "--method",
                "additive",
                "--param",
                "rank=3",
                "-o",
                str(tmp_path / "x.h5ad"),
            ]
        )
        == 2
    )
    assert "unexpected parameter" in capsys.readouterr().err


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No dataset folder anywhere: no variable, a bare working directory, no source checkout."""
    from scimpute.datasets import _loaders

    monkeypatch.delenv("SCIMPUTE_DATA_DIR", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(_loaders, "_source_checkout", lambda: None)
    return work


def test_demo_on_simulated_grid(tmp_path, no_data, capsys):
    out_dir = tmp_path / "demo"
    args = ["demo", "--out-dir", str(out_dir), "--methods", "context_mean,additive"]
    assert main(args) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    # the fallback is announced in one line, naming the folder it looked in, once
    notes = [line for line in lines if "not found" in line]
    assert len(notes) == 1 and "simulated 20 x 30 grid" in notes[0]
    assert notes[0].count(str((no_data.parent / "shared" / "data").resolve())) == 1
    # the table has the share each method predicted itself; no bare "best method" claim
    header = next(line for line in lines if line.split()[:1] == ["method"])
    assert header.split() == ["method", "n_pairs", "median_r2", "median_relative_mse", "own_share"]
    assert "best method" not in captured.out
    claim = next(line for line in lines if line.startswith("highest median R²"))
    assert "% of its held-out pairs predicted by" in claim
    imputed = next(line for line in lines if line.startswith("imputed grid:"))
    assert "pairs by" in imputed and "itself" in imputed
    # the progress bar names the method and shows no time-left estimate
    assert "cross-validating additive" in captured.err
    assert "remaining" not in captured.err and "<" not in captured.err
    for name in ("demo_cross_validation.png", "demo_grid.png", "demo_grid.h5ad"):
        assert (out_dir / name).exists()
    table = (out_dir / "demo_cross_validation.md").read_text()
    assert table.startswith("| method | n_pairs | median_r2 | median_relative_mse | own_share |")


def test_demo_explicit_data_dir_without_data_is_an_error(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--data-dir", "/nonexistent", "--out-dir", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err, "demo")
    assert "--data-dir '/nonexistent' is not a directory" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["demo", "--data-dir", str(empty), "--out-dir", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err, "demo")
    assert "cmap_l1000_24cells_20drugs.h5ad" in line and "was not found in" in line
    assert not out.exists()


def test_data_not_found_lists_each_sensible_folder_once(no_data, monkeypatch):
    from scimpute.datasets import _loaders

    # the variable names the same folder as ../shared/data, spelled differently
    shared = no_data.parent / "shared" / "data"
    monkeypatch.setenv("SCIMPUTE_DATA_DIR", str(no_data / ".." / "shared" / "data"))
    with pytest.raises(FileNotFoundError) as err:
        _loaders.dataset_path("cmap")
    msg = str(err.value)
    listed = msg.split("was not found in: ")[1].split(". Point")[0].split(", ")
    assert listed == [str(shared.resolve())]
    # an installed wheel: no folder next to site-packages is listed
    monkeypatch.undo()
    monkeypatch.delenv("SCIMPUTE_DATA_DIR", raising=False)
    monkeypatch.chdir(no_data)
    fake = "/opt/py/lib/python3.11/site-packages/scimpute/datasets/_loaders.py"
    monkeypatch.setattr(_loaders, "__file__", fake)
    assert _loaders._source_checkout() is None
    assert "site-packages" not in " ".join(map(str, _loaders._candidates(None)))
    # a source checkout (this one) is found
    monkeypatch.setattr(_loaders, "__file__", str(Path(si.__file__).parent / "datasets" / "x.py"))
    root = _loaders._source_checkout()
    assert root is not None and (root / "pyproject.toml").is_file()


def test_methods_command(capsys):
    assert main(["methods"]) == 0
    assert "context_mean" in capsys.readouterr().out


# --- defects of issue 9 (#1, #9): each test fails on the CLI before the refactor ----------


@pytest.fixture
def grid_file(tmp_path):
    g = si.datasets.simulate_grid(4, 4, 6, random_state=0)
    p = tmp_path / "g.h5ad"
    g.write_h5ad(p)
    return p


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert lines[-1].startswith(f"scimpute {command}: error: "), err
    return lines[-1]


def _no_temp_files(directory):
    return [p.name for p in directory.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("how", ["same", "relative", "symlink"])
def test_impute_refuses_to_overwrite_its_input(grid_file, monkeypatch, capsys, how):
    before = grid_file.read_bytes()
    if how == "same":
        out = str(grid_file)
    elif how == "relative":
        monkeypatch.chdir(grid_file.parent)
        out = "./sub/../g.h5ad"
        (grid_file.parent / "sub").mkdir()
    else:
        link = grid_file.parent / "link.h5ad"
        link.symlink_to(grid_file)
        out = str(link)
    rc = main(["impute", str(grid_file), "--method", "additive", "-o", out])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err, "impute")
    assert "is the input file" in line and "--force" in line
    assert grid_file.read_bytes() == before


def test_impute_force_replaces_input_atomically(grid_file, capsys):
    link = grid_file.parent / "link.h5ad"
    link.symlink_to(grid_file)
    rc = main(["impute", str(grid_file), "--method", "additive", "-o", str(link), "--force"])
    assert rc == 0, capsys.readouterr().err
    assert link.is_symlink()  # the link is kept, the file it points to is replaced
    res = ad.read_h5ad(grid_file)
    assert np.isfinite(res.layers["imputed_additive"]).all()
    assert _no_temp_files(grid_file.parent)


def test_output_is_checked_before_reading_input(grid_file, tmp_path, monkeypatch, capsys):
    import scimpute.cli as cli

    def no_read(*a, **k):
        raise AssertionError("the input was read before the arguments were checked")

    monkeypatch.setattr(cli, "_read_h5ad", no_read)
    cases = [
        (["-o", str(tmp_path / "missing" / "out.h5ad")], "does not exist"),
        (["-o", str(tmp_path / "out.csv")], "unknown output format '.csv'"),
        (["-o", str(tmp_path / "out")], "unknown output format"),
        (["-o", str(tmp_path)], "unknown output format"),
    ]
    for extra, msg in cases:
        assert main(["impute", str(grid_file), "--method", "additive", *extra]) == 2
        assert msg in _one_error_line(capsys.readouterr().err, "impute")
    out = str(tmp_path / "x.h5ad")
    assert main(["impute", str(grid_file), "--method", "nope", "-o", out]) == 2
    assert "Unknown method 'nope'" in _one_error_line(capsys.readouterr().err, "impute")
    bad = ["--param", "learning_rate=abc"]
    assert main(["impute", str(grid_file), "--method", "additive", *bad, "-o", out]) == 2
    assert "unexpected parameter" in _one_error_line(capsys.readouterr().err, "impute")
    assert main(["impute", str(grid_file), "--method", "additive", "--param", "x", "-o", out]) == 2
    assert "NAME=VALUE" in _one_error_line(capsys.readouterr().err, "impute")
    # benchmark: the summary and score files too
    for extra, msg in [
        (["-o", str(tmp_path / "s.xlsx")], "unknown output format '.xlsx'"),
        (["--scores", str(tmp_path / "s.json")], "unknown output format '.json'"),
        (["-o", str(tmp_path / "no" / "s.csv")], "does not exist"),
        (["--methods", "context_mean,nope"], "Unknown method 'nope'"),
        (["--methods", ","], "names no method"),
    ]:
        assert main(["benchmark", str(grid_file), *extra]) == 2
        assert msg in _one_error_line(capsys.readouterr().err, "benchmark")
    assert not (tmp_path / "x.h5ad").exists() and not (tmp_path / "no").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_unreadable_inputs_are_one_line_errors(tmp_path, capsys):
    import mudata as md

    g = si.datasets.simulate_grid(4, 4, 6, random_state=0)
    good = tmp_path / "good.h5ad"
    g.write_h5ad(good)
    truncated = tmp_path / "truncated.h5ad"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    text = tmp_path / "text.h5ad"
    text.write_text("context,perturbation\nc0,p0\n")
    empty = tmp_path / "empty.h5ad"
    empty.write_bytes(b"")
    mdata = md.MuData({"rna": g.copy()})
    h5mu = tmp_path / "x.h5mu"
    mdata.write(h5mu)
    renamed = tmp_path / "mudata.h5ad"
    renamed.write_bytes(h5mu.read_bytes())
    cases = {
        truncated: "damaged or truncated",
        text: "not an HDF5 file",
        empty: "an empty file",
        h5mu: "MuData file (.h5mu)",
        renamed: "holds a MuData object",
        tmp_path / "absent.h5ad": "does not exist",
    }
    out = str(tmp_path / "out.h5ad")
    for path, msg in cases.items():
        for cmd, extra in [("impute", ["--method", "additive", "-o", out]), ("benchmark", [])]:
            assert main([cmd, str(path), *extra]) == 2, path
            assert msg in _one_error_line(capsys.readouterr().err, cmd), path


def test_exit_status_usage_2_failure_1(grid_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.h5ad"
    # usage errors (argparse) share the format and the status
    assert main(["impute", str(grid_file), "-o", str(out), "--method"]) == 2
    assert "--method" in _one_error_line(capsys.readouterr().err, "impute")
    assert main(["benchmark", str(grid_file), "--n-folds", "1"]) == 2
    assert "must be >= 2" in _one_error_line(capsys.readouterr().err, "benchmark")
    # bad input found while building the grid
    cells = si.datasets.simulate_grid(4, 4, 6, random_state=0)
    cells = cells[cells.obs["measured"].to_numpy()].copy()
    cells.obs = cells.obs[["context", "perturbation"]].astype(str)
    cells.uns = {}
    cells.layers = {}
    src = tmp_path / "cells.h5ad"
    cells.write_h5ad(src)
    args = ["--perturbation-key", "perturbation", "--method", "additive", "-o", str(out)]
    assert main(["impute", str(src), "--context-key", "cell_type", *args]) == 2
    assert "'cell_type' is not a column" in _one_error_line(capsys.readouterr().err, "impute")
    assert main(["impute", str(src), "--context-key", "context", "--control", "DMSO", *args]) == 2
    assert "'DMSO' does not occur" in _one_error_line(capsys.readouterr().err, "impute")
    # a failure while the work runs: status 1, one line, nothing written
    import scimpute.tl

    def boom(*a, **k):
        raise RuntimeError("solver diverged")

    monkeypatch.setattr(scimpute.tl, "impute", boom)
    assert main(["impute", str(grid_file), "--method", "additive", "-o", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err, "impute")
    assert line.endswith("RuntimeError: solver diverged")
    assert not out.exists() and _no_temp_files(tmp_path)


def test_benchmark_writes_each_format(grid_file, tmp_path, capsys):
    for suffix in (".md", ".json", ".csv"):
        out = tmp_path / f"summary{suffix}"
        scores = tmp_path / f"scores{suffix}.csv"
        args = ["benchmark", str(grid_file), "--methods", "context_mean", "--holdout", "random"]
        assert main([*args, "--n-folds", "2", "-o", str(out), "--scores", str(scores)]) == 0
        assert "context_mean" in out.read_text() and scores.read_text().startswith("method,")
    assert _no_temp_files(tmp_path)
    capsys.readouterr()


def test_help_has_description_example_and_defaults(capsys):
    from scimpute.cli import build_parser

    for cmd in ("impute", "benchmark", "demo", "transfer", "integrate", "methods"):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([cmd, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "example:" in text and f"scimpute {cmd}" in text.split("example:")[1]
    build_parser().parse_args(["impute", "x.h5ad", "--method", "m", "-o", "y.h5ad"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: leave_one_out)" in text and "(default: 5)" in text
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"scimpute {si.__version__}"


def test_subprocess_entry_point(tmp_path):
    bad = tmp_path / "bad.h5ad"
    bad.write_text("not hdf5")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "scimpute", "impute", str(bad), "--method", "additive"]
    res = subprocess.run(
        [*cmd, "-o", str(tmp_path / "o.h5ad")], capture_output=True, text=True, env=env, check=False
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"scimpute impute: error: input {str(bad)!r} is not an HDF5 file; expected an AnnData "
        ".h5ad file."
    ]
    res = subprocess.run(
        [sys.executable, "-m", "scimpute", "--help"], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0 and "impute" in res.stdout


def test_grid_input_is_read_through_its_record(grid_file, tmp_path, capsys):
    out = str(tmp_path / "o.h5ad")
    args = ["impute", str(grid_file), "--method", "additive", "-o", out]
    assert main([*args, "--context-key", "context"]) == 0  # the grid's own key: fine
    capsys.readouterr()
    assert main([*args, "--context-key", "cell_type"]) == 2
    line = _one_error_line(capsys.readouterr().err, "impute")
    assert "built with --context-key 'context', not 'cell_type'" in line
    # a grid whose record was damaged is bad input, not a traceback
    g = ad.read_h5ad(grid_file)
    g.uns["perturbation_grid"] = {"control": "control"}
    bad = tmp_path / "bad_grid.h5ad"
    g.write_h5ad(bad)
    assert main(["impute", str(bad), "--method", "additive", "-o", out]) == 2
    assert "lacks 'context_key', 'perturbation_key'" in _one_error_line(
        capsys.readouterr().err, "impute"
    )


def test_demo_checks_methods_and_out_dir_first(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out-dir", str(out), "--methods", "context_mean,nope"]) == 2
    assert "Unknown method 'nope'" in _one_error_line(capsys.readouterr().err, "demo")
    assert not out.exists()  # nothing was created or computed
    afile = tmp_path / "file"
    afile.write_text("")
    assert main(["demo", "--out-dir", str(afile)]) == 2
    assert "is not a directory" in _one_error_line(capsys.readouterr().err, "demo")


def test_method_needing_a_control_is_refused_before_the_run(tmp_path, monkeypatch, capsys):
    import dataclasses

    from scimpute.methods import _registry, get_method

    needy = dataclasses.replace(get_method("additive"), name="needs_ctrl", needs_control=True)
    monkeypatch.setitem(_registry._REGISTRY, "needs_ctrl", needy)
    g = si.datasets.simulate_grid(4, 4, 6, control=None, random_state=0)
    src = tmp_path / "effects.h5ad"
    g.write_h5ad(src)
    out = tmp_path / "o.h5ad"
    assert main(["impute", str(src), "--method", "needs_ctrl", "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err, "impute")
    assert "'needs_ctrl' need a control perturbation" in line and not out.exists()


# --- issue 13: the command line a newcomer meets ----------------------------------------


def _bulk_file(tmp_path, g, name="bulk.h5ad"):
    """The measured pairs of a simulated grid as bulk profiles (one row per pair)."""
    bulk = g[g.obs["measured"].to_numpy()].copy()
    bulk.obs = bulk.obs[["context", "perturbation"]].astype(str)
    bulk.layers = {}
    bulk.uns = {}
    path = tmp_path / name
    bulk.write_h5ad(path)
    return path


def test_help_of_every_option_and_demo_data_dir(capsys):
    from scimpute.cli import build_parser

    parser = build_parser()
    sub = next(
        a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction)
    )
    for name, p in sub.choices.items():
        assert p.description and "example:" in p.epilog, name
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (name, action.option_strings)
    for cmd, wanted in [
        (
            "benchmark",
            [
                "--methods",
                "(default: context_mean,perturbation_mean",
                "--holdout",
                "(default: leave_one_out)",
                "--n-folds",
                "(default: 5)",
                "--seed",
                "(default: 0)",
                "--full",
            ],
        ),
        ("impute", ["--key-added", "(default: imputed_<method>)", "--seed", "(default: 0)"]),
        ("demo", ["SCIMPUTE_DATA_DIR", "simulated grid", "minute"]),
        ("transfer", ["--holdout", "should not contain", "(default: autoencoder)"]),
        ("integrate", ["--modalities", "(default: X_scimpute)", "--max-epochs"]),
    ]:
        with pytest.raises(SystemExit):
            build_parser().parse_args([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for w in wanted:
            assert w in text, (cmd, w)
        assert "--no-progress do not show progress bars (on stderr) (default" not in text


def test_impute_on_a_fully_measured_grid_points_to_transfer(tmp_path, capsys):
    import pandas as pd

    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        [(c, a) for c in ("t0", "t1", "t2") for a in ("control", "stim") for _ in range(4)],
        columns=["cell_type", "condition"],
    )
    obs.index = [f"c{i}" for i in range(len(obs))]
    cells = ad.AnnData(rng.normal(size=(len(obs), 5)), obs=obs)
    src = tmp_path / "kang_like.h5ad"
    cells.write_h5ad(src)
    out = tmp_path / "o.h5ad"
    args = ["impute", str(src), "--context-key", "cell_type", "--perturbation-key", "condition"]
    assert main([*args, "--method", "additive", "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err, "impute")
    assert "nothing to impute" in line and "scimpute transfer" in line
    assert not out.exists()


def test_benchmark_prints_a_short_readable_table(tmp_path, monkeypatch, capsys):
    import pandas as pd

    monkeypatch.setitem(sys.modules, "tabulate", None)  # not needed: import would fail
    g = si.datasets.simulate_grid(6, 6, 8, random_state=1)
    src = _bulk_file(tmp_path, g)
    scores = tmp_path / "scores.csv"
    md = tmp_path / "summary.md"
    args = ["benchmark", str(src), "--context-key", "context", "--perturbation-key",
            "perturbation", "--methods", "context_mean,two_way_mean", "--holdout", "random",
            "--n-folds", "3"]  # fmt: skip
    assert main([*args, "-o", str(md), "--scores", str(scores)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["method", "n_pairs", "median_r2", "median_relative_mse", "own_share"]
    rows = {line.split()[0]: line.split()[1:] for line in out[1:3]}
    table = pd.read_csv(scores)
    for method, cells in rows.items():
        sub = table[table["method"] == method]
        assert int(cells[0]) == len(sub)
        assert cells[1] == f"{sub['r2'].median():.3f}"
        assert cells[2] == f"{sub['relative_mse'].median():.3f}"
        assert cells[3] == f"{(sub['source'] == method).mean():.3f}"  # own predictions
    assert all(len(c.split(".")[1]) == 3 for cells in rows.values() for c in cells[1:])
    assert md.read_text().startswith("| method | n_pairs | median_r2 |")
    assert main([*args, "--full"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert {"mean_r2", "median_cosine_effect", "own_share"} <= set(header)


def test_transfer_command(tmp_path, fast, monkeypatch, capsys):
    cells = si.datasets.simulate_cells(3, 1, 20, n_cells=20, random_state=0)
    src = tmp_path / "cells.h5ad"
    cells.write_h5ad(src)
    before = src.read_bytes()
    out = tmp_path / "pred.h5ad"
    base = ["transfer", str(src), "--context-key", "cell_type", "--perturbation-key",
            "perturbation", "--target-context", "ct0", "--target-perturbation", "p0",
            "-o", str(out), "--no-progress"]  # fmt: skip
    params = [x for k, v in fast.items() if k != "max_epochs" for x in ("--param", f"{k}={v}")]
    import scimpute.tl

    def no_work(*a, **k):
        raise AssertionError("trained before the input was checked")

    with monkeypatch.context() as m:
        m.setattr(scimpute.tl, "transfer", no_work)
        # the input holds the cells to predict: refused unless --holdout
        assert main(base) == 2
        line = _one_error_line(capsys.readouterr().err, "transfer")
        assert "holds 20 cells of ('ct0', 'p0')" in line and "--holdout" in line
        for extra, msg in [
            (["--target-context", "nope"], "'nope' does not occur"),
            (["--target-perturbation", "control"], "is the control"),
            (["--target-perturbation", "p9"], "measured in no context other than"),
            (["--param", "width=0"], "width must be"),
            (["--max-epochs", "0"], "must be >= 1"),
            (["-o", str(src)], "is the input file"),
        ]:
            assert main([*base, *extra, "--holdout"]) == 2, extra
            assert msg in _one_error_line(capsys.readouterr().err, "transfer"), extra
    assert main([*base, "--holdout", "--max-epochs", "3", *params]) == 0
    assert "predicted 20 cells of ('ct0', 'p0')" in capsys.readouterr().out
    pred = ad.read_h5ad(out)
    n_ctrl = int(
        ((cells.obs["cell_type"] == "ct0") & (cells.obs["perturbation"] == "control")).sum()
    )
    assert pred.n_obs == n_ctrl and pred.obs["predicted"].all()
    assert set(pred.obs["perturbation"]) == {"p0"} and list(pred.var_names) == list(cells.var_names)
    assert np.isfinite(pred.X).all()
    assert src.read_bytes() == before and _no_temp_files(tmp_path)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_integrate_command(tmp_path, monkeypatch, capsys):
    import mudata as md

    mdata = si.datasets.simulate_multimodal(60, (12, 8), random_state=0)
    src = tmp_path / "mm.h5mu"
    mdata.write(src)
    before = src.read_bytes()
    out = tmp_path / "out.h5mu"
    base = ["integrate", str(src), "-o", str(out), "--no-progress", "--max-epochs", "2"]
    import scimpute.mm

    with monkeypatch.context() as m:
        m.setattr(scimpute.mm, "integrate", lambda *a, **k: pytest.fail("work before checks"))
        grid = tmp_path / "g.h5ad"
        si.datasets.simulate_grid(3, 3, 4, random_state=0).write_h5ad(grid)
        renamed = tmp_path / "anndata.h5mu"
        renamed.write_bytes(grid.read_bytes())
        for args, msg in [
            (["--modalities", "m0,rna"], "Modality 'rna' is not in mdata"),
            (["--modalities", "m0"], "at least 2 modalities"),
            (["--param", "n_latent=0"], "n_latent must be"),
            (["-o", str(src)], "is the input file"),
            (["-o", str(tmp_path / "x.h5ad")], "unknown output format '.h5ad'"),
        ]:
            assert main([*base, *args]) == 2, args
            assert msg in _one_error_line(capsys.readouterr().err, "integrate"), args
        for bad, msg in [(grid, "is an AnnData file (.h5ad)"), (renamed, "not a MuData file")]:
            assert main(["integrate", str(bad), "-o", str(out)]) == 2
            assert msg in _one_error_line(capsys.readouterr().err, "integrate")
    assert main([*base, "--key-added", "X_shared", "--param", "n_latent=4"]) == 0
    assert "obsm['X_shared']" in capsys.readouterr().out
    res = md.read_h5mu(out)
    assert res.obsm["X_shared"].shape == (mdata.n_obs, 4)
    assert np.isfinite(res.obsm["X_shared"]).all()
    assert src.read_bytes() == before and _no_temp_files(tmp_path)


def test_subprocess_new_subcommands(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    bad = tmp_path / "x.h5ad"
    bad.write_text("")
    res = subprocess.run(
        [sys.executable, "-m", "scimpute", "integrate", str(bad), "-o", str(tmp_path / "o.h5mu")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"scimpute integrate: error: input {str(bad)!r} is an AnnData file (.h5ad); this command "
        "reads a MuData (.h5mu) with two or more modalities."
    ]


def test_impute_defaults_to_auto_and_reports_its_choice(grid_file, tmp_path, capsys):
    out = tmp_path / "auto.h5ad"
    args = ["impute", str(grid_file), "-o", str(out), "--param", "n_folds=3"]
    args += ["--param", 'candidates=["context_mean","additive"]']
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "with 'auto'" in text and "auto (nested CV" in text and "chose" in text
    assert "90% conformal intervals" in text
    import anndata as ad

    back = ad.read_h5ad(out)
    assert {"imputed_auto_lower", "imputed_auto_upper"} <= set(back.layers)
    assert back.uns["imputed_auto"]["auto"]["rule"] in ("grid", "per_pair", "stack")


def test_benchmark_reports_what_auto_would_choose(grid_file, capsys):
    assert (
        main(
            [
                "benchmark",
                str(grid_file),
                "--methods",
                "context_mean,additive",
                "--holdout",
                "random",
            ]
        )
        == 0
    )
    assert "auto over these methods" in capsys.readouterr().out
