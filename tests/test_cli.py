import os
import subprocess
import sys

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


def test_demo_on_simulated_grid(tmp_path, capsys):
    rc = main(
        [
            "demo",
            "--data-dir",
            str(tmp_path / "absent"),
            "--out-dir",
            str(tmp_path),
            "--methods",
            "context_mean,additive",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "simulated" in out and "best method" in out
    assert (tmp_path / "demo_cross_validation.png").exists()
    assert (tmp_path / "demo_grid.h5ad").exists()


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
    assert main(["impute", str(grid_file), "-o", str(out)]) == 2
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

    for cmd in ("impute", "benchmark", "demo", "methods"):
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
