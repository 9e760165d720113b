"""mm.link_features: ADT names to genes, user tables, genomic windows, h5mu round trip."""

from __future__ import annotations

import warnings

import mudata as md
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import scimpute as si
from scimpute.mm._links import Links, alias_table, normalise_name, read_links

GENES = [
    "CD3E",
    "CD3D",
    "CD3G",
    "CD8A",
    "FCGR3A",
    "NCAM1",
    "MS4A1",
    "PTPRC",
    "TIGIT",
    "ACTB",
    "CD99",
]
ADTS = ["CD3_TotalSeqB", "CD8a", "ADT_CD16", "CD56 (NCAM16.2)", "CD20-TotalSeqC", "CD45RA",
        "TIGIT_prot", "IgG1_isotype", "CD99_TotalSeqB"]  # fmt: skip


def _mudata(mods: dict[str, AnnData]) -> md.MuData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return md.MuData(mods)


def _cite(n: int = 20) -> md.MuData:
    rng = np.random.default_rng(0)
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n)])
    rna = AnnData(rng.poisson(2, (n, len(GENES))).astype(np.float32), obs=obs.copy())
    rna.var_names = GENES
    prot = AnnData(rng.poisson(20, (n, len(ADTS))).astype(np.float32), obs=obs.copy())
    prot.var_names = ADTS
    return _mudata({"rna": rna, "prot": prot})


def _pairs(m, key="links_prot_rna") -> set[tuple[str, str]]:
    t = m.uns[key]["links"]
    return set(zip(t["feature_a"], t["feature_b"], strict=True))


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("CD3_TotalSeqB", "CD3"),
        ("CD8a", "CD8A"),
        ("ADT_PD-1", "PD1"),
        ("CD3 (UCHT1)", "CD3"),
        ("HLA-DR", "HLADR"),
        ("CD20-TotalSeqC", "CD20"),
        ("TIGIT_prot", "TIGIT"),
    ],
)
def test_normalise_name(name, key):
    assert normalise_name(name) == key


def test_alias_table_is_shipped_and_normalised():
    t = alias_table()
    assert {"alias", "gene"} <= set(t.columns)
    cd3 = set(t.loc[t["alias"] == "CD3", "gene"])
    assert cd3 == {"CD3E", "CD3D", "CD3G"}
    assert (t["alias"] == t["alias"].map(normalise_name)).all()


def test_adt_names_link_to_their_genes():
    m = _cite()
    si.mm.link_features(m, "prot", "rna")
    pairs = _pairs(m)
    expected = {
        ("CD3_TotalSeqB", "CD3E"),
        ("CD3_TotalSeqB", "CD3D"),
        ("CD3_TotalSeqB", "CD3G"),
        ("CD8a", "CD8A"),
        ("ADT_CD16", "FCGR3A"),
        ("CD56 (NCAM16.2)", "NCAM1"),
        ("CD20-TotalSeqC", "MS4A1"),
        ("CD45RA", "PTPRC"),
        ("TIGIT_prot", "TIGIT"),
        ("CD99_TotalSeqB", "CD99"),  # not in the alias table: same normalised name
    }
    assert pairs == expected  # the isotype control and ACTB link to nothing
    t = m.uns["links_prot_rna"]["links"]
    assert set(t.loc[t["feature_a"] == "CD99_TotalSeqB", "evidence"]) == {"symbol"}
    assert set(t.loc[t["feature_a"] == "CD8a", "evidence"]) == {"alias"}
    assert list(m.uns["links_prot_rna"]["modalities"]) == ["prot", "rna"]


def test_order_of_modalities_does_not_matter():
    m = _cite()
    si.mm.link_features(m, "prot", "rna")
    si.mm.link_features(m, "rna", "prot")
    swapped = {(b, a) for a, b in _pairs(m, "links_rna_prot")}
    assert swapped == _pairs(m)
    # read_links orients a stored table either way
    t = read_links(m, "links_rna_prot", "prot", "rna")
    assert set(zip(t["feature_a"], t["feature_b"], strict=True)) == _pairs(m)


def test_symbols_column_when_var_names_are_ids():
    m = _cite()
    rna = m["rna"].copy()
    rna.var["symbol"] = rna.var_names.to_numpy()
    rna.var_names = [f"ENSG{i:05d}" for i in range(rna.n_vars)]
    m2 = _mudata({"rna": rna, "prot": m["prot"].copy()})
    with pytest.raises(ValueError, match="no link found"):
        si.mm.link_features(m2, "prot", "rna")
    si.mm.link_features(m2, "prot", "rna", symbols={"rna": "symbol"})
    t = m2.uns["links_prot_rna"]["links"]
    assert ("CD8a", "ENSG00003") in set(zip(t["feature_a"], t["feature_b"], strict=True))


def test_user_table_and_mapping():
    m = _cite()
    df = pd.DataFrame({"prot": ["IgG1_isotype", "CD8a", "missing"], "rna": ["ACTB", "CD8A", "X"]})
    df["weight"] = [0.5, 2.0, 1.0]
    si.mm.link_features(m, "prot", "rna", by=df, key_added="mine")
    t = m.uns["mine"]["links"]
    assert list(zip(t["feature_a"], t["feature_b"], t["weight"], strict=True)) == [
        ("CD8a", "CD8A", 2.0),
        ("IgG1_isotype", "ACTB", 0.5),
    ]  # sorted by feature of a, the unknown pair dropped
    assert set(t["evidence"]) == {"table"}
    si.mm.link_features(m, "prot", "rna", by={"CD8a": ["CD8A", "ACTB"]}, key_added="map")
    assert _pairs(m, "map") == {("CD8a", "CD8A"), ("CD8a", "ACTB")}


def _atac_rna() -> md.MuData:
    n = 10
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n)])
    peaks = ["chr1:1000-1500", "chr1:9000-9400", "chr1:400000-400500", "chr2:1000-2000"]
    atac = AnnData(np.ones((n, len(peaks)), np.float32), obs=obs.copy())
    atac.var_names = peaks
    rna = AnnData(np.ones((n, 3), np.float32), obs=obs.copy())
    rna.var_names = ["G1", "G2", "G3"]
    rna.var["chrom"] = ["chr1", "chr1", "chr3"]
    rna.var["start"] = [5000, 380000, 100]
    rna.var["end"] = [20000, 390000, 900]
    rna.var["strand"] = ["+", "-", "+"]
    return _mudata({"atac": atac, "rna": rna})


def test_genomic_window_links_with_distance_weights():
    m = _atac_rna()
    si.mm.link_features(m, "atac", "rna", by="genomic", window=20_000)
    t = m.uns["links_atac_rna"]["links"]
    got = {(a, b): w for a, b, w in zip(t["feature_a"], t["feature_b"], t["weight"], strict=True)}
    # G1: TSS at 5000 (+ strand); G2: TSS at 390000 (- strand); G3 on chr3 has no peak
    assert set(got) == {
        ("chr1:1000-1500", "G1"),
        ("chr1:9000-9400", "G1"),
        ("chr1:400000-400500", "G2"),
    }
    np.testing.assert_allclose(got["chr1:1000-1500", "G1"], ((3500 + 1000) / 1000) ** -0.75)
    np.testing.assert_allclose(got["chr1:9000-9400", "G1"], ((4000 + 1000) / 1000) ** -0.75)
    np.testing.assert_allclose(got["chr1:400000-400500", "G2"], ((10000 + 1000) / 1000) ** -0.75)
    # the gene body instead of the TSS: the peak inside G1 is at distance 0
    si.mm.link_features(m, "atac", "rna", by="genomic", window=0, use_tss=False, key_added="b")
    t = m.uns["b"]["links"]
    assert list(zip(t["feature_a"], t["feature_b"], strict=True)) == [("chr1:9000-9400", "G1")]
    assert t["weight"].iloc[0] == 1.0


def test_genomic_without_coordinates_is_a_clear_error():
    m = _atac_rna()
    rna = m["rna"].copy()
    rna.var = rna.var[[]]
    m2 = _mudata({"atac": m["atac"].copy(), "rna": rna})
    with pytest.raises(ValueError, match=r"needs coordinates, but mdata\['rna'\]"):
        si.mm.link_features(m2, "atac", "rna", by="genomic")
    assert "links_atac_rna" not in m2.uns


def test_anonymous_features_find_no_link(data_dir):
    m = si.datasets.scicar()
    with pytest.raises(ValueError, match="no link found"):
        si.mm.link_features(m, "atac", "rna")
    with pytest.raises(ValueError, match="needs coordinates"):
        si.mm.link_features(m, "atac", "rna", by="genomic")


def test_citeseq_links_every_protein(data_dir):
    m = si.datasets.pbmc_citeseq()
    si.mm.link_features(m, "prot", "rna")
    t = m.uns["links_prot_rna"]["links"]
    assert set(t["feature_a"]) == set(m["prot"].var_names)  # all 14 proteins
    assert set(t.loc[t["feature_a"] == "CD16_TotalSeqB", "feature_b"]) == {"FCGR3A"}
    assert set(t.loc[t["feature_a"] == "CD3_TotalSeqB", "feature_b"]) == {"CD3E", "CD3D", "CD3G"}


def test_round_trip_h5mu(tmp_path):
    m = _cite()
    si.mm.link_features(m, "prot", "rna")
    before = Links.from_uns(m.uns["links_prot_rna"], "links_prot_rna")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.write(tmp_path / "links.h5mu")
        back = md.read_h5mu(tmp_path / "links.h5mu")
    after = Links.from_uns(back.uns["links_prot_rna"], "links_prot_rna")
    assert (after.a, after.b) == ("prot", "rna")
    pd.testing.assert_frame_equal(after.table, before.table)
    assert after.params["by"] == "name"


@pytest.mark.parametrize(
    ("args", "kwargs", "err", "match"),
    [
        (("prot", "atac"), {}, KeyError, "Modality 'atac' is not in mdata"),
        (("prot", "prot"), {}, ValueError, "two different modalities"),
        (("prot", "rna"), {"by": "names"}, ValueError, "by must be 'name', 'genomic'"),
        (("prot", "rna"), {"by": 3}, TypeError, "by must be 'name', 'genomic'"),
        (("prot", "rna"), {"window": -1}, ValueError, "window must be a number >= 0"),
        (("prot", "rna"), {"key_added": ""}, ValueError, "key_added must be"),
        (("prot", "rna"), {"by": pd.DataFrame({"prot": [], "rna": []})}, ValueError, "empty"),
        (("prot", "rna"), {"by": {"nope": "ACTB"}}, ValueError, "none of the 1 listed links"),
        (("prot", "rna"), {"by": {"CD8a": "CD8A"}, "symbols": None}, None, None),
        (("prot", "rna"), {"symbols": {"rna": "nope"}}, KeyError, "symbols column 'nope'"),
    ],
)
def test_errors_leave_the_input_untouched(args, kwargs, err, match):
    m = _cite()
    if err is None:
        si.mm.link_features(m, *args, **kwargs)
        return
    with pytest.raises(err, match=match):
        si.mm.link_features(m, *args, **kwargs)
    assert len(m.uns) == 0


def test_negative_weights_rejected():
    m = _cite()
    df = pd.DataFrame({"prot": ["CD8a"], "rna": ["CD8A"], "weight": [-1.0]})
    with pytest.raises(ValueError, match="weights must be finite and > 0"):
        si.mm.link_features(m, "prot", "rna", by=df)


def test_read_links_errors():
    m = _cite()
    with pytest.raises(KeyError, match="run scimpute.mm.link_features"):
        read_links(m, "links_prot_rna", "prot", "rna")
    m.uns["bad"] = {"x": 1}
    with pytest.raises(ValueError, match="not written by scimpute.mm.link_features"):
        read_links(m, "bad", "prot", "rna")
    si.mm.link_features(m, "prot", "rna")
    with pytest.raises(ValueError, match="join 'prot' and 'rna'"):
        read_links(m, "links_prot_rna", "prot", "atac")
