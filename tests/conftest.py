import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
#: the CLI enables JAX's persistent compile cache; tests never write to the user's cache
os.environ.setdefault("SCIMPUTE_JAX_CACHE", "0")

from scimpute.datasets import data_dir as _find_data_dir

DATA_DIR = _find_data_dir()
#: Fixture that hands out the shared real datasets; every test requesting it is marked ``data``.
DATA_FIXTURE = "data_dir"
NO_DATA_REASON = (
    "real datasets not found: set SCIMPUTE_DATA_DIR to the directory holding the "
    "shared .h5ad/.h5mu files (../shared/data in the project checkout)"
)


def _has_datasets(path: Path | None) -> bool:
    """Whether ``path`` holds at least one of the shared dataset files."""
    if path is None:
        return False
    from scimpute.datasets import DATASETS

    return any((path / d.filename).is_file() for d in DATASETS.values())


def pytest_collection_modifyitems(config, items):
    """Mark ``data`` every test that needs the real datasets (it requests ``data_dir``), so
    that ``pytest -m "not data"`` runs without them."""
    for item in items:
        if DATA_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Directory of the shared real datasets; skips the test when it holds none of them."""
    if not _has_datasets(DATA_DIR):
        where = "" if DATA_DIR is None else f" (looked in {DATA_DIR})"
        pytest.skip(NO_DATA_REASON + where)
    return DATA_DIR


@pytest.fixture(scope="session")
def fast() -> dict:
    """Small transfer-network settings shared by the style-transfer tests: one architecture,
    batch size and learning rate everywhere, so one compiled training loop serves them all.
    Read-only: tests build variants with ``{**fast, ...}``."""
    return {
        "width": 32,
        "depth": 2,
        "latent_dim": 8,
        "max_epochs": 60,
        "batch_size": 64,
        "learning_rate": 3e-3,
        "dropout": 0.0,
    }


@pytest.fixture(scope="module")
def cells():
    """Simulated cells (4 contexts x 2 perturbations + control, known latent shifts)."""
    import scimpute as si

    return si.datasets.simulate_cells(
        n_contexts=4, n_perturbations=2, n_genes=30, n_cells=60, random_state=0
    )


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


os.environ.setdefault("JAX_PLATFORMS", "cpu")
