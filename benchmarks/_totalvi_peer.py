"""totalVI (scvi-tools) as a peer of scimpute.mm on CITE-seq; run in its own venv.

Called by ``benchmarks/mm_integration.py`` through ``$SCVI_PYTHON`` (a venv with CPU torch
2.13.0 and scvi-tools 1.4.2); not imported by scimpute. Input: an ``.h5ad`` with raw RNA
counts in ``X``, raw protein counts in ``obsm["protein"]`` and a boolean
``obs["anchor"]``. Protocol: totalVI is trained on every cell's RNA, with the proteins of
the anchor cells only: the evaluation cells form their own batch whose protein counts are
zero, which totalVI treats as missing (its documented use for cells without proteins), so
their pairing is never seen. Output (JSON): the latent of every cell (the evaluation cells'
from their RNA alone), the denoised proteins (the evaluation cells' predicted from RNA),
fit time and peak RSS of this process.

    $SCVI_PYTHON benchmarks/_totalvi_peer.py IN.h5ad OUT.json SEED MAX_EPOCHS
"""

from __future__ import annotations

import json
import resource
import sys
import time

import anndata as ad
import numpy as np


def main(path_in: str, path_out: str, seed: int, max_epochs: int) -> None:
    import scvi
    import torch

    torch.set_num_threads(2)
    scvi.settings.seed = seed
    a = ad.read_h5ad(path_in)
    anchor = a.obs["anchor"].to_numpy(dtype=bool)
    prot = np.asarray(a.obsm["protein"], dtype=np.float32).copy()
    prot[~anchor] = 0.0
    a.obsm["protein"] = prot
    a.obs["batch"] = np.where(anchor, "anchors", "evaluation")
    t0 = time.perf_counter()
    scvi.model.TOTALVI.setup_anndata(a, protein_expression_obsm_key="protein", batch_key="batch")
    model = scvi.model.TOTALVI(a, n_latent=10)
    model.train(max_epochs=max_epochs, accelerator="cpu", batch_size=64)
    fit_s = time.perf_counter() - t0
    z = model.get_latent_representation()
    _, protein = model.get_normalized_expression(
        n_samples=10, return_mean=True, transform_batch="anchors"
    )
    out = {
        "latent": np.asarray(z).tolist(),
        "protein": np.log1p(np.asarray(protein)).tolist(),
        "fit_seconds": fit_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "scvi_version": scvi.__version__,
        "max_epochs": max_epochs,
    }
    with open(path_out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
