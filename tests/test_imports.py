"""Lazy imports: ``import scimpute`` loads no heavy dependency; every exported name resolves."""

import importlib
import json
import os
import subprocess
import sys

import pytest

HEAVY = ("jax", "jaxlib", "equinox", "optax", "scanpy", "matplotlib", "sklearn", "mudata")
PACKAGES = [
    "scimpute",
    "scimpute.datasets",
    "scimpute.methods",
    "scimpute.mm",
    "scimpute.nn",
    "scimpute.ntk",
    "scimpute.pl",
    "scimpute.pp",
    "scimpute.tl",
]


def _loaded_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; return which heavy modules it imported."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps({{m: m in sys.modules for m in {[*HEAVY, 'anndata']!r}}}))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_import_scimpute_loads_no_heavy_dependency():
    loaded = _loaded_after(
        "import scimpute, scimpute.tl, scimpute.pl, scimpute.mm, scimpute.nn, scimpute.pp, "
        "scimpute.datasets\nassert scimpute.__version__"
    )
    assert not any(loaded[m] for m in HEAVY), loaded
    assert not loaded["anndata"], "import scimpute should not even load anndata"


def test_cli_parser_loads_no_heavy_dependency():
    loaded = _loaded_after("from scimpute.cli import build_parser\nbuild_parser().format_help()")
    assert not any(loaded.values()), loaded


def test_first_use_loads_the_function():
    loaded = _loaded_after("import scimpute as si\nsi.pp.perturbation_grid")
    assert loaded["anndata"] and not loaded["jax"] and not loaded["matplotlib"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name):
    mod = importlib.import_module(name)
    assert len(mod.__all__) == len(set(mod.__all__))
    for attr in mod.__all__:
        value = getattr(mod, attr)
        assert value is not None, f"{name}.{attr}"
        assert attr in dir(mod)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        mod.nope  # noqa: B018


def test_from_import_and_identity():
    import scimpute as si
    from scimpute.pl import grid
    from scimpute.tl import impute
    from scimpute.tl._impute import impute as impl

    assert impute is impl is si.tl.impute
    assert grid is importlib.import_module("scimpute.pl._grid").grid
    assert set(si.__all__) == {
        "datasets",
        "methods",
        "metrics",
        "mm",
        "nn",
        "ntk",
        "pl",
        "pp",
        "tl",
    }


def test_lazy_all_must_match_members():
    from scimpute._lazy import attach

    with pytest.raises(ImportError, match="differ"):
        attach("pkg", {"__all__": ["a"]}, attributes={"b": "_b"})
