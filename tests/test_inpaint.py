"""scimpute.tl.inpaint: images and spatial AnnData lattices (CNTK kernel regression)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")
ad = pytest.importorskip("anndata")

import scimpute as si  # noqa: E402
from scimpute._keys import Key  # noqa: E402
from scimpute._params import ParamError  # noqa: E402

FAST = {"depth": 2, "reg": 1e-2}


def _smooth(n=16, channels=None, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, n)
    shape = (n, n) if channels is None else (n, n, channels)
    phase = rng.uniform(0, 3, size=1 if channels is None else channels)
    ramp = 0.4 * (x[:, None, None] + x[None, :, None])
    img = 0.1 + ramp + 0.1 * np.sin(3 * x[:, None, None] + phase) * np.cos(2 * x[None, :, None])
    return img.reshape(shape).astype(np.float32)


def _mask(n=16):
    m = np.ones((n, n), bool)
    m[9:13, 9:13] = False
    return m


def test_grey_image_round_trip():
    img, mask = _smooth(), _mask()
    before = img.copy()
    out = si.tl.inpaint(img, mask, **FAST)
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[mask], img[mask])
    np.testing.assert_array_equal(img, before)  # input untouched
    assert 0 <= out.min() and out.max() <= 1
    err = np.sqrt(np.mean((out[~mask] - img[~mask]) ** 2))
    err_mean = np.sqrt(np.mean((img[mask].mean() - img[~mask]) ** 2))
    assert err < 0.5 * err_mean, (err, err_mean)


def test_rgb_image_and_integer_mask_and_auto_ridge():
    img = _smooth(channels=3)
    mask = _mask().astype(np.uint8) * 255  # as in the published mask files
    out = si.tl.inpaint(img, mask, depth=2)
    assert out.shape == img.shape
    np.testing.assert_array_equal(out[mask > 0], img[mask > 0])
    # the same seed gives the same numbers
    np.testing.assert_array_equal(out, si.tl.inpaint(img, mask, depth=2))


def test_auto_ridge_is_the_held_out_minimum():
    from scimpute.ntk import CntkParams, fill_image

    img, mask = _smooth(), _mask()
    p = CntkParams.from_kwargs("t", {"depth": 2, "kernel_size": 3})
    _, info = fill_image(img[None], mask, p)
    scores = info["validation_mse"]["stationary"]
    assert len(scores) == 4
    assert repr(info["reg"]) == min(scores, key=scores.get)


def test_auto_kernel_size_is_the_held_out_minimum_and_blocks_are_hole_shaped():
    from scimpute.ntk import CntkParams, fill_image
    from scimpute.ntk._image import KERNEL_SIZE_GRID, hole_side, kernel_sizes

    img, mask = _smooth(), _mask()
    _, info = fill_image(img[None], mask, CntkParams.from_kwargs("t", {"depth": 2}))
    v = info["validation_mse"]
    assert len(v) == len(KERNEL_SIZE_GRID)
    flat = {(k, r): e for k, d in v.items() for r, e in d.items()}
    best = min(flat, key=flat.get)
    assert best == (f"stationary, kernel_size={info['kernel_size']}", repr(info["reg"]))
    # the published filter size above the base size where candidates are cheap
    assert kernel_sizes(CntkParams(), (256, 256)) == (3,)
    assert kernel_sizes(CntkParams(), (48, 48)) == KERNEL_SIZE_GRID
    # held-out blocks about as wide as the holes; a 1-pixel hole gives the minimum, 2
    m = np.ones((64, 64), bool)
    m[10:16, 20:26] = False
    assert 5 <= hole_side(m) <= 6
    m[30:50, 30:50] = False  # wider holes, wider blocks (up to 1/8 of the image)
    assert hole_side(m) == 8
    m = np.ones((64, 64), bool)
    m[5, 5] = False
    assert hole_side(m) == 2
    with pytest.raises(ValueError, match="odd"):
        CntkParams.from_kwargs("t", {"kernel_size": 4})


@pytest.mark.parametrize(
    ("image", "mask", "kwargs", "err", "match"),
    [
        (np.zeros((4, 4, 4, 4)), np.ones((4, 4)), {}, ValueError, "2-D"),
        (np.zeros((16, 16)), np.ones((8, 8)), {}, ValueError, "mask must have"),
        (np.full((16, 16), 2.0), _mask(), {}, ValueError, r"\[0, 1\]"),
        (np.zeros((16, 16)), np.ones((16, 16)), {}, ValueError, "nothing to fill"),
        (np.zeros((16, 16)), np.zeros((16, 16)), {}, ValueError, "no pixel"),
        (np.zeros((16, 16)), None, {}, ValueError, "mask is required"),
        (np.zeros((16, 16)), _mask(), {"kernel": "rbf"}, ValueError, "kernel"),
        (np.zeros((16, 16)), _mask(), {"bogus": 1}, TypeError, "bogus"),
        (np.zeros((16, 16)), _mask(), {"reg": -1.0}, ParamError, "reg"),
        (np.zeros((16, 16)), _mask(), {"key_added": "x"}, TypeError, "AnnData"),
        (np.zeros((6, 6)), np.eye(6, dtype=bool), {"depth": 2}, ValueError, "too small"),
    ],
)
def test_bad_input_raises(image, mask, kwargs, err, match):
    with pytest.raises(err, match=match):
        si.tl.inpaint(image, mask, **kwargs)


def _lattice_adata(n=16, genes=3, step=100.0, seed=0):
    img = _smooth(n, channels=genes, seed=seed).reshape(n * n, genes)
    xx, yy = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = ad.AnnData(img * 10)
    a.var_names = [f"g{i}" for i in range(genes)]
    a.obsm["spatial"] = np.stack([xx.ravel(), yy.ravel()], 1) * step + 7.0
    return a, _mask(n).ravel()


def test_spatial_lattice_fills_missing_spots():
    a, obs = _lattice_adata()
    truth = a.X.copy()
    X = a.X.copy()
    X[~obs] = np.nan  # unmeasured spots may hold anything
    a.X = X
    si.tl.inpaint(a, obs, **FAST)
    out = a.layers[Key.uns.inpaint]
    np.testing.assert_array_equal(out[obs], X[obs])
    assert np.all(np.isfinite(out))
    err = np.sqrt(np.mean((out[~obs] - truth[~obs]) ** 2))
    err_mean = np.sqrt(np.mean((truth[obs].mean(0) - truth[~obs]) ** 2))
    assert err < 0.5 * err_mean
    np.testing.assert_array_equal(a.X[obs], X[obs])  # X untouched
    uns = a.uns[Key.uns.inpaint]
    assert uns["params"]["reg"] == 1e-2 and uns["params"]["kernel"] == "auto"
    assert uns["info"]["0"]["n_missing"] == int((~obs).sum())


def test_spatial_genes_subset_and_pcs_and_obs_column():
    a, obs = _lattice_adata()
    a.obs["measured"] = obs
    si.tl.inpaint(a, "measured", genes=["g1"], key_added="fill", **FAST)
    out = a.layers["fill"]
    np.testing.assert_array_equal(out[:, [0, 2]], a.X[:, [0, 2]])  # others copied
    assert not np.allclose(out[~obs, 1], a.X[~obs, 1] * 0)
    si.tl.inpaint(a, obs, n_comps=2, key_added="pcs", **FAST)
    assert a.layers["pcs"].shape == a.shape
    np.testing.assert_array_equal(a.layers["pcs"][obs], a.X[obs])


def test_spatial_errors_leave_the_object_untouched():
    a, obs = _lattice_adata()
    a.obsm["spatial"] = a.obsm["spatial"] + np.random.default_rng(0).normal(size=(len(a), 2))
    with pytest.raises(ValueError, match="regular square lattice"):
        si.tl.inpaint(a, obs, **FAST)
    assert Key.uns.inpaint not in a.layers and Key.uns.inpaint not in a.uns
    b, obs = _lattice_adata()
    with pytest.raises(ValueError, match="shape"):
        si.tl.inpaint(b, obs[:-1], **FAST)
    del b.obsm["spatial"]
    with pytest.raises(KeyError, match="spatial"):
        si.tl.inpaint(b, obs, **FAST)
    with pytest.raises(TypeError, match="AnnData"):
        si.tl.inpaint({"x": 1}, obs)


def test_spatial_never_writes_over_its_input_layer():
    a, obs = _lattice_adata()
    a.layers["counts"] = a.X.copy()
    before = a.layers["counts"].copy()
    with pytest.raises(ValueError, match="input layer"):
        si.tl.inpaint(a, obs, layer="counts", key_added="counts", **FAST)
    np.testing.assert_array_equal(a.layers["counts"], before)
    assert Key.uns.inpaint not in a.uns


# ------------------------------------------------------------ kernel choice (kernel="auto")
def _noisy_lattice(n=32, genes=6, seed=0, noise=0.1, block=5, frac=0.2):
    """Softplus of smooth Gaussian random fields + noise; spots removed in square blocks."""
    rng = np.random.default_rng(seed)
    f2 = np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None] ** 2
    fields = []
    for ell in rng.uniform(3, 6, size=3):
        f = np.fft.ifft2(
            np.exp(-0.5 * f2 * (2 * np.pi * ell) ** 2) * np.fft.fft2(rng.normal(size=(n, n)))
        ).real
        fields.append((f / f.std()).ravel())
    X = np.logaddexp(0, np.stack(fields, 1) @ rng.normal(size=(3, genes)) + 1.0)
    X = X + noise * rng.normal(size=X.shape)
    hide = np.zeros((n, n), bool)
    while hide.mean() < frac:
        r, c = rng.integers(0, n - block + 1, size=2)
        hide[r : r + block, c : c + block] = True
    xx, yy = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = ad.AnnData(X.astype(np.float32))
    a.obsm["spatial"] = np.stack([xx.ravel(), yy.ravel()], 1).astype(float)
    return a, ~hide.ravel()


def _baselines(a, obs):
    from skimage.restoration import inpaint_biharmonic
    from sklearn.neighbors import NearestNeighbors

    n = int(np.sqrt(a.n_obs))
    X, co = np.asarray(a.X), a.obsm["spatial"]
    _, idx = NearestNeighbors(n_neighbors=6).fit(co[obs]).kneighbors(co[~obs])
    nn = X[obs][idx].mean(axis=1)
    bh = np.stack(
        [
            inpaint_biharmonic(np.where(obs, X[:, g], 0).reshape(n, n), ~obs.reshape(n, n))
            for g in range(a.n_vars)
        ],
        -1,
    ).reshape(n * n, -1)[~obs]
    return nn, bh


def test_validated_kernel_beats_biharmonic_and_nn_averaging_per_gene():
    pytest.importorskip("skimage")
    a, obs = _noisy_lattice()
    truth = np.asarray(a.X)[~obs]  # the held-out noisy values: what a user can measure
    si.tl.inpaint(a, obs, random_state=0)  # kernel="auto": chosen on held-out blocks
    rmse = lambda p: np.sqrt(np.mean((p - truth) ** 2, axis=0))  # noqa: E731
    ours = rmse(a.layers[Key.uns.inpaint][~obs])
    nn, bh = (rmse(p) for p in _baselines(a, obs))
    assert ours.mean() < bh.mean() and ours.mean() < nn.mean(), (ours, bh, nn)
    assert np.mean(ours < bh) >= 0.8 and np.all(ours < nn), (ours, bh, nn)
    info = a.uns[Key.uns.inpaint]["info"]["0"]
    scores = info["validation_score"]
    assert set(info["chosen"]) == {min(scores, key=scores.get)}  # the held-out minimum
    assert any(k.startswith("cntk") for k in scores)  # the CNTK is a candidate
    assert a.uns[Key.uns.inpaint]["params"]["kernel"] == "auto"


def test_block_groups_are_disjoint_hole_wide_blocks_of_observed_spots():
    from scimpute.tl._inpaint_kernels import InpaintParams, block_groups

    mask = np.ones((30, 30), bool)
    mask[5:10, 5:10] = False
    p = InpaintParams(folds=3, cv_holdout=0.2)
    g = block_groups(mask, 4, p, random_state=1)
    assert len(g) == 3
    assert not np.any(g[0] & g[1]) and not np.any(g[1] & g[2])
    assert all(not np.any(h & ~mask) for h in g)
    assert all(0.1 < h.sum() / mask.sum() < 0.3 for h in g)
    for a_, b_ in zip(g, block_groups(mask, 4, p, random_state=1), strict=True):
        np.testing.assert_array_equal(a_, b_)  # same seed, same blocks


def test_stationary_kernels_match_sklearn():
    from sklearn.gaussian_process.kernels import RBF, Matern

    from scimpute.tl._inpaint_kernels import stationary_kernel

    x = np.linspace(0, 5, 11)[:, None]
    r = np.abs(x - x.T)
    for fam, ref in [
        ("gaussian", RBF(2.0)),
        ("matern52", Matern(2.0, nu=2.5)),
        ("matern32", Matern(2.0, nu=1.5)),
    ]:
        np.testing.assert_allclose(stationary_kernel(fam, r, 2.0), ref(x), rtol=1e-10)


def test_stationary_fft_cg_equals_the_dense_solve():
    img = _smooth(24)
    m = np.ones((24, 24), bool)
    m[4:9, 10:16] = False
    m[15:20, 3:7] = False
    kw = {"length_scale": 3.0, "reg": 1e-2}
    dense = si.tl.inpaint(img, m, kernel="matern52", solver="cholesky", **kw)
    cg = si.tl.inpaint(img, m, kernel="matern52", solver="cg", **kw)
    np.testing.assert_allclose(cg, dense, atol=2e-4)
    np.testing.assert_array_equal(dense[m], img[m])
    err = np.sqrt(np.mean((dense[~m] - img[~m]) ** 2))
    assert err < 0.3 * np.sqrt(np.mean((img[m].mean() - img[~m]) ** 2))


def test_auto_kernel_on_an_image_is_the_cntk_and_select_column_chooses_per_gene():
    img, mask = _smooth(), _mask()
    np.testing.assert_array_equal(
        si.tl.inpaint(img, mask, **FAST), si.tl.inpaint(img, mask, kernel="cntk", **FAST)
    )
    a, obs = _noisy_lattice(n=16, genes=3, block=3)
    si.tl.inpaint(a, obs, kernel="gaussian", select="column", reg=1e-2, key_added="g")
    info = a.uns["g"]["info"]["0"]
    assert len(info["chosen"]) == 3 and all(c.startswith("gaussian") for c in info["chosen"])
    assert sum(info["chosen_counts"].values()) == 3
    with pytest.raises(ParamError, match="select"):
        si.tl.inpaint(a, obs, select="gene")
