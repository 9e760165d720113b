"""Perturbation labels: combinations ``"A+B"`` and doses ``"A@1.5"`` (pertpy's conventions)."""

from __future__ import annotations

import numpy as np

from .._keys import COMBINATION_SEP, DOSE_SEP
from .._labels import format_dose, parse_perturbation

__all__ = ["combine_with_dose", "format_dose", "parse_perturbation"]


def combine_with_dose(
    perturbations: np.ndarray, doses: np.ndarray, *, control: str | None, sep: str = COMBINATION_SEP
) -> np.ndarray:
    """Merge perturbation and dose columns into grid labels ``"A@d1+B@d2"``.

    ``doses`` of a combination list one dose per component with the same separator
    (``"1.5+6"`` for ``"A+B"``). Control rows keep the plain control label.
    """
    labels = np.empty(len(perturbations), dtype=object)
    for i, (p, d) in enumerate(zip(perturbations, doses, strict=True)):
        p = str(p)
        if control is not None and p == control:
            labels[i] = p
            continue
        comps = p.split(sep)
        ds = str(d).split(sep)
        if len(ds) == 1 and len(comps) > 1:
            ds = ds * len(comps)
        if len(ds) != len(comps):
            raise ValueError(
                f"Perturbation {p!r} has {len(comps)} component(s) but dose {d!r} has {len(ds)}; "
                f"write doses of a combination in the same order, separated by {sep!r}."
            )
        labels[i] = sep.join(
            f"{c}{DOSE_SEP}{format_dose(x)}" for c, x in zip(comps, ds, strict=True)
        )
    return labels
