"""Datasets: seeded simulators with ground truth, and loaders of the shared real data."""

from ._loaders import (
    DATASETS,
    cmap,
    data_dir,
    dataset_path,
    kang,
    korkut,
    lincs_doses,
    pbmc_citeseq,
    scicar,
)
from ._simulate import simulate_grid
from ._simulate_cells import simulate_cells
from ._simulate_mm import simulate_multimodal

__all__ = [
    "DATASETS",
    "cmap",
    "data_dir",
    "dataset_path",
    "kang",
    "korkut",
    "lincs_doses",
    "pbmc_citeseq",
    "scicar",
    "simulate_cells",
    "simulate_grid",
    "simulate_multimodal",
]
