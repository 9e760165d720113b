"""Datasets: seeded simulators with ground truth, and loaders of the shared real data.

Names load on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

if TYPE_CHECKING:
    from ._loaders import (
        DATASETS,
        cmap,
        data_dir,
        dataset_path,
        inpainting_image,
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
    "inpainting_image",
    "kang",
    "korkut",
    "lincs_doses",
    "pbmc_citeseq",
    "scicar",
    "simulate_cells",
    "simulate_grid",
    "simulate_multimodal",
]

__getattr__, __dir__ = attach(
    __name__,
    globals(),
    attributes={
        "DATASETS": "_loaders",
        "cmap": "_loaders",
        "data_dir": "_loaders",
        "dataset_path": "_loaders",
        "inpainting_image": "_loaders",
        "kang": "_loaders",
        "korkut": "_loaders",
        "lincs_doses": "_loaders",
        "pbmc_citeseq": "_loaders",
        "scicar": "_loaders",
        "simulate_cells": "_simulate_cells",
        "simulate_grid": "_simulate",
        "simulate_multimodal": "_simulate_mm",
    },
)
