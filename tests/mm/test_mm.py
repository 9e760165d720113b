"""scimpute.mm on seeded simulations with known shared, private and shortcut factors.

All fits of the module use the same shapes and settings, so the training epoch compiles once.
"""

import warnings

import mudata as md
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import roc_auc_score

import scimpute as si

SIM = {"n_cells": 400, "n_features": (60, 60)}
FIT = {
    "pairing": 0.5,
    "max_epochs": 200,
    "learning_rate": 1e-3,
    "progress": False,
    "backbone": "autoencoder",
}
KEY = "X_scimpute"


def _held_out(mdata) -> np.ndarray:
    return mdata.obs[f"{KEY}_split"].astype(str).to_numpy() != "anchor"


def _r2(z, y, train, test) -> float:
    y = y.reshape(len(y), -1)
    return LinearRegression().fit(z[train], y[train]).score(z[test], y[test])


def _explained(factor, z) -> float:
    """Fraction of the total variance of ``z`` explained linearly by ``factor``."""
    f = factor.reshape(len(factor), -1)
    resid = z - LinearRegression().fit(f, z).predict(f)
    return 1 - (resid**2).sum() / ((z - z.mean(0)) ** 2).sum()


def _mudata(mods):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return md.MuData(mods)


@pytest.fixture(scope="module")
def fitted():
    mdata = si.datasets.simulate_multimodal(**SIM, random_state=0)
    si.mm.integrate(mdata, **FIT)
    return mdata


def test_simulator_is_seeded_and_labelled():
    a = si.datasets.simulate_multimodal(**SIM, random_state=3)
    b = si.datasets.simulate_multimodal(**SIM, random_state=3)
    np.testing.assert_array_equal(a["m0"].X, b["m0"].X)
    assert not np.array_equal(a["m0"].X, si.datasets.simulate_multimodal(**SIM)["m0"].X)
    assert set(a["m0"].var["kind"]) == {"shared", "private", "shortcut"}
    assert set(a["m1"].var["kind"]) == {"shared", "private"}
    assert a.obsm["shared_factors"].shape == (400, 3)
    part = si.datasets.simulate_multimodal(**SIM, fraction_paired=0.5, random_state=3)
    common = part["m0"].obs_names.intersection(part["m1"].obs_names)
    assert len(common) == 200
    assert part.n_obs == 400


def test_writes_documented_fields(fitted):
    m = fitted
    assert m.obsm[KEY].shape == (400, 8)
    assert np.isfinite(m.obsm[KEY]).all()
    for mod in ("m0", "m1"):
        assert m[mod].obsm[KEY].shape == (m[mod].n_obs, 8)
        assert m[mod].obsm[f"{KEY}_private"].shape == (m[mod].n_obs, 4)
    split = m.obs[f"{KEY}_split"].astype(str)
    assert set(split) == {"anchor", "validation", "train"}
    rec = m.uns[KEY]
    assert rec["fit"]["n_anchors"] == (split == "anchor").sum()
    assert {"loss", "reconstruction", "anchor", "val_loss"} <= set(rec["history"])
    assert rec["history"]["loss"][-1] < rec["history"]["loss"][0]


def test_shared_latent_recovers_shared_not_private_factors(fitted):
    m = fitted
    held = _held_out(m)
    z = m.obsm[KEY]
    assert _r2(z, m.obsm["shared_factors"], ~held, held) >= 0.9
    shortcut = m["m0"].obs["shortcut"].to_numpy()
    # the shortcut dominates the first principal component of its own modality ...
    x0 = m["m0"].X - m["m0"].X.mean(0)
    pc1 = x0 @ np.linalg.svd(x0, full_matrices=False)[2][0]
    assert abs(np.corrcoef(pc1, shortcut)[0, 1]) > 0.9
    # ... but the shared latent carries almost none of it, nor the private factors
    private = [m["m0"].obsm["private_factors"], m["m1"].obsm["private_factors"], shortcut]
    assert _explained(m.obsm["shared_factors"], z) > 0.9
    for f in private:
        assert _explained(f, z) < 0.05
        assert _r2(z, f, ~held, held) < 0.5
    # the private variation went to the private latent
    u0 = m["m0"].obsm[f"{KEY}_private"]
    assert _r2(u0, shortcut, ~held, held) > 0.8


def test_held_out_foscttm_low_with_shared_signal(fitted):
    m = fitted
    held = _held_out(m)
    z0, z1 = m["m0"].obsm[KEY][held], m["m1"].obsm[KEY][held]
    assert si.metrics.foscttm(z0, z1) < 0.05
    assert si.metrics.knn_matching_accuracy(z0, z1, k=10) > 0.3


def test_held_out_foscttm_random_without_shared_signal():
    m = si.datasets.simulate_multimodal(**SIM, shared_strength=0.0, random_state=0)
    si.mm.integrate(m, **FIT)
    held = _held_out(m)
    fos = si.metrics.foscttm(m["m0"].obsm[KEY][held], m["m1"].obsm[KEY][held])
    assert 0.42 < fos < 0.58


def test_feature_scores_separate_shared_from_private(fitted):
    m = fitted
    si.mm.invariant_features(m)
    for mod in ("m0", "m1"):
        var = m[mod].var
        assert roc_auc_score(var["kind"] == "shared", var["invariance"]) >= 0.9
        assert var["invariance"].between(0, 1).all()
        assert {"invariance_r2_self", "invariance_r2_cross"} <= set(var.columns)
    latent = m.uns["invariance"]["latent"]
    assert list(latent.columns) == [
        "modalities",
        "dimension",
        "ccc",
        "ci_low",
        "ci_high",
        "pvalue",
        "n_cells",
    ]
    assert (latent["ci_low"] <= latent["ccc"]).all()
    assert (latent["ccc"] <= latent["ci_high"]).all()
    assert latent["ccc"].max() > 0.8


def test_duplicated_modality_scores_one_independent_scores_zero():
    base = si.datasets.simulate_multimodal(**SIM, random_state=0)
    other = si.datasets.simulate_multimodal(**SIM, random_state=1)  # same cell names
    dup = _mudata({"m0": base["m0"].copy(), "m1": base["m0"].copy()})
    ind = _mudata({"m0": base["m0"].copy(), "m1": other["m1"].copy()})
    for m in (dup, ind):
        si.mm.integrate(m, **FIT)
        si.mm.invariant_features(m)
    for mod in ("m0", "m1"):
        assert dup[mod].var["invariance"].median() > 0.85
        assert ind[mod].var["invariance"].median() < 0.05
        assert ind[mod].var["invariance"].quantile(0.9) < 0.15


def test_translate_predicts_shared_features(fitted):
    m = fitted
    out = si.mm.translate(m, "m1", "m0", key_added="m0_from_m1")
    assert out.shape == (m["m1"].n_obs, 60)
    assert list(out.var_names) == list(m["m0"].var_names)
    assert list(out.obs_names) == list(m["m1"].obs_names)
    df = m["m1"].obsm["m0_from_m1"]
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == list(m["m0"].var_names)
    held = _held_out(m)
    names = m.obs_names[held]
    truth = m["m0"][names].X
    pred = out[names].X
    corr = si.metrics.cross_modal_correlation(truth, pred)
    kind = m["m0"].var["kind"].to_numpy()
    assert np.median(corr[kind == "shared"]) > 0.8
    assert np.median(np.abs(corr[kind != "shared"])) < 0.2


def test_round_trip_h5mu_keeps_model(fitted, tmp_path):
    m = fitted
    before = si.mm.translate(m, "m0", "m1").X
    path = tmp_path / "mm.h5mu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.write(path)
        back = md.read_h5mu(path)
    np.testing.assert_allclose(back.obsm[KEY], m.obsm[KEY])
    np.testing.assert_allclose(back["m0"].obsm[KEY], m["m0"].obsm[KEY])
    assert back.uns[KEY]["params"]["n_latent"] == 8
    after = si.mm.translate(back, "m0", "m1").X
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    si.mm.invariant_features(back, n_bootstrap=10)
    back.write(tmp_path / "again.h5mu")
    again = md.read_h5mu(tmp_path / "again.h5mu")
    assert "ccc" in again.uns["invariance"]["latent"].columns
    np.testing.assert_allclose(again["m1"].var["invariance"], back["m1"].var["invariance"])


def test_seeded():
    fits = []
    for seed in (0, 0, 1):
        m = si.datasets.simulate_multimodal(**SIM, random_state=0)
        si.mm.integrate(m, **dict(FIT, max_epochs=3, random_state=seed))
        fits.append(m.obsm[KEY])
    np.testing.assert_array_equal(fits[0], fits[1])
    assert not np.allclose(fits[0], fits[2])
    # copy=True returns a new object and leaves the input alone
    m = si.datasets.simulate_multimodal(**SIM, random_state=0)
    out = si.mm.integrate(m, **dict(FIT, max_epochs=3), copy=True)
    np.testing.assert_array_equal(out.obsm[KEY], fits[0])
    assert KEY not in m.obsm


def test_unpaired_adversarial_partial_overlap():
    m = si.datasets.simulate_multimodal(120, (20, 16), fraction_paired=0.5, random_state=2)
    si.mm.integrate(m, pairing=False, alignment="adversarial", max_epochs=5, progress=False)
    assert m.uns[KEY]["fit"]["n_anchors"] == 0
    assert m.uns[KEY]["params"]["n_private"] == 0
    assert np.isfinite(m.obsm[KEY]).all()
    assert m.obsm[KEY].shape == (120, 8)
    assert "discriminator" in m.uns[KEY]["history"]
    out = si.mm.translate(m, "m0", "m1")
    assert out.shape == (m["m0"].n_obs, 16)


# ---------------------------------------------------------------------------- bad inputs


def _small(**kw):
    return si.datasets.simulate_multimodal(60, (10, 8), random_state=0, **kw)


def _untouched(m):
    assert KEY not in m.obsm
    assert KEY not in m.uns
    assert f"{KEY}_split" not in m.obs.columns
    for mod in m.mod:
        assert KEY not in m[mod].obsm


def test_error_modality_without_cells():
    m = _small()
    empty = m["m1"][:0].copy()
    bad = _mudata({"m0": m["m0"].copy(), "m1": empty})
    with pytest.raises(ValueError, match="'m1' has no cells"):
        si.mm.integrate(bad, progress=False)
    _untouched(bad)


def test_error_pairing_without_shared_names():
    m = _small()
    b = m["m1"].copy()
    b.obs_names = [f"other{i}" for i in range(b.n_obs)]
    bad = _mudata({"m0": m["m0"].copy(), "m1": b})
    with pytest.raises(ValueError, match="no obs name is shared"):
        si.mm.integrate(bad, pairing=True, progress=False)
    _untouched(bad)
    mask = np.zeros(bad.n_obs, dtype=bool)
    mask[0] = True
    with pytest.raises(ValueError, match="no obs name is shared"):
        si.mm.integrate(bad, pairing=mask, progress=False)


def test_error_mask_on_unpaired_cell():
    m = _small(fraction_paired=0.5)
    single = ~np.isin(m.obs_names, m["m0"].obs_names.intersection(m["m1"].obs_names))
    with pytest.raises(ValueError, match="not present in two or more"):
        si.mm.integrate(m, pairing=single, progress=False)
    _untouched(m)


def test_error_nan():
    m = _small()
    m["m1"].X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        si.mm.integrate(m, progress=False)
    _untouched(m)


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"modalities": ["m0"]}, ValueError, "at least 2 modalities"),
        ({"modalities": ["m0", "rna"]}, KeyError, "'rna' is not in mdata"),
        ({"alignment": "gan"}, ValueError, "alignment must be"),
        ({"pairing": 1.5}, ValueError, r"^mm\.integrate: pairing must be .*, got 1\.5"),
        ({"pairing": float("nan")}, ValueError, r"^mm\.integrate: pairing must be"),
        ({"use_var": "highly_variable"}, KeyError, "not a column"),
        ({"layer": "counts"}, KeyError, "Layer 'counts'"),
    ],
)
def test_error_arguments(kwargs, err, match):
    m = _small()
    with pytest.raises(err, match=match):
        si.mm.integrate(m, progress=False, **kwargs)
    _untouched(m)


def test_error_not_mudata_and_not_integrated():
    m = _small()
    with pytest.raises(TypeError, match="MuData"):
        si.mm.integrate(m["m0"], progress=False)
    with pytest.raises(KeyError, match=r"run scimpute\.mm\.integrate"):
        si.mm.translate(m, "m0", "m1")
    with pytest.raises(KeyError, match=r"run scimpute\.mm\.integrate"):
        si.mm.invariant_features(m)


def test_raw_counts_warn_and_normalize():
    rng = np.random.default_rng(0)
    from anndata import AnnData

    obs = pd.DataFrame(index=[f"c{i}" for i in range(50)])
    rna = AnnData(rng.poisson(5, size=(50, 30)).astype(np.float32) * 10, obs=obs.copy())
    prot = AnnData(rng.poisson(50, size=(50, 6)).astype(np.float32), obs=obs.copy())
    m = _mudata({"rna": rna, "prot": prot})
    # the warning comes while reading the inputs; the bad pairing then stops before training
    with (
        pytest.warns(UserWarning, match="raw counts"),
        pytest.raises(ValueError, match="pairing must"),
    ):
        si.mm.integrate(m, pairing=2.0, progress=False)
    si.mm.normalize(m, n_top_features={"rna": 10})
    x = rna.X
    expected = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(m["rna"].layers["scimpute_norm"], expected, rtol=1e-5)
    lp = np.log1p(prot.X)
    np.testing.assert_allclose(
        m["prot"].layers["scimpute_norm"], lp - lp.mean(1, keepdims=True), rtol=1e-5, atol=1e-6
    )
    assert m["rna"].var["scimpute_features"].sum() == 10
    assert m["prot"].var["scimpute_features"].all()
    assert m.uns["scimpute_norm"]["methods"] == {"rna": "log1p", "prot": "clr"}
