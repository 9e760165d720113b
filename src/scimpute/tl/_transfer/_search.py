"""The inner leave-one-context-out of :func:`fit_transfer`: candidates, folds and scores.

Every choice of :func:`fit_transfer` (architecture, epochs by early stopping, transfer rule
and its strength (ridge penalty or kernel bandwidth), decoded or residual output) is made
here on the cells of the call:
each fold hides the perturbed cells of one (context, perturbation) pair of the training
cells, a network trained without them encodes everything, each rule predicts the hidden
cells from the context's controls and is scored against them.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ..._utils import seed_from
from ...metrics import edistance, pearson, r2_of_means, top_changed_genes
from ...nn import decode, encode, select
from ...nn._shift import apply_transport, fit_transport, latent_shift, ot_pairs
from ._params import KERNEL_BANDWIDTHS, SEARCH_GRID, TRANSPORT_ALPHAS, TransferParams
from ._rules import kernel_displacement

#: genes scored by the inner validation (the top of a Welch-t ranking in the hidden pair)
N_TOP = 100
#: the validation criterion, recorded next to the scores
CRITERION = (
    "representation, architecture (or number of components) and rule: mean over folds of (r2 of the mean on the top-100 genes + Pearson "
    "of the mean change on the top-100 genes) / 2, the better of the two outputs; output: "
    "the smaller mean E-distance to the hidden cells in the training representation"
)


def representation(X: np.ndarray, n_pcs: int | None, rng) -> tuple[np.ndarray, np.ndarray | None]:
    """``(center, loadings)`` of a seeded randomized PCA of the cells (``None`` for genes)."""
    center = X.mean(axis=0).astype(np.float32)
    if n_pcs is None:
        return center, None
    from sklearn.utils.extmath import randomized_svd

    k = int(min(n_pcs, X.shape[0] - 1, X.shape[1]))
    _, _, vt = randomized_svd(X - center, k, n_iter=4, random_state=seed_from(rng) % (2**31 - 1))
    V = vt.T
    sign = np.sign(V[np.abs(V).argmax(0), np.arange(k)])
    return center, (V * np.where(sign == 0, 1.0, sign)).astype(np.float32)


def inner_folds(ctx, pert, control: str, n_folds: int, rng) -> list[tuple[str, str]]:
    """Up to ``n_folds`` (context, perturbation) pairs to hide, drawn at random (seeded).

    A pair qualifies when the context has control cells and the perturbation is measured
    (with controls) in at least one other context, so that a rule can still be learned.
    """
    if n_folds == 0:
        return []
    df = pd.DataFrame({"c": ctx, "p": pert})
    with_ctrl = set(df.loc[df["p"] == control, "c"])
    pairs = df.loc[(df["p"] != control) & df["c"].isin(with_ctrl)].drop_duplicates()
    per_pert = pairs.groupby("p")["c"].transform("size")
    pairs = pairs.loc[per_pert >= 2].sort_values(["p", "c"])
    if pairs.empty:
        return []
    take = rng.choice(len(pairs), size=min(n_folds, len(pairs)), replace=False)
    return [(str(c), str(p)) for c, p in pairs.iloc[np.sort(take)].to_numpy()]


def candidates(spec: TransferParams, passed: set[str], rng, *, validated: bool) -> list[dict]:
    """Architectures to try: :data:`SEARCH_GRID`, minus the dimensions passed explicitly.

    Without validation folds (or ``inner_folds=0``) the one architecture of ``spec``.
    More than ``n_candidates`` combinations are subsampled at random (seeded).
    """
    fixed = {"width": spec.width, "depth": spec.depth, "latent_dim": spec.latent_dim}
    if not validated:
        return [fixed]
    axes = {k: ((v,) if k in passed else SEARCH_GRID[k]) for k, v in fixed.items()}
    grid = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    if len(grid) > spec.n_candidates:
        keep = np.sort(rng.choice(len(grid), size=spec.n_candidates, replace=False))
        grid = [grid[i] for i in keep]
    return grid


def rule_settings(rule: str) -> list[tuple[str, float]]:
    """(rule, strength) pairs tried for ``rule`` (``"auto"``: all of them).

    The strength is the ridge penalty of ``"transport"`` and the bandwidth of ``"kernel"``.
    """
    shift = [("shift", np.inf)]
    transport = [("transport", float(a)) for a in TRANSPORT_ALPHAS]
    kernel = [("kernel", float(b)) for b in KERNEL_BANDWIDTHS]
    return {"shift": shift, "transport": transport, "kernel": kernel,
            "auto": shift + transport + kernel}[rule]  # fmt: skip


class Search:
    """The folds' data and the scoring of each representation on them.

    Scores are made alike for every representation: the predicted mean in genes, and the
    predicted cells in the training representation ``inputs`` for the E-distance (so that
    rows of the candidates table compare across representations).
    """

    def __init__(self, inputs, ctx, pert, control, folds, center, loadings, X):
        self.inputs = inputs
        self.X = X
        self.contexts = sorted(set(ctx))
        self.codes = pd.Categorical(ctx, categories=self.contexts).codes.astype(np.int64)
        self.pert = pert
        self.is_ctrl = pert == control
        self.folds = folds
        self.center, self.loadings = center, loadings
        self.held_masks = [(ctx == c) & (pert == p) for c, p in folds]
        self.truth = []
        for (c, _p), held in zip(folds, self.held_masks, strict=True):
            ctrl = self.is_ctrl & (ctx == c)
            self.truth.append(
                {
                    "code": self.contexts.index(c),
                    "ctrl": ctrl,
                    "real_mean": X[held].mean(0).astype(np.float64),
                    "ctrl_mean": X[ctrl].mean(0).astype(np.float64),
                    "degs": top_changed_genes(X[held], X[ctrl], N_TOP),
                    "real_in": inputs[held],
                    "ctrl_in": inputs[ctrl],
                }
            )

    def _genes(self, v: np.ndarray) -> np.ndarray:
        """A change in the training representation, in genes."""
        return v if self.loadings is None else v @ self.loadings.T

    def _inputs(self, G: np.ndarray) -> np.ndarray:
        """Profiles in genes, in the training representation."""
        return G if self.loadings is None else (G - self.center) @ self.loadings

    def score(self, networks, rule: str) -> list[dict]:
        """Mean scores over folds of every (rule, alpha, output) for one architecture."""
        per = []
        for k in range(len(self.folds)):
            net = select(networks, k)

            def dec(m, net=net):
                d = decode(net, m.astype(np.float32)).astype(np.float64)
                return d, self.center + self._genes(d.mean(0))

            Z = encode(net, self.inputs).astype(np.float64)
            per += self._fold(k, Z, dec, rule)
        return _aggregate(per)

    def score_pca(self, n_comps: tuple[int, ...], rule: str, rng) -> dict[int, list[dict]]:
        """Mean scores over folds of every (rule, alpha, output) for each PCA size.

        Fold ``k`` fits one seeded PCA of ``max(n_comps)`` components on every cell but the
        fold's hidden ones; each size uses its leading components. Sizes above what every
        fold's cells and genes allow are clipped to that (and merged).
        """
        most = min(self.X.shape[0] - 1 - max((h.sum() for h in self.held_masks), default=0),
                   self.X.shape[1])  # fmt: skip
        n_comps = tuple(sorted({int(min(c, most)) for c in n_comps}))
        per: dict[int, list[dict]] = {c: [] for c in n_comps}
        for k, held in enumerate(self.held_masks):
            center, L = representation(self.X[~held], max(n_comps), rng)
            for c in n_comps:
                Lc = L[:, :c].astype(np.float64)

                def dec(m, center=center, Lc=Lc):
                    G = center + m @ Lc.T
                    return self._inputs(G), G.mean(0)

                Z = (self.X - center).astype(np.float64) @ Lc
                per[c] += self._fold(k, Z, dec, rule)
        return {c: _aggregate(rows) for c, rows in per.items()}

    def _fold(self, k: int, Z: np.ndarray, dec, rule: str) -> list[dict]:
        """Scores of every (rule, alpha, output) on fold ``k``, codes ``Z`` of all cells.

        ``dec(codes)`` returns the decoded cells in the training representation and their
        mean profile in genes.
        """
        t, held = self.truth[k], self.held_masks[k]
        treated = (self.pert == self.pert[held][0]) & ~held
        exclude = np.zeros(len(self.contexts), dtype=bool)
        exclude[t["code"]] = True
        z0 = Z[t["ctrl"]]
        d0, g0 = dec(z0)
        pairs, per = None, []
        for name, alpha in rule_settings(rule):
            if name == "shift":
                s, _ = latent_shift(
                    Z, self.codes, treated, self.is_ctrl, len(self.contexts), exclude=exclude
                )
                moved = z0 + s
            else:
                if pairs is None:
                    pairs = ot_pairs(
                        Z, self.codes, treated, self.is_ctrl, len(self.contexts), exclude=exclude
                    )
                if name == "kernel":
                    moved = z0 + kernel_displacement(*pairs[:3], z0, alpha)
                else:
                    moved = apply_transport(fit_transport(*pairs[:3], alpha), z0)
            d1, g1 = dec(moved)
            outs = {
                "decoded": (g1, d1),
                "residual": (t["ctrl_mean"] + g1 - g0, t["ctrl_in"] + d1 - d0),
            }
            for output, (mean, cells) in outs.items():
                per.append({"fold": k, "rule": name, "alpha": alpha, "output": output,
                            **_scores(mean, cells, t)})  # fmt: skip
        return per

    def choose(self, rows: list[dict], rule: str) -> dict:
        """The chosen candidate, made by the rows' scores.

        The best (representation, architecture, rule, alpha) by score (the better output of
        each), then its output by the smaller E-distance.
        """
        if not rows:
            name = "shift" if rule in ("auto", "shift") else "transport"
            return {"rule": name, "alpha": np.inf if name == "shift" else 1.0,
                    "output": "residual", "validated": False}  # fmt: skip
        df = pd.DataFrame(rows)
        df["latent_dim"] = df["latent_dim"].astype(str)
        keys = ["representation", "width", "depth", "latent_dim", "rule", "alpha"]
        best = df.groupby(keys, sort=False)["score"].max().idxmax()
        pick = df[np.logical_and.reduce([df[k] == v for k, v in zip(keys, best, strict=True)])]
        output = pick.loc[pick["edistance"].idxmin(), "output"]
        rep, width, depth, latent, name, alpha = best
        return {"representation": str(rep), "width": int(width), "depth": int(depth),
                "latent_dim": str(latent), "rule": str(name), "alpha": float(alpha),
                "output": str(output), "validated": True}  # fmt: skip

    def record(self, rows: list[dict], chosen: dict) -> dict:
        """The h5ad-safe record of the search: candidates table, folds, choice, criterion."""
        df = pd.DataFrame(rows)
        table = {
            c: (df[c].astype(str) if df[c].dtype == object else df[c]).to_numpy()
            for c in df.columns
        }
        if "latent_dim" in table:
            table["latent_dim"] = np.asarray([str(v) for v in df["latent_dim"]], dtype=object)
        for c in ("representation", "rule", "output"):
            if c in table:
                table[c] = np.asarray(table[c], dtype=object)
        return {
            "candidates": table,
            "folds": np.asarray([f"{c}|{p}" for c, p in self.folds], dtype=object),
            "chosen": {k: (str(v) if isinstance(v, str) else v) for k, v in chosen.items()},
            "criterion": CRITERION,
        }


def _aggregate(per: list[dict]) -> list[dict]:
    """Mean over folds of the per-fold scores, one row per (rule, alpha, output)."""
    if not per:
        return []
    df = pd.DataFrame(per)
    agg = df.groupby(["rule", "alpha", "output"], sort=False).mean(numeric_only=True)
    return agg.drop(columns="fold").reset_index().to_dict("records")


def _scores(mean: np.ndarray, cells: np.ndarray, t: dict) -> dict:
    """The validation scores of one prediction of a hidden pair."""
    g = t["degs"]
    change = pearson((t["real_mean"] - t["ctrl_mean"])[g][None], (mean - t["ctrl_mean"])[g][None])
    r2_top = r2_of_means(mean[g], t["real_mean"][g])
    pc = float(change[0]) if np.isfinite(change[0]) else 0.0
    return {
        "r2_all": r2_of_means(mean, t["real_mean"]),
        "r2_top100": r2_top,
        "pearson_change_top100": pc,
        "edistance": edistance(cells, t["real_in"]),
        "score": (r2_top + pc) / 2.0,
    }
