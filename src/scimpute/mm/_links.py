"""``link_features``: which features of two modalities measure the same thing.

A *link* says that feature ``fa`` of modality ``a`` and feature ``fb`` of modality ``b`` carry
related signal: a surface protein and the gene(s) that encode it (``by="name"``), a chromatin
peak and a gene whose body or promoter lies within a genomic window (``by="genomic"``), or any
pair a user lists (``by=`` a table). Links are what lets :func:`scimpute.mm.integrate` align
modalities whose cells are not paired (``pairing=False, links=...``).

The links are stored as a plain table in ``mdata.uns[key_added]`` (survives
:meth:`mudata.MuData.write` / :func:`mudata.read_h5mu`) and read back by :func:`read_links`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._params import ParamError
from .._validate import _suggest
from ._data import check_mudata

if TYPE_CHECKING:
    from mudata import MuData

__all__ = ["LINK_COLUMNS", "Links", "link_features", "read_links"]

LINK = "mm.link_features"
#: columns of the stored link table.
LINK_COLUMNS = ("feature_a", "feature_b", "weight", "evidence")
#: vendor suffixes and prefixes stripped from antibody-derived tag names before lookup.
_SUFFIX = re.compile(
    r"([ _\-.](TotalSeq[ -_]?[ABC]?|Total[ABC]|ADT|CITE|prot(ein)?|antibody|Ab|AB))+$",
    re.IGNORECASE,
)
_PREFIX = re.compile(r"^((ADT|CITE|AB|anti|anti-human|human|hu|Hu)[ _\-.:])+", re.IGNORECASE)
_CLONE = re.compile(r"\s*[(\[].*?[)\]]\s*")  # "CD3 (UCHT1)" -> "CD3"
_REGION = re.compile(r"^(?P<chrom>[^:_\-]+)[:_\-](?P<start>\d+)[_\-](?P<end>\d+)$")
_CHROM_COLS = ("chrom", "chr", "chromosome", "seqnames", "seqname")
_START_COLS = ("start", "chromStart", "chrom_start", "gene_start")
_END_COLS = ("end", "chromEnd", "chrom_end", "gene_end")


def normalise_name(name: str) -> str:
    """The lookup key of a feature name: vendor tags stripped, upper case, no separators.

    ``"CD8a_TotalSeqB"`` -> ``"CD8A"``, ``"ADT_PD-1"`` -> ``"PD1"``, ``"CD3 (UCHT1)"`` ->
    ``"CD3"``, ``"HLA-DR"`` -> ``"HLADR"``.
    """
    s = _CLONE.sub("", str(name)).strip()
    s = _SUFFIX.sub("", s)
    s = _PREFIX.sub("", s)
    return re.sub(r"[ _\-.]", "", s).upper()


@lru_cache(maxsize=1)
def alias_table() -> pd.DataFrame:
    """The curated table shipped with scimpute (``scimpute/mm/data/adt_aliases.tsv``).

    Columns ``alias`` (normalised, see :func:`normalise_name`) and ``gene``: one row per
    (antigen, gene) pair, e.g. ``CD3 -> CD3E``, ``CD3 -> CD3D``, ``CD3 -> CD3G``.
    """
    src = resources.files("scimpute.mm") / "data" / "adt_aliases.tsv"
    with src.open("r", encoding="utf-8") as fh:
        raw = pd.read_csv(fh, sep="\t", comment="#", dtype=str)
    rows = [
        (normalise_name(a), g.strip())
        for a, genes in zip(raw["alias"], raw["genes"], strict=True)
        for g in str(genes).split("/")
        if g.strip()
    ]
    return pd.DataFrame(rows, columns=["alias", "gene"]).drop_duplicates(ignore_index=True)


class Links:
    """Links between the features of two modalities (what ``mdata.uns[key]`` holds, typed).

    Attributes
    ----------
    a, b
        The two modalities.
    table
        :class:`pandas.DataFrame` with columns ``feature_a`` (a var name of ``a``),
        ``feature_b`` (of ``b``), ``weight`` (> 0) and ``evidence`` (how the link was found:
        ``"alias"``, ``"symbol"``, ``"table"``, ``"genomic"``).

    """

    def __init__(self, a: str, b: str, table: pd.DataFrame, params: Mapping[str, Any]):
        self.a, self.b, self.table, self.params = a, b, table, dict(params)

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"Links({self.a!r} -> {self.b!r}, {len(self)} links)"

    def oriented(self, a: str, b: str) -> pd.DataFrame:
        """The table with ``feature_a`` in modality ``a`` (swapped if stored the other way)."""
        if (a, b) == (self.a, self.b):
            return self.table
        if (a, b) == (self.b, self.a):
            t = self.table.rename(columns={"feature_a": "feature_b", "feature_b": "feature_a"})
            return t[list(LINK_COLUMNS)]
        raise ValueError(f"These links join {self.a!r} and {self.b!r}, not {a!r} and {b!r}.")

    def to_uns(self) -> dict[str, Any]:
        """An h5mu-safe dict: strings, a float column, a string table."""
        t = self.table.copy()
        t.index = [str(i) for i in range(len(t))]
        t["weight"] = t["weight"].astype(np.float64)
        for c in ("feature_a", "feature_b", "evidence"):
            t[c] = t[c].astype(str)
        return {"modalities": [self.a, self.b], "links": t, "params": dict(self.params)}

    @classmethod
    def from_uns(cls, rec: Any, key: str) -> Links:
        """Read :meth:`to_uns` output (also after an h5mu round trip)."""
        where = f"mdata.uns[{key!r}]"
        if not isinstance(rec, Mapping) or "links" not in rec or "modalities" not in rec:
            raise ValueError(f"{where} was not written by scimpute.mm.link_features.")
        mods = [str(m) for m in np.asarray(rec["modalities"]).ravel().tolist()]
        t = pd.DataFrame(rec["links"])
        if len(mods) != 2 or any(c not in t.columns for c in LINK_COLUMNS):
            raise ValueError(f"{where} is damaged: expected two modalities and {LINK_COLUMNS}.")
        t = t[list(LINK_COLUMNS)].reset_index(drop=True)
        t["weight"] = t["weight"].astype(np.float64)
        params = dict(rec.get("params", {})) if isinstance(rec.get("params"), Mapping) else {}
        return cls(mods[0], mods[1], t, params)


def default_key(a: str, b: str) -> str:
    """Default ``key_added`` of :func:`link_features`: ``"links_<a>_<b>"``."""
    return f"links_{a}_{b}"


def _modality(mdata, m: str) -> None:
    if not isinstance(m, str) or m not in mdata.mod:
        raise KeyError(f"Modality {m!r} is not in mdata." + _suggest(str(m), mdata.mod.keys()))


def _symbols(adata, column: str | None, m: str) -> pd.Index:
    """Names to match on: the var names, or a ``.var`` column of gene symbols."""
    if column is None:
        return pd.Index(adata.var_names.astype(str))
    if column not in adata.var.columns:
        raise KeyError(
            f"symbols column {column!r} is not in mdata[{m!r}].var."
            + _suggest(column, adata.var.columns)
        )
    return pd.Index(adata.var[column].astype(str))


def _index(keys) -> dict[str, list[int]]:
    """``key -> positions`` (a key may occur more than once)."""
    out: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return out


def _by_name(names_a: pd.Index, names_b: pd.Index) -> pd.DataFrame:
    """Name links from ``a`` to ``b``: the alias table first, then identical normalised names."""
    exact_b = _index(names_b.str.upper())
    norm_b = _index(normalise_name(n) for n in names_b)
    by_alias = alias_table().groupby("alias")["gene"].apply(list).to_dict()
    rows = []
    for i, name in enumerate(names_a):
        k = normalise_name(name)
        hits = [j for g in by_alias.get(k, []) for j in exact_b.get(g.upper(), [])]
        evidence = "alias"
        if not hits and k:
            hits, evidence = norm_b.get(k, []), "symbol"
        rows += [(i, j, evidence) for j in dict.fromkeys(hits)]
    return pd.DataFrame(rows, columns=["ia", "ib", "evidence"])


def _user_table(table, a: str, b: str, names_a: pd.Index, names_b: pd.Index) -> pd.DataFrame:
    """Links listed by the user.

    A DataFrame (columns ``a`` and ``b``, or the first two) or a mapping ``feature of a ->
    feature(s) of b``.
    """
    if isinstance(table, Mapping):
        pairs = [
            (str(k), str(v))
            for k, vs in table.items()
            for v in ([vs] if isinstance(vs, str) else list(vs))
        ]
        df = pd.DataFrame(pairs, columns=["fa", "fb"])
        df["weight"] = 1.0
    elif isinstance(table, pd.DataFrame):
        cols = [a, b] if a in table.columns and b in table.columns else list(table.columns[:2])
        if len(cols) < 2:
            raise ValueError(f"{LINK}: a link table needs two columns (named {a!r} and {b!r}).")
        df = pd.DataFrame({"fa": table[cols[0]].astype(str), "fb": table[cols[1]].astype(str)})
        df["weight"] = table["weight"].to_numpy(float) if "weight" in table.columns else 1.0
    else:
        raise TypeError(
            f"{LINK}: by must be 'name', 'genomic', a DataFrame or a mapping, got "
            f"{type(table).__name__}."
        )
    if not np.all(np.isfinite(df["weight"])) or (df["weight"] <= 0).any():
        raise ValueError(f"{LINK}: link weights must be finite and > 0.")
    ia = names_a.get_indexer(df["fa"])
    ib = names_b.get_indexer(df["fb"])
    ok = (ia >= 0) & (ib >= 0)
    if not ok.any():
        raise ValueError(
            f"{LINK}: none of the {len(df)} listed links names a feature of {a!r} and a feature "
            f"of {b!r} (e.g. {df['fa'].iloc[0]!r} -> {df['fb'].iloc[0]!r})."
            if len(df)
            else f"{LINK}: the link table is empty."
        )
    return pd.DataFrame(
        {"ia": ia[ok], "ib": ib[ok], "evidence": "table", "weight": df["weight"].to_numpy()[ok]}
    )


def coordinates(adata, m: str) -> pd.DataFrame | None:
    """``chrom``, ``start``, ``end`` (and ``strand``) of every feature, or ``None``.

    From ``.var`` columns, or from names like ``"chr1:100-200"`` / ``"chr1-100-200"``.
    """
    var = adata.var
    cols = {c.lower(): c for c in var.columns}
    pick = [
        next((cols[c.lower()] for c in group if c.lower() in cols), None)
        for group in (_CHROM_COLS, _START_COLS, _END_COLS)
    ]
    if all(p is not None for p in pick):
        out = pd.DataFrame(
            {
                "chrom": var[pick[0]].astype(str).to_numpy(),
                "start": pd.to_numeric(var[pick[1]], errors="coerce").to_numpy(),
                "end": pd.to_numeric(var[pick[2]], errors="coerce").to_numpy(),
            }
        )
    else:
        parsed = pd.Series(adata.var_names.astype(str)).str.extract(_REGION)
        if parsed["chrom"].isna().mean() > 0.5:
            return None
        out = pd.DataFrame(
            {
                "chrom": parsed["chrom"].to_numpy(),
                "start": pd.to_numeric(parsed["start"]).to_numpy(),
                "end": pd.to_numeric(parsed["end"]).to_numpy(),
            }
        )
    strand = cols.get("strand")
    out["strand"] = var[strand].astype(str).to_numpy() if strand else "."
    return out


def _by_window(ca: pd.DataFrame, cb: pd.DataFrame, window: float, use_tss: bool) -> pd.DataFrame:
    """Pairs ``(i in a, j in b)`` whose intervals lie within ``window`` bp.

    Weighted by GLUE's ``((d + 1000) / 1000) ** -0.75`` (``d``: gap in bp, 0 if overlapping).
    """
    out = []
    okb = cb["start"].notna() & cb["end"].notna()
    oka = ca["start"].notna() & ca["end"].notna()
    sb, eb = cb["start"].to_numpy(float), cb["end"].to_numpy(float)
    if use_tss:  # promoter end of the gene: start on '+', end on '-'
        tss = np.where(cb["strand"].to_numpy() == "-", eb, sb)
        sb, eb = tss, tss
    sa, ea = ca["start"].to_numpy(float), ca["end"].to_numpy(float)
    for chrom in np.intersect1d(ca["chrom"][oka].unique(), cb["chrom"][okb].unique()):
        ia = np.flatnonzero((ca["chrom"].to_numpy() == chrom) & oka.to_numpy())
        ib = np.flatnonzero((cb["chrom"].to_numpy() == chrom) & okb.to_numpy())
        order = ia[np.argsort(sa[ia])]
        starts = sa[order]
        longest = float((ea[ia] - sa[ia]).max())
        lo = np.searchsorted(starts, sb[ib] - window - longest, side="left")
        hi = np.searchsorted(starts, eb[ib] + window, side="right")
        counts = hi - lo
        if counts.sum() == 0:
            continue
        gene = np.repeat(ib, counts)
        pos = np.concatenate([np.arange(x, y) for x, y in zip(lo, hi, strict=True) if y > x])
        peak = order[pos]
        gap = np.maximum(0.0, np.maximum(sa[peak] - eb[gene], sb[gene] - ea[peak]))
        keep = gap <= window
        out.append(pd.DataFrame({"ia": peak[keep], "ib": gene[keep], "gap": gap[keep]}))
    if not out:
        return pd.DataFrame({"ia": [], "ib": [], "evidence": [], "weight": []})
    df = pd.concat(out, ignore_index=True)
    df["weight"] = ((df["gap"] + 1000.0) / 1000.0) ** -0.75
    df["evidence"] = "genomic"
    return df.drop(columns="gap")


def link_features(
    mdata: MuData,
    a: str,
    b: str,
    *,
    by: str | pd.DataFrame | Mapping[str, Any] = "name",
    symbols: Mapping[str, str] | None = None,
    window: float = 150_000,
    use_tss: bool = True,
    key_added: str | None = None,
    copy: bool = False,
) -> MuData | None:
    """Link the features of modality ``a`` to those of modality ``b``.

    Parameters
    ----------
    mdata
        :class:`~mudata.MuData` holding both modalities.
    a, b
        The two modalities (e.g. ``"prot"`` and ``"rna"``). Links are symmetric; the table
        names ``a``'s feature first.
    by
        How to find the links:

        - ``"name"``: each feature name of ``a`` (and of ``b``, so the order of ``a`` and
          ``b`` does not matter) is normalised (:func:`normalise_name`: vendor tags such as
          ``_TotalSeqB``, ``ADT_`` and clone names in brackets removed, upper case,
          separators dropped) and looked up in the curated antigen table shipped with
          scimpute (``scimpute/mm/data/adt_aliases.tsv``: ``CD3 -> CD3E/CD3D/CD3G``,
          ``CD8a -> CD8A``, ``CD16 -> FCGR3A``, ``CD56 -> NCAM1``, ``CD20 -> MS4A1``,
          ``CD45RA -> PTPRC``, ...); a name the table lacks links to a feature of the other
          modality with the same normalised name (``"TIGIT"`` -> ``"TIGIT"``).
        - ``"genomic"``: a feature of ``a`` (a chromatin peak) links to a feature of ``b``
          (a gene) within ``window`` base pairs on the same chromosome, with weight
          ``((gap + 1000) / 1000) ** -0.75`` (the distance weight of GLUE, Cao & Gao 2022).
          Coordinates come from ``.var`` columns (``chrom``/``chr``/``seqnames``,
          ``start``, ``end``, optional ``strand``) or from var names such as
          ``"chr1:100-200"``.
        - a :class:`pandas.DataFrame` with columns named ``a`` and ``b`` (else its first two
          columns) and an optional ``weight``; or a mapping ``feature of a -> feature(s) of
          b``. Rows naming a feature that is absent are dropped.
    symbols
        Mapping modality -> ``.var`` column holding the names to match on with
        ``by="name"`` (e.g. ``{"rna": "gene_symbols"}`` when var names are Ensembl IDs).
    window
        Largest gap in base pairs for ``by="genomic"``.
    use_tss
        With ``by="genomic"``: measure the gap to the gene's transcription start site (its
        ``start`` on the ``+`` strand, ``end`` on ``-``; gene start without a ``strand``
        column) instead of to the gene body.
    key_added
        Key of ``mdata.uns`` to write (default ``"links_<a>_<b>"``).
    copy
        Work on a copy and return it.

    Returns
    -------
    ``None`` (or the copy). Writes ``mdata.uns[key_added]``: ``modalities`` (``[a, b]``),
    ``links`` (a :class:`pandas.DataFrame` with columns ``feature_a``, ``feature_b``,
    ``weight``, ``evidence``; one row per linked pair) and ``params``. Pass
    ``links=key_added`` to :func:`scimpute.mm.integrate`.

    Raises
    ------
    KeyError
        A modality that ``mdata`` lacks, or a ``symbols`` column that is absent.
    ValueError
        ``a == b``, no link found (e.g. anonymous feature names, or no coordinates for
        ``by="genomic"``), a bad ``window`` or weights. Nothing is written then.

    """
    check_mudata(mdata)
    _modality(mdata, a)
    _modality(mdata, b)
    if a == b:
        raise ValueError(f"{LINK}: a and b must be two different modalities, got {a!r} twice.")
    if not (isinstance(window, int | float) and np.isfinite(window) and window >= 0):
        raise ParamError(f"{LINK}: window must be a number >= 0, got {window!r}.")
    if key_added is not None and (not isinstance(key_added, str) or not key_added):
        raise ParamError(f"{LINK}: key_added must be a non-empty string, got {key_added!r}.")
    key = key_added or default_key(a, b)
    names_a, names_b = (
        pd.Index(mdata[a].var_names.astype(str)),
        pd.Index(mdata[b].var_names.astype(str)),
    )
    how = by if isinstance(by, str) else "table"
    if isinstance(by, str) and by == "name":
        sa = _symbols(mdata[a], (symbols or {}).get(a), a)
        sb = _symbols(mdata[b], (symbols or {}).get(b), b)
        fwd = _by_name(sa, sb)
        rev = _by_name(sb, sa).rename(columns={"ia": "ib", "ib": "ia"})
        found = pd.concat([fwd, rev], ignore_index=True).drop_duplicates(["ia", "ib"])
        found["weight"] = 1.0
        hint = (
            "Feature names of neither modality match the alias table or each other. Pass "
            "by=<DataFrame or mapping> listing the links, or symbols={modality: var column} "
            "when the gene symbols are in a .var column."
        )
    elif isinstance(by, str) and by == "genomic":
        ca, cb = coordinates(mdata[a], a), coordinates(mdata[b], b)
        missing = [m for m, c in ((a, ca), (b, cb)) if c is None]
        if missing:
            raise ValueError(
                f"{LINK}: by='genomic' needs coordinates, but mdata[{missing[0]!r}] has neither "
                "chrom/start/end .var columns nor var names like 'chr1:100-200'."
            )
        found = _by_window(ca, cb, float(window), use_tss)
        hint = f"No feature of {a!r} lies within {window:g} bp of a feature of {b!r}."
    elif isinstance(by, str):
        raise ParamError(
            f"{LINK}: by must be 'name', 'genomic', a DataFrame or a mapping, got {by!r}."
        )
    else:
        found = _user_table(by, a, b, names_a, names_b)
        hint = ""
    if found.empty:
        raise ValueError(f"{LINK}: no link found between {a!r} and {b!r}. {hint}".strip())
    found = found.sort_values(["ia", "ib"], kind="stable")
    table = pd.DataFrame(
        {
            "feature_a": names_a[found["ia"].to_numpy(int)],
            "feature_b": names_b[found["ib"].to_numpy(int)],
            "weight": found["weight"].to_numpy(float),
            "evidence": found["evidence"].astype(str).to_numpy(),
        }
    )
    params = {"by": how, "window": float(window), "use_tss": bool(use_tss)}
    links = Links(a, b, table.reset_index(drop=True), params)
    target = mdata.copy() if copy else mdata
    target.uns[key] = links.to_uns()
    return target if copy else None


def read_links(mdata, links: str | Links | pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """The links between ``a`` and ``b`` as a table with ``feature_a`` in ``a``.

    ``links`` is a key of ``mdata.uns`` written by :func:`link_features`, a :class:`Links`,
    or a DataFrame with columns ``feature_a``/``feature_b`` (or named ``a`` and ``b``).
    """
    if isinstance(links, Links):
        return links.oriented(a, b)
    if isinstance(links, pd.DataFrame):
        if a in links.columns and b in links.columns:
            t = pd.DataFrame({"feature_a": links[a].astype(str), "feature_b": links[b].astype(str)})
        elif {"feature_a", "feature_b"} <= set(links.columns):
            t = links[["feature_a", "feature_b"]].astype(str)
        else:
            raise ValueError(
                f"A link table needs columns {a!r} and {b!r} (or feature_a / feature_b)."
            )
        t["weight"] = links["weight"].to_numpy(float) if "weight" in links.columns else 1.0
        t["evidence"] = "table"
        return t.reset_index(drop=True)
    if not isinstance(links, str):
        raise TypeError(
            f"links must be a key of mdata.uns, a Links or a DataFrame, got {type(links).__name__}."
        )
    if links not in mdata.uns:
        raise KeyError(
            f"mdata.uns[{links!r}] not found: run scimpute.mm.link_features(mdata, {a!r}, {b!r}) "
            "first." + (_suggest(links, mdata.uns.keys()) if len(mdata.uns) else "")
        )
    return Links.from_uns(mdata.uns[links], links).oriented(a, b)
