"""Promises of the docs and the packaging: every public name has an API page, every tutorial
is rendered from an executed notebook of its current source with its runtime stated, tests
needing the real data are marked ``data`` and skip cleanly without it, ``py.typed`` ships."""

import ast
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import scimpute

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((ROOT / "tutorials").glob("*.md"))
CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)
RUNTIME = re.compile(r"^\*\*Runtime:\*\* about [\d.]+ (s|min) ", re.M)
SUBMODULES = ["pp", "tl", "pl", "mm", "datasets", "metrics", "methods", "nn", "ntk"]
REAL_LOADERS = ["cmap", "kang", "korkut", "lincs_doses", "scicar", "pbmc_citeseq"]


def _public_names(mod_name: str) -> list[str]:
    mod = importlib.import_module(f"scimpute.{mod_name}")
    if hasattr(mod, "__all__"):
        return list(mod.__all__)
    return [
        k
        for k, v in vars(mod).items()
        if not k.startswith("_")
        and getattr(v, "__module__", "").startswith(f"scimpute.{mod_name}")
        and callable(v)
    ]


def _autosummary_entries() -> set[str]:
    entries = set()
    for page in (DOCS / "api").glob("*.md"):
        for block in re.findall(r"\.\. autosummary::\n(.*?)(?:\n```|\n\S)", page.read_text(), re.S):
            entries |= {ln.strip() for ln in block.splitlines() if re.match(r"^ {3}\w", ln)}
    return entries


@pytest.mark.parametrize("mod_name", SUBMODULES)
def test_every_public_name_has_an_api_page(mod_name):
    entries = _autosummary_entries()
    text = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    missing = [
        n
        for n in _public_names(mod_name)
        if not any(e == f"{mod_name}.{n}" or e.endswith(f".{n}") for e in entries)
        and not (n.isupper() and f"``{mod_name}.{n}``" in text)  # constants: named in prose
    ]
    assert not missing, f"scimpute.{mod_name}: no autosummary entry in docs/api for {missing}"


def test_autosummary_entries_import():
    """Every entry resolves (a renamed function would otherwise fail the -W docs build late)."""
    bad = []
    for entry in sorted(_autosummary_entries()):
        head, *rest = entry.split(".")
        obj = importlib.import_module(f"scimpute.{head}")
        try:
            for part in rest:
                obj = (
                    getattr(obj, part)
                    if hasattr(obj, part)
                    else importlib.import_module(f"{obj.__name__}.{part}")
                )
        except (AttributeError, ImportError):
            bad.append(entry)
    assert not bad, f"docs/api names that do not import: {bad}"


def test_installation_page_in_toctree_and_names_the_extras():
    index = (DOCS / "index.md").read_text()
    assert re.search(r"^installation$", index, re.M)
    text = (DOCS / "installation.md").read_text()
    for needle in ['".[cuda]"', "SCIMPUTE_DATA_DIR", "3.11", "venv", '".[doc]"', "sphinx-build"]:
        assert needle in text, needle
    extras = re.search(
        r"\[project\.optional-dependencies\](.*?)\n\[", (ROOT / "pyproject.toml").read_text(), re.S
    )
    for extra in re.findall(r"^(\w+) = ", extras.group(1), re.M):
        assert f"`{extra}`" in text, f"extra {extra!r} not described in docs/installation.md"


def _md_cells(path: Path) -> list[str]:
    cells = []
    for block in CELL.findall(path.read_text()):
        lines = [ln for ln in block.splitlines() if not re.match(r"^:\w+:", ln)]
        cells.append("\n".join(lines).strip())
    return cells


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_is_rendered_from_an_executed_notebook_of_its_source(path):
    nb_path = DOCS / "tutorials" / f"{path.stem}.ipynb"
    assert nb_path.is_file(), f"run `python docs/execute_tutorials.py {path.name}`"
    nb = json.loads(nb_path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert ["".join(c["source"]).strip() for c in code] == _md_cells(path), (
        f"{nb_path.name} is stale: rerun `python docs/execute_tutorials.py {path.name}`"
    )
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert all(c.get("execution_count") for c in code), "a cell was not executed"
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure in the outputs"
    src = path.read_text()
    assert RUNTIME.search(src), f"{path.name}: no '**Runtime:** about ...' line"
    assert src.index("**Runtime:**") < src.index("```{code-cell}")


def test_tutorial_pages_are_in_the_toctree():
    index = (DOCS / "tutorials" / "index.md").read_text()
    for path in TUTORIALS:
        assert re.search(rf"^{path.stem}$", index, re.M), path.stem


def test_tests_calling_real_loaders_request_the_data_fixture():
    """A test reading a real dataset must go through ``data_dir`` (hence the ``data`` marker)."""
    offenders = []
    for file in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(file.read_text())
        for fn in ast.walk(tree):
            if not (isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_")):
                continue
            calls = [
                n
                for n in ast.walk(fn)
                if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and n.func.attr in REAL_LOADERS
                and "datasets" in ast.unparse(n.func.value)
                and not any(isinstance(a, ast.Name) and a.id.startswith("tmp") for a in n.args)
            ]
            if calls and "data_dir" not in [a.arg for a in fn.args.args]:
                offenders.append(f"{file.name}::{fn.name}")
    assert not offenders, f"read real data without requesting data_dir: {offenders}"


def _pytest(*args, data_dir: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCIMPUTE_DATA_DIR": data_dir, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


DATA_TESTS = ["tests/test_datasets.py", "tests/test_tutorials.py"]


def test_not_data_deselects_exactly_the_data_tests(tmp_path):
    marked = _pytest("-q", "--co", "-m", "data", *DATA_TESTS, data_dir=str(tmp_path))
    rest = _pytest("-q", "--co", "-m", "not data", *DATA_TESTS, data_dir=str(tmp_path))
    ids = lambda r: {ln for ln in r.stdout.splitlines() if "::" in ln}  # noqa: E731
    assert marked.returncode == 0 and rest.returncode == 0, marked.stdout + rest.stdout
    assert "tests/test_datasets.py::test_loaders_find_real_files" in ids(marked)
    assert {f"tests/test_tutorials.py::test_tutorial_runs[{p.stem}]" for p in TUTORIALS} <= ids(
        marked
    )
    assert ids(rest) and not ids(rest) & ids(marked)
    assert "tests/test_datasets.py::test_missing_file_names_the_source" in ids(rest)


def test_data_tests_skip_with_a_clear_reason_without_the_data(tmp_path):
    run = _pytest(
        "-q", "-rs", "tests/test_datasets.py::test_loaders_find_real_files", data_dir=str(tmp_path)
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout
    assert "real datasets not found: set SCIMPUTE_DATA_DIR" in run.stdout
    assert str(tmp_path) in run.stdout


def test_py_typed_ships_in_the_package():
    pkg = Path(scimpute.__file__).parent
    assert (pkg / "py.typed").is_file()
    # hatchling's wheel target packages the whole src/scimpute directory (py.typed included)
    assert 'packages = ["src/scimpute"]' in (ROOT / "pyproject.toml").read_text()
