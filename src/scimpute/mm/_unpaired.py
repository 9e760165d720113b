"""Alignment of unpaired modalities through feature links (MaxFuse-style matching).

Two modalities measured in *different* cells share no anchor, but they share *linked
features* (:func:`scimpute.mm.link_features`): a surface protein and its gene, a peak and a
nearby gene. Following MaxFuse (Chen et al., Nat Biotech 2024):

1. **Smoothing.** Each modality's linked features are averaged over the cell's ``k`` nearest
   neighbours in that modality's own principal-component space (``x_i <- (1 - s) x_i +
   s mean_{j in kNN(i)} x_j``): single linked features are noisy (a gene detected in a few
   cells), their neighbourhood means are not.
2. **Initial matching.** Cells of ``a`` and ``b`` are matched one-to-one by a linear
   assignment (Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`, in random
   batches of at most ``batch_size`` cells) minimising the correlation distance between their
   smoothed, standardised linked features.
3. **Refinement.** A regularised CCA between the two modalities' principal components is
   fitted on the matched pairs; every cell is embedded in the canonical space, and the cells
   are matched again there (correlation distance). This is repeated ``n_iter`` times: the
   canonical space uses *all* features, so the matching improves beyond what the few linked
   features can tell.
4. **Filtering.** The ``filter_fraction`` of the pairs with the largest final distance are
   dropped; the others get a weight ``1 - (rank of their distance) / n`` in (0, 1].

The matched pairs are the *pseudo-anchors* that :func:`scimpute.mm.integrate` trains on with
``pairing=False, links=...``; the distribution-matching term of the integration then only
regularises. The canonical embedding of the last refinement is returned too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.extmath import randomized_svd

__all__ = ["Matching", "UnpairedParams", "linked_matrices", "match_cells"]


@dataclass(frozen=True)
class UnpairedParams:
    """Options of the matching (see the module docstring); checked by the caller's spec."""

    n_pcs: int = 30
    n_neighbors: int = 15
    smoothing: float = 0.7
    n_iter: int = 3
    n_components: int = 10
    ridge: float = 0.1
    filter_fraction: float = 0.2
    batch_size: int = 4000


@dataclass(frozen=True)
class Matching:
    """Result of :func:`match_cells`.

    Attributes
    ----------
    rows_a, rows_b
        Matched rows of the two modalities (pair ``k`` is ``(rows_a[k], rows_b[k])``), after
        filtering, in increasing order of ``rows_a``.
    weight
        Confidence of each pair in (0, 1] (1: the closest pair).
    distance
        Correlation distance of each pair in the final canonical space.
    embedding_a, embedding_b
        Every cell of ``a`` and of ``b`` in the canonical space of the last refinement.
    history
        One row per round (0: initial matching on the linked features): mean distance of
        the pairs, fraction of ``a``'s cells whose partner changed, mean canonical
        correlation of the refit.

    """

    rows_a: np.ndarray
    rows_b: np.ndarray
    weight: np.ndarray
    distance: np.ndarray
    embedding_a: np.ndarray
    embedding_b: np.ndarray
    history: pd.DataFrame = field(repr=False)


def linked_matrices(
    xa: np.ndarray, xb: np.ndarray, table: pd.DataFrame, names_a: pd.Index, names_b: pd.Index
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(la, lb, labels)``: the linked features of both modalities, column by column.

    One column per linked feature of ``a``: its values in ``a``, and the weighted mean of its
    linked features of ``b`` in ``b``; each standardised over the cells of its modality.
    Columns constant in either modality are dropped.
    """
    ia = names_a.get_indexer(table["feature_a"])
    ib = names_b.get_indexer(table["feature_b"])
    ok = (ia >= 0) & (ib >= 0)
    ia, ib, w = ia[ok], ib[ok], table["weight"].to_numpy(float)[ok]
    groups = np.unique(ia)
    # weighted mean of b's features per linked feature of a: a sparse (n_b_feat x groups) map
    g = np.searchsorted(groups, ia)
    m = np.zeros((xb.shape[1], groups.size))
    np.add.at(m, (ib, g), w)
    m /= m.sum(0, keepdims=True)
    la = xa[:, groups].astype(np.float64)
    lb = xb.astype(np.float64) @ m if xb.shape[1] else np.zeros((xb.shape[0], groups.size))
    keep = (la.std(0) > 1e-8) & (lb.std(0) > 1e-8)
    la, lb = la[:, keep], lb[:, keep]
    la = (la - la.mean(0)) / la.std(0)
    lb = (lb - lb.mean(0)) / lb.std(0)
    return la, lb, [str(names_a[i]) for i in groups[keep]]


def _pcs(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Principal-component scores (the centred features when there are at most ``k``)."""
    xc = x - x.mean(0)
    k = min(k, xc.shape[0] - 1, xc.shape[1])
    if xc.shape[1] <= k:
        return xc.astype(np.float64)
    u, s, _ = randomized_svd(xc, k, random_state=seed)
    return (u * s).astype(np.float64)


def _smooth(values: np.ndarray, pcs: np.ndarray, k: int, s: float) -> np.ndarray:
    """``(1 - s) x_i + s mean_{j in kNN(i)} x_j`` over the kNN graph of ``pcs``."""
    if s == 0 or k == 0:
        return values
    k = min(k, pcs.shape[0] - 1)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(pcs)
    idx = nn.kneighbors(pcs, return_distance=False)[:, 1:]
    return (1 - s) * values + s * values[idx].mean(1)


def _rows_standard(x: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm: the dot product is then the correlation."""
    xc = x - x.mean(1, keepdims=True)
    nrm = np.linalg.norm(xc, axis=1, keepdims=True)
    return xc / np.where(nrm > 0, nrm, 1.0)


def _assign(za: np.ndarray, zb: np.ndarray, batch: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching minimising the correlation distance, in random batches."""
    ra, rb = _rows_standard(za), _rows_standard(zb)
    n_a, n_b = za.shape[0], zb.shape[0]
    k = int(np.ceil(max(n_a, n_b) / batch))
    pa, pb = np.array_split(rng.permutation(n_a), k), np.array_split(rng.permutation(n_b), k)
    out_a, out_b = [], []
    for ia, ib in zip(pa, pb, strict=True):
        cost = 1.0 - ra[ia] @ rb[ib].T
        i, j = linear_sum_assignment(cost)
        out_a.append(ia[i])
        out_b.append(ib[j])
    return np.concatenate(out_a), np.concatenate(out_b)


def _distance(za: np.ndarray, zb: np.ndarray) -> np.ndarray:
    """Row-wise correlation distance of paired rows."""
    return 1.0 - (_rows_standard(za) * _rows_standard(zb)).sum(1)


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v / np.sqrt(np.maximum(w, 1e-12))) @ v.T


def rcca(
    x: np.ndarray, y: np.ndarray, k: int, ridge: float, weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Regularised CCA of paired rows ``x``, ``y``: ``(A, B, corr, mean_x, mean_y)``.

    Covariances are (optionally ``weight``-ed) sample covariances with ``ridge`` times their
    mean diagonal added to the diagonal; ``x A`` and ``y B`` are the canonical variates
    (unit variance), ``corr`` their canonical correlations.
    """
    w = np.ones(x.shape[0]) if weight is None else np.asarray(weight, float)
    w = w / w.sum()
    mx, my = w @ x, w @ y
    xc, yc = x - mx, y - my
    cxx = (xc * w[:, None]).T @ xc
    cyy = (yc * w[:, None]).T @ yc
    cxy = (xc * w[:, None]).T @ yc
    cxx += ridge * np.trace(cxx) / cxx.shape[0] * np.eye(cxx.shape[0])
    cyy += ridge * np.trace(cyy) / cyy.shape[0] * np.eye(cyy.shape[0])
    wx, wy = _inv_sqrt(cxx), _inv_sqrt(cyy)
    u, s, vt = np.linalg.svd(wx @ cxy @ wy)
    k = min(k, s.size)
    return wx @ u[:, :k], wy @ vt[:k].T, s[:k], mx, my


def match_cells(
    xa: np.ndarray,
    xb: np.ndarray,
    la: np.ndarray,
    lb: np.ndarray,
    params: UnpairedParams = UnpairedParams(),
    *,
    free_a: np.ndarray | None = None,
    free_b: np.ndarray | None = None,
    known: tuple[np.ndarray, np.ndarray] | None = None,
    rng: np.random.Generator,
) -> Matching:
    """Match the cells of two unpaired modalities (see the module docstring).

    Parameters
    ----------
    xa, xb
        ``(n_a, p_a)``, ``(n_b, p_b)`` normalised values of all features used (PCA input).
    la, lb
        ``(n_a, L)``, ``(n_b, L)`` standardised linked features (:func:`linked_matrices`).
    params
        Options.
    free_a, free_b
        Rows to match (default all).
    known
        Rows of known pairs (anchors) of ``a`` and ``b``: they join every CCA refit with
        weight 1 (partially paired data).
    rng
        Generator of the PCA and of the batches.

    """
    p = params
    free_a = np.arange(xa.shape[0]) if free_a is None else np.asarray(free_a)
    free_b = np.arange(xb.shape[0]) if free_b is None else np.asarray(free_b)
    ka, kb = (np.zeros(0, int), np.zeros(0, int)) if known is None else map(np.asarray, known)
    seed = int(rng.integers(0, 2**31 - 1))
    pa, pb = _pcs(np.asarray(xa, float), p.n_pcs, seed), _pcs(np.asarray(xb, float), p.n_pcs, seed)
    sa = _smooth(la, pa, p.n_neighbors, p.smoothing)
    sb = _smooth(lb, pb, p.n_neighbors, p.smoothing)

    def assign(ea, eb):
        i, j = _assign(ea[free_a], eb[free_b], p.batch_size, rng)
        return free_a[i], free_b[j]

    ra, rb = assign(sa, sb)
    rows = [
        {
            "round": 0,
            "mean_distance": float(_distance(sa[ra], sb[rb]).mean()),
            "changed": 1.0,
            "mean_canonical_corr": np.nan,
        }
    ]
    partner = np.full(xa.shape[0], -1)
    partner[ra] = rb
    ea, eb = sa, sb  # n_iter == 0: the smoothed linked features are the embedding
    for it in range(1, p.n_iter + 1):
        fa, fb = np.concatenate([ka, ra]), np.concatenate([kb, rb])
        a_, b_, corr, ma, mb = rcca(pa[fa], pb[fb], p.n_components, p.ridge)
        ea, eb = (pa - ma) @ a_ * corr, (pb - mb) @ b_ * corr  # dimensions weighted by corr
        ra, rb = assign(ea, eb)
        new = np.full(xa.shape[0], -1)
        new[ra] = rb
        rows.append(
            {
                "round": it,
                "mean_distance": float(_distance(ea[ra], eb[rb]).mean()),
                "changed": float(np.mean(new[ra] != partner[ra])),
                "mean_canonical_corr": float(corr.mean()),
            }
        )
        partner = new
    d = _distance(ea[ra], eb[rb])
    n_keep = max(1, round((1 - p.filter_fraction) * d.size))
    keep = np.argsort(d, kind="stable")[:n_keep]
    keep = keep[np.argsort(ra[keep], kind="stable")]  # pairs in the order of a's rows
    rank = np.empty(d.size)
    rank[np.argsort(d, kind="stable")] = np.arange(d.size)
    return Matching(
        rows_a=ra[keep],
        rows_b=rb[keep],
        weight=1.0 - rank[keep] / d.size,
        distance=d[keep],
        embedding_a=np.asarray(ea, np.float32),
        embedding_b=np.asarray(eb, np.float32),
        history=pd.DataFrame(rows),
    )


def _link_keys(links) -> list:
    """``links`` as a list of link sources (uns keys, :class:`Links` or DataFrames)."""
    if isinstance(links, str | pd.DataFrame) or not isinstance(links, list | tuple):
        return [links]
    return list(links)


def _pair_of(mdata, source, mods: list[str]) -> tuple[str, str]:
    """The two integrated modalities a link source joins."""
    from ._links import Links

    if isinstance(source, str) and source in mdata.uns:
        rec = Links.from_uns(mdata.uns[source], source)
        pair = (rec.a, rec.b)
    elif isinstance(source, Links):
        pair = (source.a, source.b)
    elif isinstance(source, pd.DataFrame):
        cols = [c for c in source.columns if c in mods]
        if len(cols) != 2:
            raise ValueError(
                "A link table passed as links= needs two columns named after modalities "
                f"{mods}; got columns {list(source.columns)}."
            )
        pair = (str(cols[0]), str(cols[1]))
    else:
        from ._links import read_links

        read_links(mdata, source, mods[0], mods[1])  # raises the right error
        raise AssertionError  # pragma: no cover
    for m in pair:
        if m not in mods:
            raise ValueError(
                f"The links join {pair}, but {m!r} is not an integrated modality {mods}."
            )
    return pair


def pseudo_anchors(
    mdata,
    links,
    modalities: list[str],
    matrices: dict[str, np.ndarray],
    layers: dict[str, str | None],
    cell_rows: np.ndarray,
    role: np.ndarray,
    roles: tuple[str, ...],
    params: UnpairedParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict]:
    """Pseudo-anchor pairs for :func:`scimpute.mm.integrate` from feature links.

    For every link source (a key of ``mdata.uns`` written by
    :func:`~scimpute.mm.link_features`, a :class:`~scimpute.mm._links.Links` or a table) joining
    two integrated modalities ``a`` and ``b``, the training cells of ``a`` and of ``b`` that
    are not anchors are matched with :func:`match_cells` (anchors, when there are some, join
    its CCA refits). Returns ``(rows, summary)``: ``rows`` is ``(n_pairs, n_modalities)``, the
    row of each pseudo-pair in every modality (-1 where absent), and ``summary`` an h5mu-safe
    dict (number of pairs and linked features per modality pair, the rounds' history).
    """
    from ._data import modality_matrix
    from ._links import read_links

    train = np.isin(role, [roles.index("train")])
    anchor = role == roles.index("anchor")
    out, summary = [], {}
    for source in _link_keys(links):
        a, b = _pair_of(mdata, source, modalities)
        table = read_links(mdata, source, a, b)
        ja, jb = modalities.index(a), modalities.index(b)
        names = {m: pd.Index(mdata[m].var_names.astype(str)) for m in (a, b)}
        need = {
            a: pd.Index(pd.unique(table["feature_a"])).intersection(names[a]),
            b: pd.Index(pd.unique(table["feature_b"])).intersection(names[b]),
        }
        if len(need[a]) == 0 or len(need[b]) == 0:
            raise ValueError(f"None of the links between {a!r} and {b!r} names features they have.")
        lx = {m: modality_matrix(mdata[m], layers[m], need[m], m) for m in (a, b)}
        la, lb, used = linked_matrices(lx[a], lx[b], table, need[a], need[b])
        if not used:
            raise ValueError(
                f"Every linked feature between {a!r} and {b!r} is constant in one of them: "
                "nothing to match cells on."
            )
        ra_all, rb_all = cell_rows[:, ja], cell_rows[:, jb]
        free_a = np.unique(ra_all[train & (ra_all >= 0)])
        free_b = np.unique(rb_all[train & (rb_all >= 0)])
        both = anchor & (ra_all >= 0) & (rb_all >= 0)
        if min(free_a.size, free_b.size) < 2:  # every cell is an anchor: nothing to match
            summary[f"{a}|{b}"] = {"n_pairs": 0, "n_linked_features": len(used)}
            continue
        res = match_cells(
            matrices[a],
            matrices[b],
            la,
            lb,
            params,
            free_a=free_a,
            free_b=free_b,
            known=(ra_all[both], rb_all[both]),
            rng=rng,
        )
        rows = np.full((res.rows_a.size, len(modalities)), -1, dtype=np.int64)
        rows[:, ja], rows[:, jb] = res.rows_a, res.rows_b
        out.append(rows)
        summary[f"{a}|{b}"] = {
            "n_pairs": int(res.rows_a.size),
            "n_linked_features": len(used),
            "mean_distance": float(res.distance.mean()),
            "history": res.history.astype({"round": np.int64}),
        }
    rows = np.vstack(out) if out else np.zeros((0, len(modalities)), dtype=np.int64)
    return rows, summary
