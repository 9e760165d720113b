import anndata as ad
import numpy as np

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
