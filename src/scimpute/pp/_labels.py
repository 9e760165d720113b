"""Perturbation labels: combinations ``"A+B"`` and doses ``"A@1.5"`` (pertpy's conventions)."""

from __future__ import annotations

import numpy as np

from .._keys import COMBINATION_SEP, DOSE_SEP


def format_dose(dose: object) -> str:
    """Format a dose for a label: ``1.50`` -> ``"1.5"``, ``"6"`` -> ``"6"``, ``"abc"`` kept."""
    try:
        return f"{float(dose):g}"
    except (TypeError, ValueError):
        return str(dose).strip()


def parse_perturbation(
    label: str, *, sep: str = COMBINATION_SEP, dose_sep: str = DOSE_SEP
) -> list[tuple[str, float | None]]:
    """Split a grid label into its components and their doses.

    Parameters
    ----------
    label
        A perturbation label of a grid, e.g. ``"A"``, ``"A+B"``, ``"A@1.5+B@6"``.
    sep
        Separator of the components of a combination.
    dose_sep
        Separator between a component and its dose.

    Returns
    -------
    One ``(name, dose)`` tuple per component, ``dose`` is ``None`` when the label has none or it
    is not a number.

    Raises
    ------
    ValueError
        If a component is empty (``"A+"``, ``"+A"``, ``"A++B"``).

    Examples
    --------
    >>> parse_perturbation("A@1.5+B@6")
    [('A', 1.5), ('B', 6.0)]

    """
    out: list[tuple[str, float | None]] = []
    parts = str(label).split(sep)
    if any(not part.strip() for part in parts):
        raise ValueError(
            f"Perturbation label {label!r} has an empty component (components are separated "
            f"by {sep!r})."
        )
    for part in parts:
        name, has_dose, dose = part.rpartition(dose_sep) if dose_sep in part else (part, "", "")
        value: float | None = None
        if has_dose:
            try:
                value = float(dose)
            except ValueError:
                name, value = part, None
        out.append((name.strip(), value))
    return out


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
