"""Layer recursions of the convolutional neural tangent kernel (CNTK) on a fixed input.

The network maps one fixed input image (the *prior*: a meshgrid, white noise, ...) to one
output image; its NTK is a kernel between output **pixels**, a 4-D array
``K[r1, c1, r2, c2]``. The recursions follow Radhakrishnan et al. (uhlerlab/
ntk_matrix_completion, ``construct_kernel/layers.py``) and Arora et al. (2019):

* input: ``Sigma_0(p, q) = a + b [p == q] + sum_c V_c(p) V_c(q)`` (:class:`Prior`);
* conv (``k x k``, circular padding, one shared filter per channel pair):
  ``Lambda(p, q) = sum_delta Sigma_h(p + delta, q + delta)`` (the pre-activation covariance)
  and ``Theta_z(p, q) = Lambda(p, q) + sum_delta Theta_h(p + delta, q + delta)``;
* activation (ReLU / LeakyReLU, normalised duals ``kappa_1``, ``kappa_0`` with
  ``kappa_1(1) = 1``, divided by ``k^2`` as in the published code):
  ``Sigma_h = kappa_1(rho) sqrt(Lambda_pp Lambda_qq) / k^2``,
  ``Theta_h = kappa_0(rho) / k^2 * Theta_z``;
* down-sampling (keep every second pixel) and up-sampling (nearest, or bilinear with
  aligned corners) act linearly on both pixel indices of ``Sigma_h`` and ``Theta_h``.

These recursions are **exact** (the infinite-width limit of the network in
:func:`scimpute.ntk.init_network` / :func:`scimpute.ntk.apply_network`; the tests check the
convergence of the empirical NTK). One difference from the published code: it interpolates
``Sigma``, ``dSigma`` and ``Theta`` separately at a bilinear up-sampling and multiplies them
afterwards, which is exact for nearest up-sampling only; here the product
``Theta_h = dSigma * Theta_z`` is interpolated, which is exact for both.

Cost. The full kernel at ``d x d`` pixels holds ``d^4`` numbers (1 GB in float32 at 128).
:func:`cntk_anchor_rows` never forms it: the first convolution is evaluated only at the
pixels a following down-sampling keeps, the encoder-decoder runs at ``d / 2`` and below,
and the layers after the last up-sampling are evaluated only for the ``P x P`` anchor rows
(``P`` = total up-sampling factor) that :func:`scimpute.ntk.expand_kernel` needs. With a
stationary prior (``Prior.kind`` ``"stationary"`` or ``"identity"``) every array below is
periodic under shifts by its resolution's up-sampling factor, so even the ``(d/2)^4`` middle
arrays are redundant; exploiting that (storing ``P^2 d^2`` numbers per level) is not
implemented, the ``(d/2)^4`` arrays (64 MB at 128 pixels) being cheap enough.

The recursions are pure NumPy functions in float32: jitting them with XLA compiles one
program per resolution and layer type, which on 2 CPU cores took longer (about 2 minutes
for a 6-level network) than the arithmetic itself (seconds below 128 pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "Layer",
    "Prior",
    "cntk_anchor_rows",
    "cntk_full",
    "encoder_decoder",
    "leaky_relu_duals",
    "make_prior",
    "upsample_matrix",
]

LayerKind = Literal["conv", "act", "down", "up"]


@dataclass(frozen=True)
class Layer:
    """One layer of a CNTK architecture.

    ``kind``: ``"conv"`` (``size`` = filter size, odd), ``"act"`` (``slope`` = negative
    slope, 0 = ReLU), ``"down"`` (keep every second pixel) or ``"up"`` (``mode``
    ``"nearest"`` or ``"bilinear"``, factor 2).
    """

    kind: LayerKind
    size: int = 3
    slope: float = 0.0
    mode: Literal["nearest", "bilinear"] = "nearest"


def encoder_decoder(
    depth: int = 6,
    *,
    kernel_size: int = 3,
    slope: float = 0.01,
    upsample: Literal["nearest", "bilinear"] = "nearest",
) -> tuple[Layer, ...]:
    """The published deep-image-prior style architecture without skip connections.

    ``[conv, act, down] * depth, conv, act, [up, conv, act] * (depth - 1), up, conv``: the
    layout of the example network in the published notebook, with ``depth`` levels (the
    published cached kernels use 6 at 128 x 128 pixels).
    """
    conv = Layer("conv", size=kernel_size)
    act = Layer("act", slope=slope)
    up = Layer("up", mode=upsample)
    down = Layer("down")
    layers: list[Layer] = []
    for _ in range(depth):
        layers += [conv, act, down]
    layers += [conv, act]
    for _ in range(depth - 1):
        layers += [up, conv, act]
    layers += [up, conv]
    return tuple(layers)


@dataclass(frozen=True)
class Prior:
    """Covariance of the fixed input: ``a + b [p == q] + sum_c V_c(p) V_c(q)``.

    ``V`` has shape ``(channels, d, d)`` (may be empty).
    """

    kind: str
    a: float
    b: float
    V: np.ndarray

    @property
    def stationary(self) -> bool:
        """True when the covariance depends on ``q - p`` only (no feature channels)."""
        return self.V.shape[0] == 0


def make_prior(kind: Literal["stationary", "identity", "meshgrid"], d: int) -> Prior:
    """The fixed-input covariances of the published code at ``d x d`` pixels.

    ``"stationary"``: 1/400 everywhere, 1/300 on the diagonal (``get_ntk(Xs=None)``);
    ``"identity"``: white-noise input (the identity matrix); ``"meshgrid"``: the two
    coordinate channels in ``[0, 1]`` of the deep-image-prior meshgrid input.
    """
    empty = np.zeros((0, d, d), np.float32)
    if kind == "stationary":
        return Prior(kind, 1 / 400, 1 / 300 - 1 / 400, empty)
    if kind == "identity":
        return Prior(kind, 0.0, 1.0, empty)
    if kind == "meshgrid":
        g = np.linspace(0.0, 1.0, d, dtype=np.float32)
        V = np.stack(np.meshgrid(g, g, indexing="xy")).astype(np.float32)
        return Prior(kind, 0.0, 0.0, V)
    raise ValueError(f"prior must be 'stationary', 'identity' or 'meshgrid', got {kind!r}.")


def leaky_relu_duals(rho, slope: float):
    """Normalised dual activations ``(kappa_1(rho), kappa_0(rho))`` of LeakyReLU.

    ``kappa_1 = c E[phi(u) phi(v)]`` and ``kappa_0 = c E[phi'(u) phi'(v)]`` for unit-variance
    Gaussians with correlation ``rho`` and ``c = 2 / (1 + slope^2)`` (so ``kappa_1(1) = 1``);
    ``slope = 0`` is ReLU. Equal to the published ``kap_1`` / ``kap_0``.
    """
    rho = np.clip(rho, -1.0, 1.0)
    theta = np.arccos(rho)
    sin = np.sqrt(np.maximum(1.0 - rho**2, 0.0))
    corr = 2 * slope / (np.pi * (slope**2 + 1))
    k1 = (rho * (np.pi - theta) + sin) / np.pi + corr * (rho * theta - sin)
    k0 = (np.pi - theta) / np.pi + corr * theta
    return k1, k0


def upsample_matrix(d: int, mode: str) -> np.ndarray:
    """``(2d, d)`` matrix of a factor-2 up-sampling: nearest, or bilinear (aligned corners)."""
    U = np.zeros((2 * d, d), np.float32)
    if mode == "nearest" or d == 1:
        U[np.arange(2 * d), np.arange(2 * d) // 2] = 1.0
        return U
    x = np.arange(2 * d) * (d - 1) / (2 * d - 1)
    lo = np.minimum(np.floor(x).astype(int), d - 2)
    w = x - lo
    U[np.arange(2 * d), lo] = 1 - w
    U[np.arange(2 * d), lo + 1] += w
    return U


def _offsets(size: int) -> list[tuple[int, int]]:
    h = (size - 1) // 2
    return [(m, n) for m in range(-h, size - h) for n in range(-h, size - h)]


# ---------------------------------------------------------------- full 4-D recursions


def _conv4(S, size: int):
    """``sum_delta S(p + delta, q + delta)`` with circular padding, on a full 4-D array."""
    out = np.zeros_like(S)
    for m, n in _offsets(size):
        out = out + np.roll(S, (-m, -n, -m, -n), axis=(0, 1, 2, 3))
    return out


def _diag4(A):
    d = A.shape[0]
    i = np.arange(d)
    return A[i[:, None], i[None, :], i[:, None], i[None, :]]


def _act(Lam, diag_rows, diag_cols, Theta_z, slope: float, size: int):
    """Activation after a convolution: returns ``(Sigma_h, Theta_h)``."""
    norm = np.sqrt(diag_rows[:, :, None, None] * diag_cols[None, None, :, :])
    safe = np.where(norm > 0, norm, 1.0)
    k1, k0 = leaky_relu_duals(Lam / safe, slope)
    Sigma = np.where(norm > 0, k1 * norm, 0.0) / size**2
    Theta = np.where(norm > 0, k0, 0.0) / size**2 * Theta_z
    return Sigma, Theta


def _first_lambda(prior: Prior, d: int, size: int, stride: int) -> np.ndarray:
    """Pre-activation covariance of the first conv at the kept pixels (4-D, float32)."""
    s = d // stride
    k2 = len(_offsets(size))
    eye = np.eye(s * s, dtype=np.float32).reshape(s, s, s, s)
    # diagonal term: sum_delta [p + delta == q + delta] = k^2 [p == q] (kept pixels distinct)
    Lam = np.full((s, s, s, s), prior.a * k2, np.float32) + prior.b * k2 * eye
    if prior.V.shape[0]:
        V = np.asarray(prior.V)
        cols = [np.roll(V, (-m, -n), axis=(1, 2))[:, ::stride, ::stride] for m, n in _offsets(size)]
        Phi = np.concatenate(cols, axis=0).reshape(-1, s * s)  # (C k^2, s^2)
        Lam = Lam + (Phi.T @ Phi).reshape(s, s, s, s)
    return Lam


def _check_layers(layers: tuple[Layer, ...], d: int) -> None:
    if not layers or layers[0].kind != "conv":
        raise ValueError("the first layer of a CNTK architecture must be a 'conv' layer.")
    if layers[-1].kind != "conv":
        raise ValueError("the last layer of a CNTK architecture must be a 'conv' layer.")
    res = d
    for i, layer in enumerate(layers):
        if layer.kind == "act" and (i == 0 or layers[i - 1].kind != "conv"):
            raise ValueError("each 'act' layer must follow a 'conv' layer.")
        if layer.kind == "conv" and i < len(layers) - 1 and layers[i + 1].kind != "act":
            raise ValueError("each 'conv' layer but the last must be followed by an 'act' layer.")
        if layer.kind == "conv" and layer.size % 2 == 0:
            raise ValueError(f"conv filter sizes must be odd, got {layer.size}.")
        if layer.kind == "down":
            if res % 2:
                raise ValueError(f"cannot down-sample an image of {res} pixels per side.")
            res //= 2
        elif layer.kind == "up":
            res *= 2
    if res != d:
        raise ValueError(f"the architecture maps {d} pixels per side to {res}; they must agree.")


def _up4(A, mode: str):
    U = np.asarray(upsample_matrix(A.shape[0], mode))
    if mode == "nearest":
        for ax in range(4):
            A = np.repeat(A, 2, axis=ax)
        return A
    return np.einsum("ai,bj,ck,dl,ijkl->abcd", U, U, U, U, A, optimize=True)


def _run(layers, Sigma, Theta, start: int, stop: int):
    """Apply ``layers[start:stop]`` to a full 4-D state: ``(Sigma_h, Theta_h, Theta_z)``."""
    Lam = Theta_z = None
    for i in range(start, stop):
        layer = layers[i]
        if layer.kind == "conv":
            Lam = _conv4(Sigma, layer.size)
            Theta_z = Lam + _conv4(Theta, layer.size)
            size = layer.size
            Sigma = Theta = None
        elif layer.kind == "act":
            diag = _diag4(Lam)
            Sigma, Theta = _act(Lam, diag, diag, Theta_z, float(layer.slope), size)
            Lam = Theta_z = None
        elif layer.kind == "down":
            Sigma, Theta = Sigma[::2, ::2, ::2, ::2], Theta[::2, ::2, ::2, ::2]
        else:
            Sigma, Theta = _up4(Sigma, layer.mode), _up4(Theta, layer.mode)
    return Sigma, Theta, Theta_z


def _start_state(layers, prior: Prior, d: int):
    """State after the first conv and act (and down, when it follows): ``(Sigma, Theta, next)``.

    With a down-sampling right after, the first convolution is evaluated only at the pixels
    it keeps, so the full-resolution ``d^4`` array is never formed.
    """
    fused = len(layers) > 3 and layers[2].kind == "down"
    Lam = _first_lambda(prior, d, layers[0].size, 2 if fused else 1)
    diag = _diag4(Lam)
    Sigma, Theta = _act(Lam, diag, diag, Lam, float(layers[1].slope), layers[0].size)
    return Sigma, Theta, 3 if fused else 2


def cntk_full(layers: tuple[Layer, ...], prior: Prior, d: int) -> np.ndarray:
    """The CNTK of ``layers`` on the ``d x d`` fixed input, as a ``(d, d, d, d)`` array.

    Forms ``d^4`` numbers at the output resolution: meant for small images (tests, 32 x 32).
    """
    _check_layers(layers, d)
    if len(layers) == 1:
        return np.asarray(_first_lambda(prior, d, layers[0].size, 1))
    Sigma, Theta, nxt = _start_state(layers, prior, d)
    return np.asarray(_run(layers, Sigma, Theta, nxt, len(layers))[2], dtype=np.float32)


# ---------------------------------------------------------------- anchor-row recursions


def _block_idx(P: int, halo: int, d: int) -> np.ndarray:
    return np.arange(-halo, P + halo) % d


def cntk_anchor_rows(layers: tuple[Layer, ...], prior: Prior, d: int) -> np.ndarray:
    """Rows ``K[i, j, :, :]``, ``0 <= i, j < P``, of the CNTK (``P`` = up-sampling factor).

    Equal to ``cntk_full(layers, prior, d)[:P, :P]`` without forming the ``d^4`` array:
    the middle of the network runs on full 4-D arrays at resolution ``d / 2`` and below,
    the layers after the last up-sampling only on the ``(P + 2 h)^2`` rows they need
    (``h`` = the receptive-field halo of those layers), with the diagonal of each array
    carried separately for the activations' normalisation.
    """
    _check_layers(layers, d)
    ups = [i for i, layer in enumerate(layers) if layer.kind == "up"]
    if not ups:
        raise ValueError("cntk_anchor_rows needs an architecture with up-sampling layers.")
    P = 2 ** len(ups)
    last = ups[-1]
    Sigma, Theta, nxt = _start_state(layers, prior, d)
    # the middle, full 4-D, up to (excluding) the last up-sampling
    Sigma, Theta, _ = _run(layers, Sigma, Theta, nxt, last)
    if layers[last - 1].kind == "conv":
        raise ValueError("cntk_anchor_rows needs an activation before the last up-sampling.")
    tail = layers[last + 1 :]
    halos = [(layer.size - 1) // 2 for layer in tail if layer.kind == "conv"]
    halo = sum(halos)
    # last up-sampling, evaluated on the row block only
    U = upsample_matrix(Sigma.shape[0], layers[last].mode)
    Ub = np.asarray(U[_block_idx(P, halo, d)])
    Uf = np.asarray(U)
    up = "ai,bj,ck,dl,ijkl->abcd"
    Sig_b = np.einsum(up, Ub, Ub, Uf, Uf, Sigma, optimize=True)
    The_b = np.einsum(up, Ub, Ub, Uf, Uf, Theta, optimize=True)
    sdiag = np.einsum("ai,bj,ak,bl,ijkl->ab", Uf, Uf, Uf, Uf, Sigma, optimize=True)  # full diagonal
    del Sigma, Theta
    h = halo
    for layer in tail:
        if layer.kind == "conv":
            r = (layer.size - 1) // 2
            n = Sig_b.shape[0] - 2 * r
            Lam = np.zeros((n, n, d, d), np.float32)
            Tz = np.zeros((n, n, d, d), np.float32)
            ldiag = np.zeros((d, d), np.float32)
            for m, k in _offsets(layer.size):
                sl = (slice(r + m, r + m + n), slice(r + k, r + k + n))
                Lam = Lam + np.roll(Sig_b[sl], (-m, -k), axis=(2, 3))
                Tz = Tz + np.roll(The_b[sl], (-m, -k), axis=(2, 3))
                ldiag = ldiag + np.roll(sdiag, (-m, -k), axis=(0, 1))
            Tz = Tz + Lam
            h -= r
            size = layer.size
            Sig_b = The_b = None
        else:
            rows = _block_idx(P, h, d)
            drow = ldiag[rows[:, None], rows[None, :]]
            Sig_b, The_b = _act(Lam, drow, ldiag, Tz, float(layer.slope), size)
            k1, _ = leaky_relu_duals(np.float32(1.0), float(layer.slope))
            sdiag = k1 * ldiag / size**2
    return np.asarray(Tz, dtype=np.float32)
