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

Backends. Every op is written once against an array namespace ``xp``: ``backend="numpy"``
runs it in NumPy float32; ``backend="jax"`` jits each network piece on its own (the layers
between two resolution changes, and the tail after the last up-sampling), so a 6-level
network compiles about two small programs per resolution (seconds) instead of one program
for the whole network (minutes on 2 CPU cores). On CPU NumPy is the faster of the two
(``benchmarks/results/cntk_inpainting.md``); :data:`scimpute.ntk._image.BACKEND_RULE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from ._duals import leaky_relu_duals, ntk_layer

__all__ = [
    "Layer",
    "Prior",
    "cntk_anchor_rows",
    "cntk_full",
    "encoder_decoder",
    "make_prior",
    "upsample_matrix",
]

LayerKind = Literal["conv", "act", "down", "up"]
Backend = Literal["numpy", "jax"]
#: XLA options of the jitted CNTK pieces on CPU (compile time over run time).
JAX_CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


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
# Every op takes the array namespace ``xp``; :func:`_ops` binds it to NumPy or to jitted
# JAX functions (one small program per op and shape, reused across layers).


def _einsum(xp, spec, *arrays):
    if xp is np:
        return np.einsum(spec, *arrays, optimize=True)
    return xp.einsum(spec, *arrays)


def _shifted_sum(S, size: int, axes: tuple[int, ...], xp=np):
    """``sum_delta S(... + delta ...)``: every axis pair in ``axes`` shifted circularly.

    ``axes`` lists the row axis of each shifted index (its column axis follows); one
    circular padding, then a sum of ``size^2`` slices (no per-offset copies).
    """
    r = (size - 1) // 2
    pad = [(0, 0)] * S.ndim
    for ax in axes:
        pad[ax] = pad[ax + 1] = (r, size - 1 - r)
    Sp = xp.pad(S, pad, mode="wrap")
    out = None
    for m, n in _offsets(size):
        sl = [slice(None)] * S.ndim
        for ax in axes:
            sl[ax] = slice(r + m, r + m + S.shape[ax])
            sl[ax + 1] = slice(r + n, r + n + S.shape[ax + 1])
        term = Sp[tuple(sl)]
        out = term if out is None else out + term
    return out


def _conv4(S, size: int, xp=np):
    """``sum_delta S(p + delta, q + delta)`` with circular padding, on a full 4-D array."""
    return _shifted_sum(S, size, (0, 2), xp)


def _diag4(A):
    d = A.shape[0]
    return A.reshape(d * d, d * d).diagonal().reshape(d, d)


def _act(Lam, diag_rows, diag_cols, Theta_z, slope: float, size: int, xp=np):
    """Activation after a convolution: returns ``(Sigma_h, Theta_h)``."""
    norm = xp.sqrt(diag_rows[:, :, None, None] * diag_cols[None, None, :, :])
    Sigma, Theta = ntk_layer(Lam, Theta_z, slope, norm=norm, xp=xp)
    return Sigma / size**2, Theta / size**2


def _conv_pair(Sigma, Theta, size: int, xp=np):
    """A convolution: ``(Lambda, Theta_z)`` from the previous ``(Sigma_h, Theta_h)``."""
    Lam = _conv4(Sigma, size, xp)
    return Lam, Lam + _conv4(Theta, size, xp)


def _act_pair(Lam, Theta_z, slope: float, size: int, xp=np):
    diag = _diag4(Lam)
    return _act(Lam, diag, diag, Theta_z, slope, size, xp)


def _down_pair(Sigma, Theta):
    return Sigma[::2, ::2, ::2, ::2], Theta[::2, ::2, ::2, ::2]


def _up4(A, mode: str, xp=np):
    if mode == "nearest":
        for ax in range(4):
            A = xp.repeat(A, 2, axis=ax)
        return A
    U = upsample_matrix(A.shape[0], mode)
    return _einsum(xp, "ai,bj,ck,dl,ijkl->abcd", U, U, U, U, A)


def _up_pair(Sigma, Theta, mode: str, xp=np):
    return _up4(Sigma, mode, xp), _up4(Theta, mode, xp)


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


def _block_idx(P: int, halo: int, d: int) -> np.ndarray:
    return np.arange(-halo, P + halo) % d


def _tail(Sigma, Theta, tail: tuple[Layer, ...], mode: str, P: int, d: int, xp=np):
    """The last up-sampling and the layers after it, on the ``P x P`` anchor rows only."""
    halo = sum((layer.size - 1) // 2 for layer in tail if layer.kind == "conv")
    U = upsample_matrix(Sigma.shape[0], mode)
    Ub = U[_block_idx(P, halo, d)]
    up = "ai,bj,ck,dl,ijkl->abcd"
    Sig_b = _einsum(xp, up, Ub, Ub, U, U, Sigma)
    The_b = _einsum(xp, up, Ub, Ub, U, U, Theta)
    sdiag = _einsum(xp, "ai,bj,ak,bl,ijkl->ab", U, U, U, U, Sigma)  # full diagonal
    del Sigma, Theta
    h = halo
    Lam = Tz = ldiag = None
    size = 1
    for layer in tail:
        if layer.kind == "conv":
            r = (layer.size - 1) // 2
            n = Sig_b.shape[0] - 2 * r
            # rows: the block already holds the halo; columns: circular
            Sig_p = xp.pad(Sig_b, [(0, 0), (0, 0), (r, r), (r, r)], mode="wrap")
            The_p = xp.pad(The_b, [(0, 0), (0, 0), (r, r), (r, r)], mode="wrap")
            Lam = Tz = None
            for m, k in _offsets(layer.size):
                sl = (
                    slice(r + m, r + m + n),
                    slice(r + k, r + k + n),
                    slice(r + m, r + m + d),
                    slice(r + k, r + k + d),
                )
                Lam = Sig_p[sl] if Lam is None else Lam + Sig_p[sl]
                Tz = The_p[sl] if Tz is None else Tz + The_p[sl]
            ldiag = _shifted_sum(sdiag, layer.size, (0,), xp)
            Tz = Tz + Lam
            h -= r
            size = layer.size
            Sig_b = The_b = None
        else:
            rows = _block_idx(P, h, d)
            drow = ldiag[rows[:, None], rows[None, :]]
            Sig_b, The_b = _act(Lam, drow, ldiag, Tz, float(layer.slope), size, xp)
            k1, _ = leaky_relu_duals(1.0, float(layer.slope))
            sdiag = float(k1) * ldiag / size**2
    return Tz


def _segment(Sigma, Theta, seg: tuple[Layer, ...], size: int = 1, xp=np):
    """Apply the layers ``seg`` to a full 4-D state: ``(Sigma_h, Theta_h, Theta_z)``.

    A segment starting with ``act`` takes ``(Lambda, Theta_z)`` of the preceding
    convolution (of filter ``size``) as ``(Sigma, Theta)``.
    """
    Lam = Theta_z = None
    if seg and seg[0].kind == "act":
        Lam, Theta_z, Sigma, Theta = Sigma, Theta, None, None
    for layer in seg:
        if layer.kind == "conv":
            Lam, Theta_z = _conv_pair(Sigma, Theta, layer.size, xp)
            size = layer.size
            Sigma = Theta = None
        elif layer.kind == "act":
            Sigma, Theta = _act_pair(Lam, Theta_z, float(layer.slope), size, xp)
            Lam = Theta_z = None
        elif layer.kind == "down":
            Sigma, Theta = _down_pair(Sigma, Theta)
        else:
            Sigma, Theta = _up_pair(Sigma, Theta, layer.mode, xp)
    return Sigma, Theta, Theta_z


def _segments(layers: tuple[Layer, ...]) -> list[tuple[Layer, ...]]:
    """``layers`` cut after each down-sampling and before each up-sampling.

    Each piece runs at one input shape: one jitted program per piece (and shape), reused
    when the same piece recurs at the same resolution.
    """
    out: list[list[Layer]] = [[]]
    for layer in layers:
        if layer.kind == "up" and out[-1]:
            out.append([])
        out[-1].append(layer)
        if layer.kind == "down":
            out.append([])
    return [tuple(p) for p in out if p]


@dataclass(frozen=True)
class _Ops:
    """:func:`_segment` and :func:`_tail` on one backend; ``asarray`` moves an array there."""

    segment: object
    tail: object
    asarray: object


_NUMPY_OPS = _Ops(_segment, _tail, np.asarray)


@lru_cache(maxsize=1)
def _jax_ops() -> _Ops:
    """The segment and tail recursions, each piece jitted on its own.

    Compiled once per piece, shape and static argument, and reused by every level of that
    shape: about two small programs per resolution instead of one for the whole network
    (tracing the whole network as one program took minutes to compile on 2 CPU cores).
    """
    import jax
    import jax.numpy as jnp

    # on CPU, LLVM's optimisation passes are most of the compile time (4x at level 0)
    # and buy little for these memory-bound programs
    opts = JAX_CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    return _Ops(
        segment=jax.jit(
            lambda S, T, seg, size: _segment(S, T, seg, size, jnp),
            static_argnums=(2, 3),
            compiler_options=opts,
        ),
        tail=jax.jit(
            lambda S, T, tail, mode, P, d: _tail(S, T, tail, mode, P, d, jnp),
            static_argnums=(2, 3, 4, 5),
            compiler_options=opts,
        ),
        asarray=lambda a: jnp.asarray(a, jnp.float32),
    )


def _ops(backend: str) -> _Ops:
    if backend == "numpy":
        return _NUMPY_OPS
    if backend == "jax":
        return _jax_ops()
    raise ValueError(f"backend must be 'numpy' or 'jax', got {backend!r}.")


def _run(ops: _Ops, layers, Sigma, Theta, start: int, stop: int, size: int):
    """``layers[start:stop]`` piece by piece (:func:`_segments`)."""
    Theta_z = None
    for seg in _segments(tuple(layers[start:stop])):
        Sigma, Theta, Theta_z = ops.segment(Sigma, Theta, seg, size)
        convs = [layer.size for layer in seg if layer.kind == "conv"]
        size = convs[-1] if convs else size
    return Sigma, Theta, Theta_z


def _start_state(ops: _Ops, layers, prior: Prior, d: int):
    """State after the first conv and act (and down, when it follows): ``(Sigma, Theta, next)``.

    With a down-sampling right after, the first convolution is evaluated only at the pixels
    it keeps, so the full-resolution ``d^4`` array is never formed.
    """
    fused = len(layers) > 3 and layers[2].kind == "down"
    Lam = ops.asarray(_first_lambda(prior, d, layers[0].size, 2 if fused else 1))
    Sigma, Theta, _ = ops.segment(Lam, Lam, (layers[1],), layers[0].size)
    return Sigma, Theta, 3 if fused else 2


def cntk_full(
    layers: tuple[Layer, ...], prior: Prior, d: int, *, backend: Backend = "numpy"
) -> np.ndarray:
    """The CNTK of ``layers`` on the ``d x d`` fixed input, as a ``(d, d, d, d)`` array.

    Forms ``d^4`` numbers at the output resolution: meant for small images (tests, 32 x 32).
    ``backend``: ``"numpy"`` or ``"jax"`` (each layer op jitted; same numbers to float32
    rounding).
    """
    _check_layers(layers, d)
    if len(layers) == 1:
        return np.asarray(_first_lambda(prior, d, layers[0].size, 1))
    ops = _ops(backend)
    Sigma, Theta, nxt = _start_state(ops, layers, prior, d)
    return np.asarray(
        _run(ops, layers, Sigma, Theta, nxt, len(layers), layers[0].size)[2], dtype=np.float32
    )


# ---------------------------------------------------------------- anchor-row recursions


def cntk_anchor_rows(
    layers: tuple[Layer, ...], prior: Prior, d: int, *, backend: Backend = "numpy"
) -> np.ndarray:
    """Rows ``K[i, j, :, :]``, ``0 <= i, j < P``, of the CNTK (``P`` = up-sampling factor).

    Equal to ``cntk_full(layers, prior, d)[:P, :P]`` without forming the ``d^4`` array:
    the middle of the network runs on full 4-D arrays at resolution ``d / 2`` and below,
    the layers after the last up-sampling only on the ``(P + 2 h)^2`` rows they need
    (``h`` = the receptive-field halo of those layers), with the diagonal of each array
    carried separately for the activations' normalisation. ``backend``: ``"numpy"`` or
    ``"jax"`` (each layer op jitted on its own; same numbers to float32 rounding).
    """
    _check_layers(layers, d)
    ups = [i for i, layer in enumerate(layers) if layer.kind == "up"]
    if not ups:
        raise ValueError("cntk_anchor_rows needs an architecture with up-sampling layers.")
    P = 2 ** len(ups)
    last = ups[-1]
    if layers[last - 1].kind == "conv":
        raise ValueError("cntk_anchor_rows needs an activation before the last up-sampling.")
    ops = _ops(backend)
    Sigma, Theta, nxt = _start_state(ops, layers, prior, d)
    # the middle, full 4-D, up to (excluding) the last up-sampling
    Sigma, Theta, _ = _run(ops, layers, Sigma, Theta, nxt, last, layers[0].size)
    Tz = ops.tail(Sigma, Theta, tuple(layers[last + 1 :]), layers[last].mode, P, d)
    return np.asarray(Tz, dtype=np.float32)
