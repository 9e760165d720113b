"""The options of ``method="auto"``, declared once (:class:`AutoParams`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..._params import ParamError, Params, param

#: the selection rules ``auto`` compares in nested cross-validation.
RULES = ("grid", "per_pair", "stack")
#: settings of a candidate that make it validate itself (its own inner validation).
VALIDATED_SETTINGS: dict[str, dict] = {"ntk": {"reg": "auto"}}
#: methods never used as candidates: ``auto`` itself.
NOT_CANDIDATES = ("auto",)


def _check_rules(rules: tuple[str, ...]) -> str | None:
    bad = [r for r in rules if r not in RULES]
    if bad or not rules:
        return f"must be a non-empty subset of {RULES}"
    return None


@dataclass(frozen=True)
class AutoParams(Params):
    """Parameters of ``impute(grid, method="auto")``.

    Parameters
    ----------
    candidates
        Names of the registered methods to choose among; ``None`` (default) takes every
        registered method that applies to the grid (its ``applies`` hook and control need;
        combination methods only with ``"A+B"`` labels, dose methods only with doses).
        Candidates run with their own validated settings (``ntk`` with ``reg="auto"``,
        synthetic interventions with its ``"validated"`` preset).
    exclude
        Methods left out of the candidates (e.g. ``("autoencoder", "vae")`` to save time).
    n_folds
        Folds of the inner hold-out on the measured pairs (:mod:`scimpute.tl._auto._holdout`).
        Each hidden pair loses ``1/n_folds`` of its row's and column's measured neighbours, so
        fewer folds make the hold-out harder than the real gaps and the intervals
        conservative (5 folds over-cover 70% intervals by about 4 points on the seeded
        simulator, 10 folds by about 1).
    rules
        Which ways of combining the candidates are compared: ``"grid"`` (one method for the
        whole grid), ``"per_pair"`` (a method per pair, chosen from pre-measurement features),
        ``"stack"`` (non-negative weights over the candidates' predictions).
    screen_margin
        Screening: every candidate is scored on the first inner fold; the expensive ones
        (trained networks, fitted by a ``grouped_refit`` hook) whose median R2 there is below
        the best candidate's by more than this margin skip the other folds (fitted once
        instead of ``n_folds`` times).
    tolerance
        Median R2 that a per-pair choice or a stack must gain over the best single method in
        the nested cross-validation to be used instead (the simpler rule wins ties).
    progress
        Show a progress bar naming the stage and the candidate.

    """

    owner = "auto"

    candidates: tuple[str, ...] | None = param(None, doc="Methods to choose among (None: all).")
    exclude: tuple[str, ...] = param((), doc="Methods left out of the candidates.")
    n_folds: int = param(10, ge=2, doc="Folds of the inner hold-out.")
    rules: tuple[str, ...] = param(RULES, check=_check_rules, doc="Rules compared.")
    screen_margin: float = param(0.1, ge=0, doc="Median R2 below the best to drop a candidate.")
    tolerance: float = param(0.005, ge=0, doc="Gain a per-pair rule or stack must show.")
    progress: bool = param(False, doc="Show a progress bar.")

    def validate(self, owner: str) -> None:
        """``candidates`` and ``exclude`` must leave at least one method."""
        if self.candidates is not None and not set(self.candidates) - set(self.exclude):
            raise ParamError(f"{owner}: candidates must name at least one method not excluded.")
