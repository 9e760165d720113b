"""Execute the tutorials and store them, with outputs and figures, as the docs' notebooks.

The sources are the MyST notebooks in ``tutorials/*.md`` (executed by the test suite, see
``tests/test_tutorials.py``). This script runs each one in a fresh Jupyter kernel on the
shared data (``$SCIMPUTE_DATA_DIR``), writes ``docs/tutorials/<name>.ipynb`` (rendered by the
docs build without executing anything, ``nb_execution_mode = "off"``) and rewrites the
``**Runtime:**`` line under the tutorial's title with the measured wall time.

Usage (from the repository root, with the ``doc`` extra installed)::

    python docs/execute_tutorials.py                 # all tutorials
    python docs/execute_tutorials.py quickstart.md   # one

``tests/test_docs.py`` fails when a stored notebook's code no longer matches its source.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from myst_nb.core.read import read_myst_markdown_notebook
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "tutorials"
OUT = ROOT / "docs" / "tutorials"
TITLE = re.compile(r"^(# .+\n)(\n\*\*Runtime:\*\*[^\n]*\n)?", re.M)


def _machine() -> str:
    n = os.cpu_count() or 1
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{n} CPU cores ({cpu}), JAX on CPU"


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def execute(path: Path) -> float:
    nb = read_myst_markdown_notebook(path.read_text())
    env = {"JAX_PLATFORMS": "cpu", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    os.environ.update(env)
    with tempfile.TemporaryDirectory() as tmp:
        client = NotebookClient(
            nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": tmp}}
        )
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    line = (
        f"\n**Runtime:** about {_fmt(seconds)} on {_machine()} "
        f"(measured by `python docs/execute_tutorials.py`).\n"
    )
    text = TITLE.sub(lambda m: m.group(1) + line, path.read_text(), count=1)
    path.write_text(text)
    # the stored notebook shows the same runtime line as its source
    for cell in nb.cells:
        if cell.cell_type == "markdown" and TITLE.search(cell.source):
            cell.source = TITLE.sub(lambda m: m.group(1) + line, cell.source, count=1).rstrip()
            break
    OUT.mkdir(exist_ok=True)
    nbformat.write(nb, OUT / f"{path.stem}.ipynb")
    return seconds


def main(names: list[str]) -> None:
    paths = [SRC / n for n in names] if names else sorted(SRC.glob("*.md"))
    for p in paths:
        seconds = execute(p)
        print(f"{p.name}: {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
