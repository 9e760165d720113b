"""When ``integrate(backbone="auto")`` trains its networks in full: the floor and the screen.

Training the network candidates (guided and autoencoder) is what costs on large data (an
epoch is a pass over every training cell). The choice is still made by validation on the
data in the call, but a network is only trained in full when the validation pairs leave it
a chance to be kept:

- **floor** (``network_floor``): when the linear candidate's validation FOSCTTM is at most
  the floor, no network is trained. FOSCTTM is at least 0, so the most a network could gain
  over the linear candidate is the linear score itself; below the floor (default 0.005:
  on average fewer than 1 cell in 200 lies closer than the true partner) that gain is not
  worth a training run.
- **screen** (``screen_cells``): with more training cells than ``screen_cells`` in some
  modality, every network is first trained on a seeded random ``screen_cells`` of the
  training cells (the anchors among them kept as anchors; at most :data:`SCREEN_EPOCHS`
  epochs, patience at most :data:`SCREEN_PATIENCE`), and the linear candidate (its
  cross-validated capacity) is refitted on the same anchors. Both are scored by FOSCTTM on
  the same validation pairs (at most :data:`~scimpute.mm._select.MAX_SCORED` of them). A
  network is trained in full only when its screen score is at most ``(1 + screen_margin)``
  times linear's: the screen understates a network (fewer cells, fewer epochs), so a
  network that is within the margin on the screen is given its full run, one that is
  worse by more is not.

Decisions and screen scores are recorded by ``integrate`` (``uns[key]["network_screen"]``
and ``*-screen`` rows of ``uns[key]["candidates"]``). Below ``screen_cells`` training cells
the networks are trained in full directly (the screen would cost as much as the fit).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ._select import MAX_SCORED, Candidate
from ._train import TrainingSet

__all__ = ["SCREEN_EPOCHS", "SCREEN_PATIENCE", "floor_reason", "screen_set", "screen_verdict"]

#: most epochs of a screen fit (an epoch of ``screen_cells`` cells is a few dozen steps).
SCREEN_EPOCHS = 50
#: most epochs without improvement of the validation loss before a screen fit stops.
SCREEN_PATIENCE = 10


def floor_reason(linear: Candidate, floor: float) -> str | None:
    """Why no network is trained when linear's validation FOSCTTM is at most ``floor``."""
    if floor > 0 and np.isfinite(linear.score) and linear.score <= floor:
        return (
            f"linear validation FOSCTTM {linear.score:.4g} <= network_floor {floor:g}: "
            "the most a network could gain is that score; networks not trained"
        )
    return None


def needs_screen(ts: TrainingSet, screen_cells: int) -> bool:
    """Whether some modality has more training cells than ``screen_cells``."""
    return max(r.size for r in ts.train_rows.values()) > screen_cells


def screen_set(ts: TrainingSet, screen_cells: int, rng: np.random.Generator) -> TrainingSet:
    """The training set of a screen: a random ``screen_cells`` of the training cells.

    Cells (not rows) are drawn, so that a paired cell keeps its rows in every modality; the
    anchors (real or pseudo) all of whose rows were drawn stay anchors. The validation rows
    are kept; the validation pairs scored are at most :data:`MAX_SCORED` of them.
    """
    rows = ts.cell_rows
    n_cells = rows.shape[0]
    mods = ts.modalities
    trained = np.zeros(n_cells, dtype=bool)
    for j, m in enumerate(mods):
        trained |= _member(rows[:, j], ts.train_rows[m], ts.inputs[m][0].shape[0])
    pool = np.flatnonzero(trained)
    pick = np.sort(rng.choice(pool, min(screen_cells, pool.size), replace=False))
    train_rows = {}
    for j, m in enumerate(mods):
        r = rows[pick, j]
        train_rows[m] = np.intersect1d(r[r >= 0], ts.train_rows[m])
    a = rows[ts.anchors]
    ok = np.ones(ts.anchors.size, dtype=bool)
    for j, m in enumerate(mods):
        n_rows = ts.inputs[m][0].shape[0]
        ok &= (a[:, j] < 0) | _member(a[:, j], train_rows[m], n_rows)
    val = ts.val_pairs
    if val.size > MAX_SCORED:
        val = np.sort(rng.choice(val, MAX_SCORED, replace=False))
    return replace(ts, train_rows=train_rows, anchors=ts.anchors[ok], val_pairs=val)


def _member(rows: np.ndarray, chosen: np.ndarray, n_rows: int) -> np.ndarray:
    """Whether each of ``rows`` (``-1``: absent, never a member) is one of ``chosen``."""
    flag = np.zeros(n_rows + 1, dtype=bool)  # the last slot stands for -1
    flag[chosen] = True
    return flag[np.where(rows >= 0, rows, n_rows)]


def screen_verdict(linear: Candidate, network: Candidate, margin: float) -> tuple[bool, str]:
    """``(train in full, why)`` from the screen scores of the linear candidate and a network."""
    if not (np.isfinite(linear.score) and np.isfinite(network.score)):
        return True, "screen not scored (too few validation pairs): trained in full"
    bound = (1.0 + margin) * linear.score
    if network.score <= bound:
        return True, (
            f"screen FOSCTTM {network.score:.4g} <= (1 + screen_margin) x linear's "
            f"{linear.score:.4g} = {bound:.4g}: trained in full"
        )
    return False, (
        f"screen FOSCTTM {network.score:.4g} > (1 + screen_margin) x linear's "
        f"{linear.score:.4g} = {bound:.4g}: not trained in full"
    )
