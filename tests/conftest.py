import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from scimpute.datasets import data_dir as _find_data_dir  # noqa: E402

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


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


os.environ.setdefault("JAX_PLATFORMS", "cpu")
