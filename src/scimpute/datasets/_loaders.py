"""Loaders of the real datasets shared with the project (never copied into the repository)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad

from .._keys import DATA_DIR_ENV

if TYPE_CHECKING:
    import numpy as np
    from mudata import MuData


@dataclass(frozen=True)
class _Dataset:
    filename: str
    what: str
    source: str


DATASETS: dict[str, _Dataset] = {
    "cmap": _Dataset(
        "cmap_l1000_24cells_20drugs.h5ad",
        "CMap L1000 Level-2, 24 cell lines x 20 compounds + DMSO (326 x 978)",
        "GEO GSE92742 (LINCS Phase I, Level 2); subset distributed with uhlerlab's "
        "causal-imputation-via-synthetic-interventions code",
    ),
    "kang": _Dataset(
        "kang2018_pbmc_ifnb_small.h5ad",
        "Kang et al. 2018 IFN-beta PBMC, 7 cell types x control/stimulated (1,975 cells)",
        "GEO GSE96583; validation split distributed by the scGen authors (theislab/scgen)",
    ),
    "korkut": _Dataset(
        "korkut2015_drug_pairs.h5ad",
        "Korkut et al. 2015 SKMEL-133, 12 drugs, singles and pairs, RPPA (52 x 87)",
        "Korkut et al., eLife 2015; processed table distributed with CellBox (sanderlab)",
    ),
    "lincs_doses": _Dataset(
        "lincs_a375_kinase_inhibitor_doses.h5ad",
        "LINCS L1000 plate LJP005, A375, 59 compounds x 6 doses, Level-4 z-scores (377 x 978)",
        "HMS LINCS Joint Project plate LJP005, shipped as test data with cmapPy (BSD-3)",
    ),
    "scicar": _Dataset(
        "scicar_a549_rna_atac.h5mu",
        "sci-CAR A549 RNA + ATAC co-assay, 0/1/3 h dexamethasone (1,874 cells)",
        "Cao et al., Science 2018, GSM3271040/GSM3271041, as processed by Yang et al. 2021 "
        "(uhlerlab/cross-modal-autoencoders)",
    ),
    "pbmc_citeseq": _Dataset(
        "pbmc_citeseq_200cells.h5mu",
        "10x PBMC CITE-seq, RNA + 14 antibody-derived tags (200 cells)",
        "10x Genomics pbmc_10k_protein_v3, 200-cell test subset shipped by scvi-tools",
    ),
    "library": _Dataset(
        "images/library.png",
        "Library photograph (704 x 448 RGB) of the published CNTK inpainting table",
        "uhlerlab/ntk_matrix_completion, image_inpainting_notebooks/data",
    ),
    "vase": _Dataset(
        "images/vase.png",
        "Vase photograph (320 x 320 RGB) of the published CNTK inpainting table",
        "uhlerlab/ntk_matrix_completion, image_inpainting_notebooks/data",
    ),
}

#: Datasets that are images with a mask file next to them (``<name>_mask.png``).
IMAGES = ("library", "vase")


def _source_checkout() -> Path | None:
    """The repository root when scimpute is imported from a source checkout (``src/`` layout).

    ``None`` for an installed wheel (site-packages), where a folder next to the package means
    nothing to the user.
    """
    package = Path(__file__).resolve().parents[1]
    root = package.parents[1]
    if package.parent.name == "src" and (root / "pyproject.toml").is_file():
        return root
    return None


def _candidates(data_dir: str | os.PathLike | None) -> list[Path]:
    """Folders to look in, each once (by resolved path).

    ``data_dir`` alone when given; else the environment variable, ``../shared/data`` from the
    working directory and from a source checkout.
    """
    if data_dir is not None:
        return [Path(data_dir)]
    out = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        out.append(Path(env))
    out.append(Path.cwd().parent / "shared" / "data")
    root = _source_checkout()
    if root is not None:
        out.append(root.parent / "shared" / "data")
    unique: dict[str, Path] = {}
    for c in out:
        unique.setdefault(os.path.realpath(c), c)
    return [Path(k) for k in unique]


def data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first existing directory among ``data_dir``, ``$SCIMPUTE_DATA_DIR``, ``../shared/data``.

    Parameters
    ----------
    data_dir
        A directory to try first.

    Returns
    -------
    The resolved directory, or ``None`` when none exists.

    """
    for c in _candidates(data_dir):
        if c.is_dir():
            return c.resolve()
    return None


def dataset_path(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of one shared dataset file.

    Parameters
    ----------
    name
        One of :data:`DATASETS` (``"cmap"``, ``"kang"``, ...).
    data_dir
        Directory to look in first (then ``$SCIMPUTE_DATA_DIR``, ``../shared/data``).

    Returns
    -------
    The resolved path of the file.

    Raises
    ------
    ValueError
        For an unknown ``name``.
    FileNotFoundError
        When the file is in none of the directories; the message names its public source.

    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; available: {', '.join(DATASETS)}.")
    ds = DATASETS[name]
    tried = []
    for c in _candidates(data_dir):
        p = c / ds.filename
        tried.append(str(c))
        if p.is_file():
            return p.resolve()
    raise FileNotFoundError(
        f"Dataset file {ds.filename!r} ({ds.what}) was not found in: {', '.join(tried)}. "
        f"Point data_dir= or the environment variable {DATA_DIR_ENV} at the directory that "
        f"holds it. Public source: {ds.source}."
    )


def _read(name: str, data_dir):
    path = dataset_path(name, data_dir)
    if path.suffix == ".h5mu":
        import mudata as md

        return md.read_h5mu(path)
    return ad.read_h5ad(path)


def cmap(data_dir: str | os.PathLike | None = None) -> ad.AnnData:
    """CMap L1000 Level-2 intensities: 24 cell lines x 20 compounds + DMSO vehicle.

    326 replicate-averaged profiles x 978 landmark genes (linear scale).
    ``obs["cell_id"]`` is the context, ``obs["pert_id"]`` the compound, ``"DMSO"`` the
    control. Source: GEO GSE92742 (LINCS Phase I).

    Parameters
    ----------
    data_dir
        Directory holding the file; defaults to ``$SCIMPUTE_DATA_DIR``, then
        ``../shared/data``.

    Returns
    -------
    The profiles as an :class:`~anndata.AnnData`.

    Raises
    ------
    FileNotFoundError
        When the file is not found; the message names where it was looked for and its
        public source.

    """
    return _read("cmap", data_dir)


def kang(data_dir: str | os.PathLike | None = None) -> ad.AnnData:
    """Kang et al. 2018 IFN-beta stimulated PBMC (scGen's validation split).

    1,975 log-normalised cells x 6,998 genes; ``obs["cell_type"]`` (7 types) and
    ``obs["condition"]`` (``"control"`` / ``"stimulated"``).

    Parameters
    ----------
    data_dir
        Directory holding the file; defaults to ``$SCIMPUTE_DATA_DIR``, then
        ``../shared/data``.

    Returns
    -------
    The data as a :class:`~anndata.AnnData`.

    Raises
    ------
    FileNotFoundError
        When the file is not found; the message names where it was looked for and its
        public source.

    """
    return _read("kang", data_dir)


def korkut(data_dir: str | os.PathLike | None = None) -> ad.AnnData:
    """Korkut et al. 2015 SKMEL-133 drug singles and pairs (RPPA, log2 ratio to control).

    52 conditions x 87 readouts; ``obs["perturbation"]`` is ``"A"`` or ``"A+B"``,
    ``obs["dose"]`` the doses in the same order; a ``"control"`` row of zeros.

    Parameters
    ----------
    data_dir
        Directory holding the file; defaults to ``$SCIMPUTE_DATA_DIR``, then
        ``../shared/data``.

    Returns
    -------
    The data as a :class:`~anndata.AnnData`.

    Raises
    ------
    FileNotFoundError
        When the file is not found; the message names where it was looked for and its
        public source.

    """
    return _read("korkut", data_dir)


def lincs_doses(data_dir: str | os.PathLike | None = None) -> ad.AnnData:
    """LINCS L1000 plate LJP005: A375, 59 compounds x 6 doses, Level-4 z-scores.

    377 wells x 978 genes; ``obs["pert_iname"]``, ``obs["pert_dose_um"]`` (uM),
    ``obs["pert_type"]``.

    Parameters
    ----------
    data_dir
        Directory holding the file; defaults to ``$SCIMPUTE_DATA_DIR``, then
        ``../shared/data``.

    Returns
    -------
    The data as a :class:`~anndata.AnnData`.

    Raises
    ------
    FileNotFoundError
        When the file is not found; the message names where it was looked for and its
        public source.

    """
    return _read("lincs_doses", data_dir)


def scicar(data_dir: str | os.PathLike | None = None) -> MuData:
    """sci-CAR A549 co-assay (MuData): RNA (2,613 genes) and ATAC (815 peaks), 1,874 cells.

    ``obs["treatment_time_h"]`` is 0, 1 or 3 h of dexamethasone.

    Parameters
    ----------
    data_dir
        Directory holding the file; defaults to ``$SCIMPUTE_DATA_DIR``, then
        ``../shared/data``.

    Returns
    -------
    The data as a :class:`~mudata.MuData`.

    Raises
    ------
    FileNotFoundError
        When the file is not found; the message names where it was looked for and its
        public source.

    """
    return _read("scicar", data_dir)


def pbmc_citeseq(data_dir: str | os.PathLike | None = None) -> MuData:
    """10x PBMC CITE-seq (MuData): raw RNA counts (``rna``) and 14 protein ADTs (``prot``).

    200 cells.

    Parameters
    ----------
    data_dir
        Directory holding the file; defaults to ``$SCIMPUTE_DATA_DIR``, then
        ``../shared/data``.

    Returns
    -------
    The data as a :class:`~mudata.MuData`.

    Raises
    ------
    FileNotFoundError
        When the file is not found; the message names where it was looked for and its
        public source.

    """
    return _read("pbmc_citeseq", data_dir)


def inpainting_image(
    name: str, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One of the published inpainting images with its mask.

    Parameters
    ----------
    name
        ``"library"`` or ``"vase"`` (``images/<name>.png`` and ``images/<name>_mask.png`` in
        the shared data directory).
    data_dir
        Directory to look in first (then ``$SCIMPUTE_DATA_DIR``, ``../shared/data``).

    Returns
    -------
    ``(image, mask)``: the RGB image as ``float32`` in ``[0, 1]``, shape ``(rows, cols, 3)``,
    and the boolean mask, shape ``(rows, cols)``, True where a pixel is observed (the mask
    file's value 0 marks a missing pixel, as in the published code).

    """
    import numpy as np
    from PIL import Image

    if name not in IMAGES:
        raise ValueError(f"Unknown image {name!r}; available: {', '.join(IMAGES)}.")
    path = dataset_path(name, data_dir)
    with Image.open(path) as im:
        img = np.asarray(im.convert("RGB"), np.float32) / 255.0
    with Image.open(path.with_name(f"{path.stem}_mask.png")) as im:
        mask = np.asarray(im) > 0
    if mask.ndim == 3:
        mask = mask[..., 0]
    return img, mask
