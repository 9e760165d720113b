"""scimpute.mm on the house conventions: typed options checked once, the stored record, bad input.

Every error path asserts that the MuData is left exactly as it was (compute first, then write).
"""

import copy
import math
import pickle
import warnings

import mudata as md
import numpy as np
import pytest
from anndata import AnnData
from hypothesis import given, settings
from hypothesis import strategies as st

import scimpute as si
from scimpute._utils import h5ad_safe
from scimpute.mm._params import IntegrateParams, InvariantParams, NormalizeParams
from scimpute.mm._record import IntegrationRecord, read_integration
from scimpute.nn import TrainConfig

KEY = "X_scimpute"
FAST = {"max_epochs": 2, "progress": False, "backbone": "autoencoder"}


def _small(**kw):
    return si.datasets.simulate_multimodal(60, (10, 8), random_state=0, **kw)


def _state(m) -> dict:
    """Everything a scimpute.mm call may write, to compare before and after a call."""
    out = {
        "uns": sorted(m.uns),
        "obsm": sorted(m.obsm),
        "obs": list(m.obs.columns),
    }
    for mod in m.mod:
        a = m[mod]
        out[mod] = (sorted(a.obsm), sorted(a.layers), list(a.var.columns), a.X.copy())
    return out


def _assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for k, v in before.items():
        if isinstance(v, tuple):
            assert v[:3] == after[k][:3], k
            np.testing.assert_array_equal(v[3], after[k][3])
        else:
            assert v == after[k], k


@pytest.fixture(scope="module")
def fitted_small():
    m = _small()
    si.mm.integrate(m, **FAST)
    return m


@pytest.fixture
def small_fit(fitted_small):
    """A copy of the fitted MuData whose record can be damaged freely."""
    m = fitted_small.copy()
    m.uns[KEY] = copy.deepcopy(dict(fitted_small.uns[KEY]))
    return m


# ---------------------------------------------------------------------------- options


def test_spec_composes_training_block_once():
    names = IntegrateParams.names()
    assert len(names) == len(set(names))
    # the training block is TrainConfig's, declared there: same fields, same constraints
    for f in TrainConfig.fields():
        mine = {x.name: x for x in IntegrateParams.fields()}[f.name].metadata["spec"]
        base = f.metadata["spec"]
        assert mine == base
    spec = IntegrateParams.from_kwargs("t", {"batch_size": 64, "n_latent": 3})
    assert TrainConfig.pick(spec) == TrainConfig(
        batch_size=64,
        max_epochs=200,
        patience=20,
        learning_rate=3e-4,
        weight_decay=1e-4,
        validation_fraction=0.2,
    )
    # every option is documented in the docstrings, from its declaration
    for fn, spec_cls in (
        (si.mm.integrate, IntegrateParams),
        (si.mm.normalize, NormalizeParams),
        (si.mm.invariant_features, InvariantParams),
    ):
        assert "{params}" not in fn.__doc__
        for name in spec_cls.names():
            assert f"    {name} : " in fn.__doc__, (fn.__name__, name)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_latent": 0}, "n_latent"),
        ({"n_latent": 2.5}, "n_latent"),  # was truncated silently
        ({"n_latent": "abc"}, "n_latent"),
        ({"n_hidden": True}, "n_hidden"),
        ({"n_private": -1}, "n_private"),
        ({"n_pcs": 0}, "n_pcs"),
        ({"n_pcs": "all"}, "n_pcs"),
        ({"learning_rate": math.nan}, "learning_rate"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"batch_size": 1}, "batch_size"),
        ({"patience": 0}, "patience"),
        ({"validation_fraction": 2.0}, "validation_fraction"),
        ({"dropout": 1.0}, "dropout"),
        ({"alignment": "gan"}, "alignment"),
        ({"standardize": "none"}, "standardize"),
        ({"temperature": 0.0}, "temperature"),
        ({"anchor_weight": math.inf}, "anchor_weight"),
        ({"early_stopping": "yes"}, "early_stopping"),
        ({"random_state": "abc"}, "random_state"),
        ({"random_state": -1}, "random_state"),
        ({"random_state": True}, "random_state"),
        ({"key_added": ""}, "key_added"),
    ],
)
def test_integrate_rejects_bad_option_with_house_message(kwargs, name):
    m = _small()
    before = _state(m)
    with pytest.raises(ValueError, match=rf"^mm\.integrate: {name} must be .*, got "):
        si.mm.integrate(m, progress=False, **kwargs)
    _assert_same(before, _state(m))


def test_integrate_unknown_option_is_type_error():
    m = _small()
    before = _state(m)
    with pytest.raises(TypeError, match=r"mm\.integrate: unexpected parameter.*'max_epochs'"):
        si.mm.integrate(m, n_epochs=3, progress=False)  # the old name: suggests the new one
    with pytest.raises(TypeError, match="unexpected parameter"):
        si.mm.integrate(m, bogus=1, progress=False)
    _assert_same(before, _state(m))


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["n_latent", "n_hidden", "max_epochs", "batch_size", "patience"]),
    value=st.one_of(
        st.integers(-5, 300),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=3),
        st.booleans(),
        st.none(),
    ),
)
def test_integer_options_accept_exactly_the_integers_in_range(name, value):
    low = 2 if name == "batch_size" else 1
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok:
        assert getattr(IntegrateParams.from_kwargs("mm.integrate", {name: value}), name) == value
    else:
        with pytest.raises(ValueError, match=rf"^mm\.integrate: {name} must be "):
            IntegrateParams.from_kwargs("mm.integrate", {name: value})


def test_diverging_training_leaves_mudata_untouched():
    m = _small()
    before = _state(m)
    with pytest.raises(FloatingPointError, match="diverged"):
        si.mm.integrate(m, scale_weight=3e38, **FAST)
    _assert_same(before, _state(m))


# ---------------------------------------------------------------------------- the record


def test_record_holds_the_spec_and_reproduces_the_fit(small_fit, tmp_path):
    m = small_fit
    rec = m.uns[KEY]
    spec = IntegrateParams.from_kwargs(
        "t", {"max_epochs": 2, "n_private": 4, "backbone": "autoencoder"}
    )
    for name, value in h5ad_safe(spec.to_dict()).items():
        assert rec["params"][name] == value, name
    assert list(rec["params"]["modalities"]) == ["m0", "m1"]
    assert rec["fit"]["n_epochs_run"] == 2
    typed = read_integration(m, KEY)
    assert typed.params == spec
    assert typed.arch.n_private == 4
    assert typed.fit.n_anchors == rec["fit"]["n_anchors"] > 0
    # the stored options rerun the same fit (numbers equal to the bit)
    again = _small()
    options = {k: typed.params.to_dict()[k] for k in IntegrateParams.names()}
    si.mm.integrate(again, random_state=typed.random_state, progress=False, **options)
    np.testing.assert_array_equal(again.obsm[KEY], m.obsm[KEY])
    # to_uns / from_uns round trip, also through an h5mu file
    back = IntegrationRecord.from_uns(typed.to_uns(), KEY)
    assert back.params == typed.params
    assert back.fit == typed.fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.write(tmp_path / "m.h5mu")
        reread = md.read_h5mu(tmp_path / "m.h5mu")
    typed2 = read_integration(reread, KEY)
    assert typed2.params == typed.params
    assert typed2.fit == typed.fit
    assert typed2.modalities == typed.modalities


def test_stored_params_are_checked_on_read(small_fit):
    m = small_fit
    m.uns[KEY]["params"]["n_latent"] = "eight"
    with pytest.raises(ValueError, match=r"stored in mdata\.uns\['X_scimpute'\]\): n_latent must"):
        si.mm.translate(m, "m0", "m1")


def _weight_name(m) -> str:
    return sorted(m.uns[KEY]["weights"])[0]


@pytest.mark.parametrize("entry", ["weights", "mean", "scale", "private_mean"])
def test_nan_in_stored_model_is_an_error_not_nan_predictions(small_fit, entry):
    m = small_fit
    if entry == "weights":
        arr = m.uns[KEY]["weights"][_weight_name(m)]
    else:
        arr = m.uns[KEY][entry]["m0"]
    arr.reshape(-1)[0] = np.nan
    before = _state(m)
    with pytest.raises(ValueError, match="NaN or infinite"):
        si.mm.translate(m, "m0", "m1", key_added="pred")
    with pytest.raises(ValueError, match="NaN or infinite"):
        si.mm.invariant_features(m)
    _assert_same(before, _state(m))


def test_nan_weights_in_a_file_are_an_error(small_fit, tmp_path):
    m = small_fit
    m.uns[KEY]["weights"][_weight_name(m)][:] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.write(tmp_path / "bad.h5mu")
        back = md.read_h5mu(tmp_path / "bad.h5mu")
    with pytest.raises(ValueError, match=r"weights.*NaN or infinite"):
        si.mm.translate(back, "m0", "m1")


class _Trap:
    """An object that records whether anything called into it while loading."""

    called = False

    def __array__(self, *args, **kwargs):
        _Trap.called = True
        return np.zeros((8, 10), np.float32)

    def __reduce__(self):
        _Trap.called = True
        return (print, ("unpickled",))


@pytest.mark.parametrize(
    "value",
    [
        _Trap(),
        pickle.dumps(np.zeros(3)),  # a pickle stored as bytes
        np.void(pickle.dumps(np.zeros(3))),
        np.array([pickle.dumps(np.zeros(3))], dtype=object),
        "text instead of a weight",
    ],
    ids=["array-protocol", "pickle-bytes", "pickle-void", "object-array", "text"],
)
def test_stored_weights_never_run_code_and_say_what_is_wrong(small_fit, value):
    m = small_fit
    m.uns[KEY]["weights"][_weight_name(m)] = value
    _Trap.called = False
    with pytest.raises(ValueError, match="is not a numeric array"):
        si.mm.translate(m, "m0", "m1")
    assert not _Trap.called


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (("features", "m0"), r"\['features'\]\['m0'\] is not a string or a list of strings"),
        (("layer", "m1"), r"\['layer'\]\['m1'\] is not a string"),
        (("params", "modalities"), r"\['params'\]\['modalities'\] is not a string"),
        (("mean", "m0"), r"\['mean'\]\['m0'\]\W? is not a numeric array"),
        (("projection", "m0"), r"\['projection'\]\['m0'\]\W? is not a numeric array"),
    ],
)
def test_no_stored_entry_runs_code_on_load(small_fit, entry, match):
    m = small_fit
    m.uns[KEY][entry[0]][entry[1]] = _Trap()
    _Trap.called = False
    with pytest.raises(ValueError, match=match):
        si.mm.translate(m, "m0", "m1")
    assert not _Trap.called


def test_damaged_record_names_what_is_missing(small_fit):
    m = small_fit
    weights = m.uns[KEY].pop("weights")
    with pytest.raises(ValueError, match=r"not written by scimpute\.mm\.integrate.*'weights'"):
        si.mm.translate(m, "m0", "m1")
    m.uns[KEY]["weights"] = weights
    del m.uns[KEY]["weights"][_weight_name(m)]
    with pytest.raises(ValueError, match="lack"):
        si.mm.translate(m, "m0", "m1")


# ---------------------------------------------------------------------------- other entry points


def test_translate_bad_key_added_writes_nothing(small_fit):
    m = small_fit
    before = _state(m)
    with pytest.raises(ValueError, match=r"^mm\.translate: key_added must be"):
        si.mm.translate(m, "m0", "m1", key_added="")
    with pytest.raises(KeyError, match="source='m2'"):
        si.mm.translate(m, "m2", "m1", key_added="pred")
    _assert_same(before, _state(m))
    out = si.mm.translate(m, "m0", "m1")
    assert out.uns["translate"] == {"source": "m0", "target": "m1", "key": KEY}


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"r2_floor": 0.0}, ValueError, r"^mm\.invariant_features: r2_floor must be"),
        ({"r2_floor": 1.5}, ValueError, r"^mm\.invariant_features: r2_floor must be"),
        ({"n_bootstrap": -1}, ValueError, r"^mm\.invariant_features: n_bootstrap must be"),
        ({"n_bootstrap": 2.5}, ValueError, r"^mm\.invariant_features: n_bootstrap must be"),
        ({"cells": "bogus"}, ValueError, r"^mm\.invariant_features: cells must be one of"),
        ({"random_state": "abc"}, ValueError, r"^mm\.invariant_features: random_state must"),
        ({"bootstrap": 3}, TypeError, r"unexpected parameter.*'n_bootstrap'"),
    ],
)
def test_invariant_features_rejects_bad_options(small_fit, kwargs, err, match):
    m = small_fit
    before = _state(m)
    with pytest.raises(err, match=match):
        si.mm.invariant_features(m, **kwargs)
    _assert_same(before, _state(m))


def _counts():
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(30)]
    rna = AnnData(rng.poisson(5, size=(30, 12)).astype(np.float32))
    prot = AnnData(rng.poisson(20, size=(30, 4)).astype(np.float32))
    rna.obs_names = prot.obs_names = names
    rna.layers["counts"] = rna.X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return md.MuData({"rna": rna, "prot": prot})


def test_normalize_missing_layer_lists_the_layers():
    m = _counts()
    before = _state(m)
    with pytest.raises(KeyError, match=r"Layer 'count' is not in mdata\['rna'\]\.layers\. Its "):
        si.mm.normalize(m, layer="count")
    with pytest.raises(KeyError, match="'counts'"):  # the layer that exists is named
        si.mm.normalize(m, layer={"rna": "raw"})
    with pytest.raises(KeyError, match=r"mdata\['prot'\] has no layers.*layer=None"):
        si.mm.normalize(m, layer="counts")  # prot has none
    _assert_same(before, _state(m))
    si.mm.normalize(m, layer={"rna": "counts"})
    np.testing.assert_allclose(
        m["rna"].layers["scimpute_norm"],
        np.log1p(m["rna"].X / m["rna"].X.sum(1, keepdims=True) * 1e4),
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"target_sum": 0.0}, ValueError, r"^mm\.normalize: target_sum must be"),
        ({"methods": "zscore"}, ValueError, r"^mm\.normalize: methods must be one of"),
        ({"methods": {"rna": "zscore"}}, ValueError, r"^mm\.normalize: methods must be"),
        ({"n_top_features": 0}, ValueError, r"^mm\.normalize: n_top_features must be"),
        ({"n_top_features": {"rna": 2.5}}, ValueError, r"^mm\.normalize: n_top_features"),
        ({"top_features": 3}, TypeError, r"unexpected parameter.*'n_top_features'"),
        ({"modalities": ["atac"]}, KeyError, r"'atac' is not in mdata; its modalities: 'rna'"),
    ],
)
def test_normalize_rejects_bad_options(kwargs, err, match):
    m = _counts()
    before = _state(m)
    with pytest.raises(err, match=match):
        si.mm.normalize(m, **kwargs)
    _assert_same(before, _state(m))


def test_normalize_failing_modality_writes_nothing_anywhere():
    m = _counts()
    m["prot"].X[0, 0] = -1.0  # rna is fine, prot is not: no modality may be written
    before = _state(m)
    with pytest.raises(ValueError, match="negative values"):
        si.mm.normalize(m)
    _assert_same(before, _state(m))
