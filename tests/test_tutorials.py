"""Execute every tutorial (MyST markdown notebooks in ``tutorials/``) so none can rot.

Each ``{code-cell}`` block runs in order in one namespace, in a temporary working directory,
with matplotlib's Agg backend. Tutorials need the shared real datasets; without them the test
is skipped.
"""

import os
import re
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).parents[1] / "tutorials").glob("*.md"))
CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)


def code_cells(path: Path) -> list[str]:
    cells = []
    for block in CELL.findall(path.read_text()):
        # drop cell options (":tags: [...]" lines of the MyST notebook format)
        lines = [ln for ln in block.splitlines() if not re.match(r"^:\w+:", ln)]
        cells.append("\n".join(lines))
    return cells


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, data_dir, tmp_path, monkeypatch):
    cells = code_cells(path)
    assert cells, f"{path.name} has no code cells"
    if any(re.search(r"^import pertpy", c, re.M) for c in cells):  # the interop extra
        pytest.importorskip(
            "pertpy", reason='pertpy is an optional extra: pip install -e ".[interop]"'
        )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCIMPUTE_DATA_DIR", str(data_dir))
    os.environ.setdefault("MPLBACKEND", "Agg")
    ns: dict = {"__name__": "__tutorial__"}
    for i, src in enumerate(cells):
        try:
            exec(compile(src, f"{path.name}[cell {i}]", "exec"), ns)
        except Exception as err:  # pragma: no cover - reported with the cell
            raise AssertionError(f"{path.name}, cell {i} failed:\n{src}") from err
