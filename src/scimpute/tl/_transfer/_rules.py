"""Transfer rules in the latent space: the constant shift and the position-dependent transport.

One function, :func:`move`, used both by the inner validation of :func:`fit_transfer` and by
:func:`transfer`, so that the rule chosen is the rule applied.
"""

from __future__ import annotations

import numpy as np

from ...nn._shift import apply_transport, latent_shift, ot_pairs, transport_map

RULES = ("shift", "transport", "kernel")
#: target rows handled at a time by :func:`kernel_displacement` (bounds its memory)
KERNEL_CHUNK = 1024


def kernel_displacement(
    positions: np.ndarray,
    displacements: np.ndarray,
    weights: np.ndarray,
    z0: np.ndarray,
    bandwidth: float,
) -> np.ndarray:
    """Kernel regression of OT displacements: each row of ``z0`` moved like its neighbours.

    For a starting code ``z``, the displacement is the Nadaraya-Watson average
    ``sum_j k_j w_j D_j / sum_j k_j w_j`` of the displacements ``D_j`` of the other contexts'
    control cells at ``positions[j]`` (their weights ``w_j`` make every context weigh the
    same), with the Gaussian kernel ``k_j = exp(-|z - p_j|^2 / (bandwidth * m))``, ``m`` the
    median squared distance between the rows of ``z0`` and the positions. A small bandwidth
    moves a cell like the nearest cells of the most similar contexts; ``bandwidth = inf``
    gives the balanced mean displacement (the constant shift).
    """
    P = np.asarray(positions, dtype=np.float64)
    D = np.asarray(displacements, dtype=np.float64)
    W = np.asarray(weights, dtype=np.float64)
    z0 = np.asarray(z0, dtype=np.float64)
    if not np.isfinite(bandwidth):
        return np.broadcast_to((W @ D) / W.sum(), z0.shape).copy()
    pp = (P * P).sum(1)
    d2 = [np.maximum((z * z).sum(1)[:, None] + pp[None] - 2.0 * z @ P.T, 0.0)
          for z in np.array_split(z0, max(1, -(-len(z0) // KERNEL_CHUNK)))]  # fmt: skip
    scale = max(float(np.median(np.concatenate(d2))), 1e-12) * float(bandwidth)
    out = []
    for d in d2:
        K = np.exp(-(d - d.min(1, keepdims=True)) / scale) * W[None]
        out.append((K @ D) / K.sum(1, keepdims=True))
    return np.concatenate(out) if out else np.zeros_like(z0)


def move(
    Z: np.ndarray,
    codes: np.ndarray,
    n_contexts: int,
    target_code: int,
    parts: list[np.ndarray],
    is_ctrl: np.ndarray,
    *,
    rule: str,
    alpha: float = np.inf,
    balance: str = "mean",
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, dict]:
    """Move the target context's control codes by ``rule``, learned on the other contexts.

    Parameters
    ----------
    Z
        ``(n, d)`` codes of all cells.
    codes
        ``(n,)`` integer context of each cell.
    n_contexts, target_code
        Number of contexts and the one to predict (never used to learn the rule).
    parts
        Bool masks of the treated cells of each component of the perturbation (one for a
        measured perturbation; a combination's components are added).
    is_ctrl
        Bool mask of the control cells.
    rule
        ``"shift"``: the balanced mean shift (:func:`scimpute.nn.latent_shift`);
        ``"transport"``: :func:`scimpute.nn._shift.transport_map` with ridge ``alpha``;
        ``"kernel"``: :func:`kernel_displacement` of the OT displacements, bandwidth ``alpha``.
    alpha
        Ridge strength of the transport rule, bandwidth of the kernel rule.
    balance, rng
        Balancing of the shift rule and its generator (``"resample"``).

    Returns
    -------
    ``(moved, info)``: the ``(n_target_controls, d)`` moved codes and ``{"shift": (d,) mean
    displacement, "used": bool mask of the contexts the rule was learned on}``.

    """
    exclude = np.zeros(n_contexts, dtype=bool)
    exclude[target_code] = True
    z0 = np.asarray(Z[is_ctrl & (codes == target_code)], dtype=np.float64)
    moved = z0.copy()
    used_all = np.zeros(n_contexts, dtype=bool)
    for treated in parts:
        if rule == "shift":
            s, used = latent_shift(
                Z, codes, treated, is_ctrl, n_contexts, balance=balance, exclude=exclude, rng=rng
            )
            moved = moved + s
        elif rule == "kernel":
            P, D, W, used = ot_pairs(Z, codes, treated, is_ctrl, n_contexts, exclude=exclude)
            moved = moved + kernel_displacement(P, D, W, z0, alpha)
        else:
            m, used = transport_map(
                Z, codes, treated, is_ctrl, n_contexts, alpha=alpha, exclude=exclude
            )
            # each component's displacement at the cell's own starting position (additive)
            moved = moved + apply_transport(m, z0) - z0
        used_all |= used
    return moved.astype(np.float32), {
        "shift": (moved - z0).mean(axis=0).astype(np.float32),
        "used": used_all,
    }
