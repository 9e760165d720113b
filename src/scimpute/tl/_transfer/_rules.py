"""Transfer rules in the latent space: the constant shift and the position-dependent transport.

One function, :func:`move`, used both by the inner validation of :func:`fit_transfer` and by
:func:`transfer`, so that the rule chosen is the rule applied.
"""

from __future__ import annotations

import numpy as np

from ...nn._shift import apply_transport, latent_shift, transport_map

RULES = ("shift", "transport")


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
        ``"transport"``: :func:`scimpute.nn._shift.transport_map` with ridge ``alpha``.
    alpha
        Ridge strength of the transport rule.
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
