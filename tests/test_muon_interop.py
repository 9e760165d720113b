"""Interoperability with muon (optional ``interop`` extra): what ``mm.integrate`` writes is
used as it is by muon's and scanpy's multi-modal tools on the same MuData.

CI installs the extra and sets ``SCIMPUTE_REQUIRE_MUON=1`` so that a broken install fails
instead of skipping.
"""

import os
import warnings

import numpy as np
import pytest
import scanpy as sc
from sklearn.neighbors import NearestNeighbors

import scimpute as si

if os.environ.get("SCIMPUTE_REQUIRE_MUON") == "1":  # CI installs the extra: never skip there
    import muon as mu
else:
    mu = pytest.importorskip(
        "muon", reason='muon is an optional extra: pip install -e ".[interop]"'
    )

KEY = "X_scimpute"
K = 10


@pytest.fixture(scope="module")
def integrated():
    mdata = si.datasets.simulate_multimodal(200, (30, 20), random_state=0)
    si.mm.integrate(mdata, pairing=0.5, max_epochs=30, progress=False)
    return mdata


def _neighbor_sets(conn) -> list[set]:
    conn = conn.tocsr()
    return [set(conn.indices[conn.indptr[i] : conn.indptr[i + 1]]) for i in range(conn.shape[0])]


def test_shared_latent_drives_neighbors_umap_and_muon_plots(integrated, tmp_path):
    mdata = integrated.copy()
    z = mdata.obsm[KEY]
    # scanpy's neighbors on the MuData's shared latent: exactly the k-NN graph of that latent
    sc.pp.neighbors(mdata, use_rep=KEY, n_neighbors=K, key_added="scimpute")
    assert mdata.uns["scimpute"]["params"]["use_rep"] == KEY
    dist = mdata.obsp["scimpute_distances"]
    knn = NearestNeighbors(n_neighbors=K).fit(z).kneighbors(return_distance=False)
    got = _neighbor_sets(dist)
    agree = np.mean([len(g & set(k)) / (K - 1) for g, k in zip(got, knn[:, : K - 1], strict=True)])
    assert agree > 0.95  # scanpy excludes self and keeps K - 1 neighbours
    # a UMAP of that graph (scanpy's: muon's mu.tl.umap expects the per-modality use_rep of
    # a mu.pp.neighbors graph, see the WNN test), then muon's embedding plot of both bases
    sc.tl.umap(mdata, neighbors_key="scimpute")
    assert mdata.obsm["X_umap"].shape == (mdata.n_obs, 2)
    assert np.isfinite(mdata.obsm["X_umap"]).all()
    for basis in (KEY, "X_umap"):
        ax = mu.pl.embedding(mdata, basis=basis, color="label", show=False)
        offsets = ax.collections[0].get_offsets()
        assert len(offsets) == mdata.n_obs
        np.testing.assert_allclose(
            np.sort(offsets[:, 0]), np.sort(mdata.obsm[basis][:, 0]), rtol=1e-5
        )
        ax.figure.savefig(tmp_path / f"{basis}.png")
        assert (tmp_path / f"{basis}.png").stat().st_size > 0


def test_muon_filtering_keeps_scimpute_embeddings_aligned(integrated):
    """``mu.pp.filter_obs`` subsets the MuData and each modality together: scimpute's shared
    and per-modality embeddings follow the kept cells, and the fitted model still translates.
    (muon's weighted-nearest-neighbour ``mu.pp.neighbors`` also accepts the per-modality
    embeddings as ``use_rep`` but takes minutes to compile, so it is not run here.)"""
    mdata = integrated.copy()
    keep = mdata.obs["label"].to_numpy() != "type0"
    before = {
        "shared": mdata.obsm[KEY][keep],
        **{m: mdata[m].obsm[KEY][keep] for m in mdata.mod},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mu.pp.filter_obs(mdata, "label", lambda x: x != "type0")
    assert mdata.n_obs == keep.sum()
    np.testing.assert_array_equal(mdata.obsm[KEY], before["shared"])
    for m in mdata.mod:
        assert mdata[m].n_obs == keep.sum()
        np.testing.assert_array_equal(mdata[m].obsm[KEY], before[m])
    full = si.mm.translate(integrated, "m0", "m1")
    sub = si.mm.translate(mdata, "m0", "m1")
    np.testing.assert_allclose(np.asarray(sub.X), np.asarray(full.X)[keep], rtol=1e-5, atol=1e-6)


def test_h5mu_written_by_scimpute_reads_back_with_muon(integrated, tmp_path):
    path = tmp_path / "integrated.h5mu"
    integrated.write(path)
    back = mu.read(str(path))
    np.testing.assert_array_equal(back.obsm[KEY], integrated.obsm[KEY])
    for mod in integrated.mod:
        np.testing.assert_array_equal(back[mod].obsm[KEY], integrated[mod].obsm[KEY])
    out = si.mm.translate(back, "m0", "m1")
    assert out.shape == (back["m0"].n_obs, back["m1"].n_vars)
