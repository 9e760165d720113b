"""Perturbation labels: combinations ``"A+B"`` and doses ``"A@1.5"`` (pertpy's conventions).

The grammar of grid labels, shared by :mod:`scimpute.pp` (which writes them) and the methods
(which read them). Names here are public within the package; :mod:`scimpute.pp` re-exports
them.
"""

from __future__ import annotations

from ._keys import COMBINATION_SEP, DOSE_SEP

__all__ = ["format_dose", "parse_perturbation"]


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
