import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from scimpute.datasets import data_dir as _find_data_dir

DATA_DIR = _find_data_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Directory of the shared real datasets; skips the test when it is absent."""
    if DATA_DIR is None:
        pytest.skip(
            "real datasets not found: set SCIMPUTE_DATA_DIR to the directory holding the "
            "shared .h5ad/.h5mu files (../shared/data in the project checkout)"
        )
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
