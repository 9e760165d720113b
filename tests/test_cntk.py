"""CNTK layer recursions, expansion and solvers (scimpute.ntk)."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from scimpute import ntk  # noqa: E402
from scimpute.ntk._expand import expand_kernel, kernel_block  # noqa: E402
from scimpute.ntk._solve import StationaryOperator, solve_cg, solve_cholesky  # noqa: E402


def _net(layers, widths_in, width, key):
    """Parameters of a finite conv net of ``layers`` (one output channel)."""
    convs = [layer for layer in layers if layer.kind == "conv"]
    keys = jax.random.split(key, len(convs))
    params, c_in = [], widths_in
    for i, (layer, k) in enumerate(zip(convs, keys, strict=True)):
        c_out = 1 if i == len(convs) - 1 else width
        params.append(jax.random.normal(k, (layer.size, layer.size, c_in, c_out), jnp.float32))
        c_in = c_out
    return params


def _apply(layers, params, x):
    """Forward pass in NTK parametrisation: circular padding, LeakyReLU scaled as the duals."""
    h, i, first, slope = x, 0, True, 0.0
    for layer in layers:
        if layer.kind == "conv":
            W = params[i]
            i += 1
            r = (layer.size - 1) // 2
            hp = jnp.pad(h, ((r, r), (r, r), (0, 0)), mode="wrap")
            z = jax.lax.conv_general_dilated(
                hp[None], W, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )[0]
            if not first:
                c = 2.0 / (1.0 + slope**2)
                z = z * jnp.sqrt(c / (layer.size**2 * h.shape[-1]))
            first, h = False, z
        elif layer.kind == "act":
            slope = layer.slope
            h = jnp.where(h > 0, h, slope * h)
        elif layer.kind == "down":
            h = h[::2, ::2]
        else:
            h = jnp.repeat(jnp.repeat(h, 2, axis=0), 2, axis=1)
    return h[..., 0]


def _empirical_ntk(layers, x, width, seed):
    params = _net(layers, x.shape[-1], width, jax.random.PRNGKey(seed))
    J = jax.jacrev(lambda p: _apply(layers, p, x).reshape(-1))(params)
    J = jnp.concatenate([j.reshape(j.shape[0], -1) for j in J], axis=1)
    d = x.shape[0]
    return np.asarray(J @ J.T).reshape(d, d, d, d)


def test_recursion_matches_the_empirical_ntk_as_width_grows():
    d = 8
    layers = ntk.encoder_decoder(1, slope=0.1)
    prior = ntk.make_prior("meshgrid", d)
    K = ntk.cntk_full(layers, prior, d)
    # float32 throughout: another test may have switched JAX to 64-bit in this process
    x = jnp.asarray(np.moveaxis(prior.V, 0, -1), jnp.float32)
    errs = {}
    for width in (16, 64):
        e = [
            np.linalg.norm(_empirical_ntk(layers, x, width, s) - K) / np.linalg.norm(K)
            for s in range(4)
        ]
        errs[width] = float(np.mean(e))
    assert errs[64] < 0.75 * errs[16], errs
    assert errs[64] < 0.4, errs


@pytest.mark.parametrize("prior", ["stationary", "meshgrid", "identity"])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_anchor_rows_equal_the_full_kernel(prior, mode):
    d = 16
    layers = ntk.encoder_decoder(2, upsample=mode)
    K = ntk.cntk_full(layers, ntk.make_prior(prior, d), d)
    A = ntk.cntk_anchor_rows(layers, ntk.make_prior(prior, d), d)
    np.testing.assert_allclose(A, K[:4, :4], rtol=1e-4, atol=1e-6 * np.abs(K).max())
    # a kernel: symmetric, positive semi-definite
    M = K.reshape(d * d, d * d)
    np.testing.assert_allclose(M, M.T, atol=1e-5 * np.abs(M).max())
    assert np.linalg.eigvalsh(M.astype(np.float64)).min() > -1e-4 * np.abs(M).max()


def test_stationary_prior_gives_a_periodic_kernel():
    d, P = 16, 4
    K = ntk.cntk_full(ntk.encoder_decoder(2), ntk.make_prior("stationary", d), d)
    shifted = np.roll(K, (P, P, P, P), axis=(0, 1, 2, 3))
    np.testing.assert_allclose(shifted, K, atol=1e-6)


def test_duals_match_monte_carlo():
    rng = np.random.default_rng(0)
    rho, slope = 0.3, 0.2
    u = rng.normal(size=400_000)
    v = rho * u + np.sqrt(1 - rho**2) * rng.normal(size=u.size)
    phi = lambda x: np.where(x > 0, x, slope * x)  # noqa: E731
    dphi = lambda x: np.where(x > 0, 1.0, slope)  # noqa: E731
    c = 2 / (1 + slope**2)
    k1, k0 = ntk.leaky_relu_duals(np.float64(rho), slope)
    assert abs(k1 - c * np.mean(phi(u) * phi(v))) < 0.01
    assert abs(k0 - c * np.mean(dphi(u) * dphi(v))) < 0.01


def test_bad_architectures_raise():
    L = ntk.Layer
    with pytest.raises(ValueError, match="first layer"):
        ntk.cntk_full((L("act"), L("conv")), ntk.make_prior("identity", 8), 8)
    with pytest.raises(ValueError, match="followed by an 'act'"):
        ntk.cntk_full((L("conv"), L("conv")), ntk.make_prior("identity", 8), 8)
    with pytest.raises(ValueError, match="maps 8 pixels"):
        ntk.cntk_full((L("conv"), L("act"), L("down"), L("conv")), ntk.make_prior("identity", 8), 8)
    with pytest.raises(ValueError, match="prior"):
        ntk.make_prior("noise", 8)


def _expanded(A, W, H):
    """The published expansion written out pixel by pixel (reference)."""
    P, d = A.shape[0], A.shape[2]
    K = np.zeros((W, H, W, H), np.float32)
    for ar in range(W):
        for ac in range(H):
            i, j = ar % P, ac % P
            for br in range(W):
                for bc in range(H):
                    R, C = (br - ar + P) % W, (bc - ac + P) % H
                    if R < d and C < d:
                        K[ar, ac, br, bc] = A[i, j, (R - P + i) % d, (C - P + j) % d]
                    else:
                        K[ar, ac, br, bc] = A[i, j].min()
    return K


def test_expansion_and_fft_operator():
    d, W, H = 8, 12, 10
    A = ntk.cntk_full(ntk.encoder_decoder(1), ntk.make_prior("meshgrid", d), d)[:2, :2]
    ref = _expanded(A, W, H)
    np.testing.assert_allclose(expand_kernel(A, (W, H)), ref, rtol=1e-6)
    g = np.argwhere(np.ones((W, H)))
    M = ref.reshape(W * H, W * H)
    B = np.asarray(kernel_block(A, (W, H), g, g))
    np.testing.assert_allclose(B, (M + M.T) / 2, rtol=1e-6)
    op = StationaryOperator(A, (W, H), rank=4)  # full rank (P^2 = 4): exact
    assert op.relative_error < 1e-6
    w = np.random.default_rng(1).normal(size=(2, W, H)).astype(np.float32)
    got = np.asarray(op.image_matvec(jnp.asarray(w))).reshape(2, -1)
    got = got + op.floor * w.reshape(2, -1).sum(axis=1, keepdims=True)  # the floor, rank one
    np.testing.assert_allclose(got, (B @ w.reshape(2, -1).T).T, rtol=1e-4, atol=1e-3)


def test_cg_matches_the_dense_solve_on_a_small_image():
    d, W, H = 8, 16, 16
    A = ntk.cntk_full(ntk.encoder_decoder(1), ntk.make_prior("stationary", d), d)[:2, :2]
    rng = np.random.default_rng(0)
    mask = rng.random((W, H)) > 0.3
    obs = np.argwhere(mask)
    K = kernel_block(A, (W, H), obs, obs)
    Y = jnp.asarray(rng.random((len(obs), 3)), jnp.float32)
    lam = 1e-2 * float(jnp.mean(jnp.diag(K)))
    exact = solve_cholesky(K, Y, 1e-2)
    x, info = solve_cg(lambda v, K: K @ v + lam * v, Y, args=(K,), tol=1e-6, maxiter=2000)
    assert info.relative_residual.max() < 1e-4
    np.testing.assert_allclose(
        np.asarray(x), np.asarray(exact), rtol=2e-3, atol=2e-3 * np.abs(exact).max()
    )
    # the FFT operator solves the same system (full image, scatter/gather)
    from scimpute.ntk._image import CntkParams, _solve

    p = CntkParams.from_kwargs("t", {"rank": 4, "tol": 1e-6, "maxiter": 2000})
    y = np.asarray(Y)
    dense, _ = _solve(A, (W, H), mask, y, 1e-2, p, "cholesky")
    fft, info2 = _solve(A, (W, H), mask, y, 1e-2, p, "cg")
    np.testing.assert_allclose(fft, dense, rtol=1e-2, atol=1e-2 * np.abs(dense).max())
    assert info2["rank_relative_error"] < 1e-6


# ---------------------------------------------------------------- shared with method="ntk"
def _old_relu_ntk(x, depth):
    """The arc-cosine recursion of ``method="ntk"`` as written before the kernels were shared."""
    s = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
    k = s.copy()
    for _ in range(depth):
        phi = (np.sqrt(np.clip(1 - s * s, 0, None)) + (np.pi - np.arccos(s)) * s) / np.pi
        k = phi + k * (np.pi - np.arccos(s)) / np.pi
        s = phi
    return k


def test_fc_ntk_is_the_ntk_method_kernel_and_shares_the_cntk_layer_step():
    from scimpute.methods import _ntk_numpy
    from scimpute.methods import ntk as ntk_method

    x = np.linspace(-1.3, 1.3, 201)
    for depth in (1, 2, 5):
        ref = _old_relu_ntk(x, depth)
        np.testing.assert_allclose(ntk.fc_ntk(x, depth), ref, rtol=1e-12)
        np.testing.assert_allclose(_ntk_numpy.ntk_kernel_numpy(x, depth), ref, rtol=1e-12)
        jx = np.asarray(ntk_method.ntk_kernel(jnp.asarray(x, jnp.float32), depth))
        np.testing.assert_allclose(jx, ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            np.asarray(ntk.fc_ntk(jnp.asarray(x, jnp.float32), depth, xp=jnp)), jx, rtol=1e-6
        )
    assert float(ntk.fc_ntk(1.0, 3)) == pytest.approx(4.0)
    # one LeakyReLU layer of the CNTK is the fully connected step on normalised covariances
    lam = np.array([[2.0, 0.6], [0.6, 0.5]])
    nrm = np.sqrt(np.outer(np.diag(lam), np.diag(lam)))
    sig, th = ntk.ntk_layer(lam, np.ones_like(lam), 0.2, norm=nrm)
    k1, k0 = ntk.leaky_relu_duals(lam / nrm, 0.2)
    np.testing.assert_allclose(sig, k1 * nrm)
    np.testing.assert_allclose(th, k0)
    a1, a0 = ntk.leaky_relu_duals(0.3, 0.2)
    assert float(ntk.fc_ntk(0.3, 1, slope=0.2)) == pytest.approx(float(a1 + 0.3 * a0))
    with pytest.raises(ValueError, match="depth"):
        ntk.fc_ntk(0.5, 0)


def test_ntk_method_predictions_unchanged_by_the_shared_kernel():
    """Values of ``method="ntk"`` recorded before the refactor (same seeded grid)."""
    import scimpute as si
    from scimpute.methods import get_method
    from scimpute.methods.ntk import NtkParams
    from scimpute.tl._data import to_grid_data

    d, _ = to_grid_data(si.datasets.simulate_grid(6, 8, 40, fraction_measured=0.6, random_state=1))
    targets = np.argwhere(~d.measured)
    cases = {
        ("numpy", 3, "auto"): (659.6478219823584, [-0.027012796004606168, 0.8312767974379924]),
        ("jax", 1, 1e-3): (713.7673689072583, [0.06930890847856075, 0.8135330215349432]),
    }
    for (backend, depth, reg), (abs_sum, first) in cases.items():
        p = NtkParams.from_kwargs("ntk", {"backend": backend, "depth": depth, "reg": reg})
        pred = np.asarray(get_method("ntk").fn(d, targets, p).prediction)
        assert np.abs(pred).sum() == pytest.approx(abs_sum, rel=1e-6)
        np.testing.assert_allclose(pred[0, :2], first, rtol=1e-6)


# ---------------------------------------------------------------- JAX path
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_jax_recursions_equal_numpy(mode):
    d = 16
    layers = ntk.encoder_decoder(2, slope=0.1, upsample=mode)
    prior = ntk.make_prior("meshgrid", d)
    for fn in (ntk.cntk_full, ntk.cntk_anchor_rows):
        ref = fn(layers, prior, d, backend="numpy")
        got = fn(layers, prior, d, backend="jax")
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    with pytest.raises(ValueError, match="backend"):
        ntk.cntk_full(layers, prior, d, backend="torch")


def test_backend_param_and_rule():
    from scimpute.ntk._image import resolve_backend

    p = ntk.CntkParams.from_kwargs("t", {"backend": "jax"})
    assert resolve_backend(p.backend) == "jax"
    expected = "numpy" if jax.default_backend() == "cpu" else "jax"
    assert resolve_backend("auto") == expected
    with pytest.raises(ValueError, match="backend"):
        ntk.CntkParams.from_kwargs("t", {"backend": "torch"})
