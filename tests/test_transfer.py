import anndata as ad
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import scimpute as si


@pytest.fixture(scope="module")
def fast(fast):
    """The shared small settings without the inner validation (one network per fit)."""
    return {**fast, "inner_folds": 0}


@pytest.fixture(scope="module")
def train(cells, fast):
    hide = (cells.obs["cell_type"] == "ct0") & (cells.obs["perturbation"] == "p0")
    tr = cells[~hide.to_numpy()].copy()
    si.tl.fit_transfer(tr, progress=False, **fast)
    return tr


def _r2(a, b):
    return 1 - np.sum((a - b) ** 2) / np.sum((b - b.mean()) ** 2)


def test_fit_writes_latent_and_record(train):
    rec = train.uns["transfer"]
    assert train.obsm["X_transfer"].shape == (train.n_obs, 8)
    assert train.obsm["X_transfer"].dtype == np.float32
    assert rec["params"]["model"] == "autoencoder"
    assert rec["params"]["width"] == 32
    assert set(rec["history"]) == {"train_loss", "val_loss"}
    assert rec["training"]["n_train"] + rec["training"]["n_val"] == train.n_obs
    assert all(isinstance(v, np.ndarray) for v in rec["weights"].values())
    hist = rec["history"]["val_loss"]
    assert hist[rec["training"]["best_epoch"]] == np.nanmin(hist)


def test_recovers_known_latent_shift(cells, train):
    pred = si.tl.transfer(train, target_context="ct0", target_perturbation="p0")
    truth = cells[
        ((cells.obs["cell_type"] == "ct0") & (cells.obs["perturbation"] == "p0")).to_numpy()
    ]
    ctrl = train[
        ((train.obs["cell_type"] == "ct0") & (train.obs["perturbation"] == "control")).to_numpy()
    ]
    t = truth.layers["mean"].mean(0)
    r2_pred = _r2(pred.X.mean(0), t)
    r2_none = _r2(ctrl.X.mean(0), t)
    assert r2_pred > 0.9
    assert r2_pred > r2_none + 0.2
    # obs and var contract
    assert pred.n_obs == ctrl.n_obs
    assert (pred.var_names == train.var_names).all()
    assert set(pred.obs["cell_type"]) == {"ct0"}
    assert set(pred.obs["perturbation"]) == {"p0"}
    assert pred.obs["predicted"].all()
    assert (pred.obs["source_cell"].to_numpy() == ctrl.obs_names.to_numpy()).all()
    assert "ct0" not in set(pred.uns["transfer"]["contexts_used"])
    assert pred.uns["transfer"]["how"] == "measured"


def test_latent_shift_matches_manual_balanced_mean(train):
    pred = si.tl.transfer(train, target_context="ct0", target_perturbation="p0")
    Z = train.obsm["X_transfer"].astype(np.float64)
    ct, pt = train.obs["cell_type"].to_numpy(), train.obs["perturbation"].to_numpy()
    ref = np.mean(
        [
            Z[(ct == c) & (pt == "p0")].mean(0) - Z[(ct == c) & (pt == "control")].mean(0)
            for c in ("ct1", "ct2", "ct3")
        ],
        axis=0,
    )
    np.testing.assert_allclose(pred.uns["transfer"]["shift"], ref, rtol=1e-5, atol=1e-6)
    z0 = Z[(ct == "ct0") & (pt == "control")]
    np.testing.assert_allclose(pred.obsm["X_transfer"], z0 + ref, rtol=1e-5, atol=1e-5)
    res = si.tl.transfer(train, target_context="ct0", target_perturbation="p0", output="residual")
    X0 = train.X[(ct == "ct0") & (pt == "control")]
    net, _ = si.tl.load_network(train)
    change = si.nn.decode(net, (z0 + ref).astype(np.float32)) - si.nn.decode(
        net, z0.astype(np.float32)
    )
    np.testing.assert_allclose(res.X, X0 + change, rtol=1e-4, atol=1e-4)


def test_seeded_determinism(train, fast):
    a = train.copy()
    c = train.copy()
    del a.uns["transfer"], c.uns["transfer"]
    si.tl.fit_transfer(a, progress=False, **fast)  # same seed as the fixture
    np.testing.assert_array_equal(a.obsm["X_transfer"], train.obsm["X_transfer"])
    for k, v in train.uns["transfer"]["weights"].items():
        np.testing.assert_array_equal(a.uns["transfer"]["weights"][k], v)
    si.tl.fit_transfer(c, progress=False, random_state=8, **{**fast, "max_epochs": 2})
    assert not np.array_equal(a.obsm["X_transfer"], c.obsm["X_transfer"])
    pa = si.tl.transfer(a, target_context="ct0", target_perturbation="p0", balance="resample")
    pb = si.tl.transfer(train, target_context="ct0", target_perturbation="p0", balance="resample")
    np.testing.assert_array_equal(pa.X, pb.X)
    pc = si.tl.transfer(
        train, target_context="ct0", target_perturbation="p0", balance="resample", random_state=5
    )
    assert not np.array_equal(pa.uns["transfer"]["shift"], pc.uns["transfer"]["shift"])


def test_h5ad_round_trip_predicts_identically(train, tmp_path):
    before = si.tl.transfer(train, target_context="ct0", target_perturbation="p0")
    path = tmp_path / "fitted.h5ad"
    train.write_h5ad(path)
    back = ad.read_h5ad(path)
    after = si.tl.transfer(back, target_context="ct0", target_perturbation="p0")
    np.testing.assert_array_equal(before.X, after.X)
    np.testing.assert_array_equal(back.obsm["X_transfer"], train.obsm["X_transfer"])
    pred_path = tmp_path / "pred.h5ad"
    after.write_h5ad(pred_path)
    assert ad.read_h5ad(pred_path).obs["predicted"].all()


def test_combination_by_latent_additivity(train):
    pred = si.tl.transfer(train, target_context="ct0", target_perturbation="p0+p1")
    s0 = si.tl.transfer(train, target_context="ct0", target_perturbation="p0").uns["transfer"]
    s1 = si.tl.transfer(train, target_context="ct0", target_perturbation="p1").uns["transfer"]
    assert pred.uns["transfer"]["how"] == "sum_of_components"
    np.testing.assert_allclose(
        pred.uns["transfer"]["shift"], s0["shift"] + s1["shift"], rtol=1e-5, atol=1e-6
    )
    assert set(pred.obs["perturbation"]) == {"p0+p1"}


def test_fits_when_no_model_and_pertpy_default_columns(train, fast):
    sub = train.copy()
    del sub.uns["transfer"], sub.obsm["X_transfer"]
    out = si.tl.transfer(
        sub, target_context="ct0", target_perturbation="p1", key="m", progress=False, **fast
    )
    assert "m" in sub.uns
    assert "X_m" in sub.obsm
    assert out.n_obs == int(
        ((sub.obs["cell_type"] == "ct0") & (sub.obs["perturbation"] == "control")).sum()
    )
    with pytest.warns(UserWarning, match="ignoring"):
        si.tl.transfer(sub, target_context="ct0", target_perturbation="p1", key="m", width=3)
    assert "transfer" not in sub.uns


def test_bad_inputs(train, cells):
    no_ctrl = train[
        ~((train.obs["cell_type"] == "ct1") & (train.obs["perturbation"] == "control")).to_numpy()
    ].copy()
    with pytest.raises(ValueError, match="no control cells"):
        si.tl.transfer(no_ctrl, target_context="ct1", target_perturbation="p0")
    with pytest.raises(ValueError, match="measured nowhere"):
        si.tl.transfer(train, target_context="ct0", target_perturbation="p7")
    only_here = train[
        ~((train.obs["perturbation"] == "p1") & (train.obs["cell_type"] != "ct0")).to_numpy()
    ].copy()
    with pytest.raises(ValueError, match="measured only in 'ct0'"):
        si.tl.transfer(only_here, target_context="ct0", target_perturbation="p1")
    with pytest.raises(ValueError, match="measured nowhere"):
        si.tl.transfer(train, target_context="ct0", target_perturbation="p0+p9")
    with pytest.raises(KeyError, match="ct9"):
        si.tl.transfer(train, target_context="ct9", target_perturbation="p0")
    with pytest.raises(ValueError, match="is the control"):
        si.tl.transfer(train, target_context="ct0", target_perturbation="control")
    with pytest.raises(ValueError, match="balance"):
        si.tl.transfer(train, target_context="ct0", target_perturbation="p0", balance="x")
    tiny = cells[:5].copy()
    with pytest.raises(ValueError, match="at least 10 cells"):
        si.tl.fit_transfer(tiny, progress=False)
    assert "transfer" not in tiny.uns
    assert "X_transfer" not in tiny.obsm
    with pytest.raises(ValueError, match="Control label"):
        si.tl.fit_transfer(cells, control="ctrl", progress=False)
    with pytest.raises(KeyError, match="Did you mean"):
        si.tl.fit_transfer(cells, context_key="cell_typ", progress=False)
    with pytest.raises(ValueError, match="model must be"):
        si.tl.fit_transfer(cells, model="gan", progress=False)
    with pytest.raises(KeyError, match="no fitted model"):
        si.tl.load_network(cells, key="nothing")
    other_genes = train[:, ::-1].copy()
    with pytest.raises(ValueError, match="var_names differ"):
        si.tl.transfer(other_genes, target_context="ct0", target_perturbation="p0")


def test_vae_fits_and_predicts(train, fast):
    # 36 cells -> 32 training rows in one batch of 32: the VAE training loop compiled by the
    # grid tests (tests/methods/test_autoencoder.py) is reused
    ct = train.obs["cell_type"].to_numpy()
    sub = train[np.flatnonzero(ct != "ct3")[::11][:36]].copy()
    si.tl.fit_transfer(
        sub,
        model="vae",
        progress=False,
        **{**fast, "max_epochs": 5, "batch_size": 32, "learning_rate": 1e-3, "dropout": 0.2},
    )
    assert sub.uns["transfer"]["training"]["n_train"] == 32
    assert sub.uns["transfer"]["params"]["model"] == "vae"
    assert sub.uns["transfer"]["params"]["kl_weight"] == 5e-5
    assert sub.obsm["X_transfer"].shape[1] == 8
    out = si.tl.transfer(sub, target_context="ct0", target_perturbation="p1")
    assert np.isfinite(out.X).all()


def test_signature_alignment_against_numpy(train):
    tab = si.tl.signature_alignment(train)
    assert set(tab.columns) >= {"perturbation", "context_1", "context_2", "cosine_genes"}
    # p0 in 3 contexts (ct0 hidden) -> 3 pairs, p1 in 4 -> 6 pairs
    assert tab.groupby("perturbation").size().to_dict() == {"p0": 3, "p1": 6}
    X = np.asarray(train.X, dtype=np.float64)
    Z = train.obsm["X_transfer"].astype(np.float64)
    ct, pt = train.obs["cell_type"].to_numpy(), train.obs["perturbation"].to_numpy()

    def sig(M, c):
        return M[(ct == c) & (pt == "p1")].mean(0) - M[(ct == c) & (pt == "control")].mean(0)

    row = tab[(tab.perturbation == "p1") & (tab.context_1 == "ct1") & (tab.context_2 == "ct3")]
    for M, col in ((X, "cosine_genes"), (Z, "cosine_latent")):
        a, b = sig(M, "ct1"), sig(M, "ct3")
        ref = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        np.testing.assert_allclose(row[col].iloc[0], ref, rtol=1e-5)
    assert "signature_alignment" in train.uns
    ax = si.pl.signature_alignment(train, show=False)
    assert ax.get_title().startswith("Signature alignment")
    ax = si.pl.signature_alignment({"a": tab, "b": tab}, kind="hist", show=False)
    assert ax is not None


def test_pertpy_missing_gives_install_hint(train, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pertpy", None)  # makes `import pertpy` fail
    with pytest.raises(ImportError, match=r"pip install 'pertpy==1\.0\.3'"):
        si.tl.compare_transfer(train, train)


# ---------------------------------------------------------------- defects of issue 9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_epochs": 0}, "fit_transfer: max_epochs must be an integer >= 1, got 0"),
        ({"batch_size": 0}, "fit_transfer: batch_size must be an integer >= 1, got 0"),
        ({"learning_rate": float("nan")}, "fit_transfer: learning_rate must be a number > 0"),
        ({"learning_rate": -1e-3}, "fit_transfer: learning_rate must be a number > 0"),
        ({"validation_fraction": 2.0}, "fit_transfer: validation_fraction must be a number"),
        ({"validation_fraction": 0.6}, "fit_transfer: validation_fraction must be .* < 0.5"),
        ({"width": "big"}, "fit_transfer: width must be an integer >= 1, got 'big'"),
        ({"latent_dim": "abc"}, "fit_transfer: latent_dim must be an integer >= 1 or None"),
        ({"latent_dim": 2.5}, "fit_transfer: latent_dim must be an integer >= 1 or None"),
        ({"depth": 1.5}, "fit_transfer: depth must be an integer >= 1, got 1.5"),
        ({"dropout": 1.0}, "fit_transfer: dropout must be a number >= 0 and < 1"),
        ({"model": "vae", "latent_dim": None}, "fit_transfer: latent_dim must be an integer"),
    ],
)
def test_bad_training_parameters_are_rejected_before_training(cells, kwargs, match):
    a = cells.copy()
    with pytest.raises(ValueError, match=match):
        si.tl.fit_transfer(a, progress=False, **kwargs)
    assert "transfer" not in a.uns and "X_transfer" not in a.obsm


def test_unknown_parameter_is_a_type_error(cells):
    with pytest.raises(TypeError, match="fit_transfer: unexpected parameter.*'widht'"):
        si.tl.fit_transfer(cells.copy(), widht=3)


def test_diverging_training_raises_and_stores_nothing(cells, fast):
    a = cells.copy()
    a.X = np.asarray(a.X, dtype=np.float32) * np.float32(1e30)
    with pytest.raises(si.nn.TrainingDivergedError, match="diverged"):
        si.tl.fit_transfer(a, progress=False, **fast)
    assert "transfer" not in a.uns and "X_transfer" not in a.obsm


def _damaged(train, fn):
    a = train.copy()
    rec = a.uns["transfer"]
    rec["weights"] = dict(rec["weights"])
    rec["params"] = dict(rec["params"])
    fn(rec)
    return a


def test_nan_weights_are_refused_on_load(train):
    def nan(rec):
        w = rec["weights"]["encoder_layers_0_weight"].copy()
        w[0, 0] = np.nan
        rec["weights"]["encoder_layers_0_weight"] = w

    a = _damaged(train, nan)
    with pytest.raises(ValueError, match="'encoder_layers_0_weight' holds 1 NaN"):
        si.tl.load_network(a)
    with pytest.raises(ValueError, match="NaN"):
        si.tl.transfer(a, target_context="ct0", target_perturbation="p0")


def test_damaged_records_say_what_is_wrong(train, tmp_path):
    a = _damaged(train, lambda r: r["weights"].update(decoder_layers_0_bias="not a weight"))
    path = tmp_path / "text.h5ad"
    a.write_h5ad(path)
    back = ad.read_h5ad(path)
    with pytest.raises(ValueError, match="'decoder_layers_0_bias' is not a numeric array"):
        si.tl.load_network(back)
    a = _damaged(train, lambda r: r["params"].pop("width"))
    with pytest.raises(ValueError, match="lacks the architecture entry 'width'"):
        si.tl.load_network(a)
    a = _damaged(train, lambda r: r["params"].update(depth="two"))
    with pytest.raises(ValueError, match=r"\['depth'\] must be an integer, got 'two'"):
        si.tl.load_network(a)
    a = _damaged(train, lambda r: r["params"].update(width=0))
    with pytest.raises(ValueError, match="invalid architecture: width must be a positive"):
        si.tl.load_network(a)


class _Payload:
    """Unpickling this object would set a flag (stands for arbitrary code)."""

    def __reduce__(self):
        return (exec, ("import builtins; builtins._scimpute_pwned = True",))


def test_pickled_weights_are_refused_without_unpickling(train, tmp_path):
    import builtins
    import pickle

    blob = pickle.dumps(_Payload())
    for value in (blob, np.void(blob), np.frombuffer(blob, dtype="S1"), np.array([_Payload()])):
        a = _damaged(train, lambda r, v=value: r["weights"].update(encoder_layers_0_weight=v))
        with pytest.raises(ValueError, match="'encoder_layers_0_weight' is not a numeric array"):
            si.tl.load_network(a)
    assert not hasattr(builtins, "_scimpute_pwned")


def test_sparse_backed_anndata_fits_and_transfers(cells, fast, tmp_path):
    import scipy.sparse as sp

    mem = cells.copy()
    mem.X = sp.csr_matrix(np.asarray(mem.X, dtype=np.float32))
    path = tmp_path / "sparse.h5ad"
    mem.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    si.tl.fit_transfer(backed, progress=False, **fast)
    si.tl.fit_transfer(mem, progress=False, **fast)
    np.testing.assert_array_equal(backed.obsm["X_transfer"], mem.obsm["X_transfer"])
    p1 = si.tl.transfer(backed, target_context="ct0", target_perturbation="p0")
    p2 = si.tl.transfer(mem, target_context="ct0", target_perturbation="p0")
    np.testing.assert_array_equal(p1.X, p2.X)
    backed.file.close()


def test_chunked_reading_of_a_backed_matrix_equals_the_matrix(cells, tmp_path):
    import scipy.sparse as sp

    from scimpute.tl._transfer._data import dense

    mem = cells.copy()
    mem.X = sp.csr_matrix(np.asarray(mem.X, dtype=np.float32))
    path = tmp_path / "chunks.h5ad"
    mem.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    np.testing.assert_array_equal(dense(backed.X, chunk=7), mem.X.toarray())
    backed.file.close()


def test_kang_file_read_backed_transfers(data_dir):
    path = data_dir / "kang2018_pbmc_ifnb_small.h5ad"
    if not path.exists():
        pytest.skip("kang2018_pbmc_ifnb_small.h5ad not in the data directory")
    kang = ad.read_h5ad(path, backed="r")  # sparse X on disk
    # reading the backed file is what is tested: one network, no inner validation
    small = {"width": 16, "depth": 1, "latent_dim": 4, "max_epochs": 2, "batch_size": 256,
             "inner_folds": 0}  # fmt: skip
    si.tl.fit_transfer(kang, "cell_type", "condition", progress=False, **small)
    assert kang.obsm["X_transfer"].shape == (kang.n_obs, 4)
    target = str(kang.obs["cell_type"].iloc[0])
    pred = si.tl.transfer(
        kang, "cell_type", "condition", target_context=target, target_perturbation="stimulated"
    )
    assert pred.n_obs > 0 and np.isfinite(pred.X).all()
    kang.file.close()


def test_float16_expression(cells, fast):
    a = cells.copy()
    a.X = np.asarray(a.X, dtype=np.float16)
    b = cells.copy()
    b.X = np.asarray(a.X, dtype=np.float32)  # the same values, float32
    si.tl.fit_transfer(a, progress=False, **fast)
    si.tl.fit_transfer(b, progress=False, **fast)
    np.testing.assert_array_equal(a.obsm["X_transfer"], b.obsm["X_transfer"])
    pa = si.tl.transfer(a, target_context="ct0", target_perturbation="p0", output="residual")
    pb = si.tl.transfer(b, target_context="ct0", target_perturbation="p0", output="residual")
    np.testing.assert_array_equal(pa.X, pb.X)


def test_empty_anndata_names_the_problem(cells):
    with pytest.raises(ValueError, match="adata has no cells"):
        si.tl.fit_transfer(cells[:0].copy(), progress=False)


class _OnDisk:
    """Stands for a backed matrix: only ``shape`` and row slicing (sparse blocks)."""

    def __init__(self, m):
        self._m, self.shape = m, m.shape

    def __getitem__(self, rows):
        return self._m[rows]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 40),
    p=st.integers(1, 6),
    chunk=st.integers(1, 50),
    density=st.floats(0.0, 1.0),
    dtype=st.sampled_from([np.float32, np.float64, np.int32]),
    seed=st.integers(0, 2**16),
)
def test_dense_reads_every_layout_alike(n, p, chunk, density, dtype, seed):
    import scipy.sparse as sp

    from scimpute.tl._transfer._data import dense

    rng = np.random.default_rng(seed)
    ref = (rng.normal(size=(n, p)) * 10 * (rng.random((n, p)) < density)).astype(dtype)
    want = ref.astype(np.float32)
    for x in (
        ref,
        sp.csr_matrix(ref),
        sp.csc_matrix(ref),
        _OnDisk(sp.csr_matrix(ref)),
        _OnDisk(ref),
    ):
        got = dense(x, chunk=chunk)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------------------------
# Validation inside fit_transfer and the latent transport
# --------------------------------------------------------------------------------------------

SMALL = {"width": 32, "depth": 2, "latent_dim": 8, "max_epochs": 60, "batch_size": 64,
         "learning_rate": 3e-3, "dropout": 0.0}  # fmt: skip


@pytest.fixture(scope="module")
def context_dependent():
    """8 contexts whose effect depends on the cell's state (no constant shift reproduces it)."""
    cells = si.datasets.simulate_cells(
        n_contexts=8, n_perturbations=1, n_genes=30, n_cells=60, context_effect=0.5,
        random_state=0,
    )  # fmt: skip
    hide = ((cells.obs["cell_type"] == "ct0") & (cells.obs["perturbation"] == "p0")).to_numpy()
    tr = cells[~hide].copy()
    si.tl.fit_transfer(tr, progress=False, inner_folds=3, **SMALL)
    return cells, hide, tr


def test_transport_recovers_a_context_dependent_effect_chosen_by_validation(context_dependent):
    cells, hide, tr = context_dependent
    rec = tr.uns["transfer"]
    chosen = rec["params"]["rule"]
    assert chosen in ("transport", "kernel")  # a rule that depends on the cell's position
    assert rec["validation"]["chosen"]["validated"]
    table = rec["validation"]["candidates"]
    assert {"shift", "transport", "kernel"} <= set(table["rule"])
    assert len(rec["validation"]["folds"]) == 3
    assert not any(f.startswith("ct0|") for f in rec["validation"]["folds"])  # the held-out one
    truth = cells[hide].layers["mean"].mean(0)
    r2 = {}
    for rule in ("shift", "transport", "kernel"):
        pred = si.tl.transfer(tr, target_context="ct0", target_perturbation="p0", rule=rule)
        assert pred.uns["transfer"]["rule"] == rule
        r2[rule] = _r2(pred.X.mean(0), truth)
    auto = si.tl.transfer(tr, target_context="ct0", target_perturbation="p0")
    assert auto.uns["transfer"]["rule"] == chosen
    assert r2[chosen] > 0.3
    assert r2[chosen] > r2["shift"] + 0.2
    # each predicted cell is moved from its own control cell: their spread is kept
    assert auto.X.std(0).mean() > 0.5 * cells[hide].X.std(0).mean()


def test_validated_fit_is_deterministic(context_dependent):
    _, _, tr = context_dependent
    again = tr.copy()
    del again.uns["transfer"]
    si.tl.fit_transfer(again, progress=False, inner_folds=3, **SMALL)
    a, b = tr.uns["transfer"], again.uns["transfer"]
    for k, v in a["validation"]["candidates"].items():
        np.testing.assert_array_equal(b["validation"]["candidates"][k], v)
    np.testing.assert_array_equal(again.obsm["X_transfer"], tr.obsm["X_transfer"])
    p1 = si.tl.transfer(tr, target_context="ct0", target_perturbation="p0")
    p2 = si.tl.transfer(again, target_context="ct0", target_perturbation="p0")
    np.testing.assert_array_equal(p1.X, p2.X)


def test_transport_equals_the_shift_without_position_dependence():
    from scimpute.nn._shift import transport_map

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(240, 3))
    codes = np.repeat(np.arange(4), 60)
    treated = np.tile(np.r_[np.zeros(30, bool), np.ones(30, bool)], 4)
    Z[treated] += np.array([1.0, -2.0, 0.5])
    rule, used = transport_map(Z, codes, treated, ~treated, 4, alpha=np.inf)
    shift, used2 = si.nn.latent_shift(Z, codes, treated, ~treated, 4)
    np.testing.assert_allclose(rule["b"], shift, atol=1e-6)
    np.testing.assert_array_equal(rule["A"], 0)
    np.testing.assert_array_equal(used, used2)
    # a linear effect z -> z + s + z @ M is recovered by the ridge with a small penalty
    M = np.array([[0.5, 0, 0], [0, -0.5, 0], [0, 0, 0.3]])
    Z2 = Z.copy()
    Z2[treated] = Z[~treated] + np.array([1.0, -2.0, 0.5]) + Z[~treated] @ M
    rule, _ = transport_map(Z2, codes, treated, ~treated, 4, alpha=1e-3, epsilon=0.02)
    np.testing.assert_allclose(rule["A"], M, atol=0.05)
    # the default entropic blur (epsilon 0.1) shrinks the map but keeps its shape
    rule, _ = transport_map(Z2, codes, treated, ~treated, 4, alpha=1e-3)
    np.testing.assert_allclose(rule["A"], M, atol=0.25)
    assert np.corrcoef(np.diag(rule["A"]), np.diag(M))[0, 1] > 0.95


def test_kernel_rule_follows_the_nearest_contexts_where_shift_and_linear_map_cannot():
    """Effect quadratic in the context's position: the middle context responds like its
    neighbours, not like the average (the shift) nor a linear fit (flat by symmetry)."""
    from scimpute.tl._transfer._rules import kernel_displacement, move

    rng = np.random.default_rng(0)
    n_ctx, n = 9, 40
    codes = np.repeat(np.arange(n_ctx), 2 * n)
    treated = np.tile(np.r_[np.zeros(n, bool), np.ones(n, bool)], n_ctx)
    x = np.arange(n_ctx, dtype=float)[codes]
    Z = np.c_[x + 0.1 * rng.normal(size=codes.size), 0.1 * rng.normal(size=codes.size)]
    Z[treated, 1] += (x[treated] - 4.0) ** 2 / 5.0  # effect 0 at the middle context 4
    got = {}
    for rule, alpha in (("shift", np.inf), ("transport", 1e-3), ("kernel", 0.02)):
        moved, info = move(Z, codes, n_ctx, 4, [treated], ~treated, rule=rule, alpha=alpha)
        assert info["used"].sum() == n_ctx - 1 and not info["used"][4]
        got[rule] = (moved - Z[~treated & (codes == 4)]).mean(0)[1]
    assert got["shift"] == pytest.approx(60 / 8 / 5, abs=0.05)  # mean effect of the others
    assert abs(got["transport"] - got["shift"]) < 0.1  # symmetric: no linear trend
    assert abs(got["kernel"]) < 0.35  # the neighbours' effect, 0.2
    # an infinite bandwidth is the balanced mean displacement
    P, D, W = Z[:10], rng.normal(size=(10, 2)), np.full(10, 0.1)
    np.testing.assert_allclose(
        kernel_displacement(P, D, W, Z[:3], np.inf), np.tile(D.mean(0), (3, 1))
    )
    # chunked rows give the same answer as one block
    from scimpute.tl._transfer import _rules

    whole = kernel_displacement(P, D, W, Z[:50], 0.1)
    old, _rules.KERNEL_CHUNK = _rules.KERNEL_CHUNK, 7
    try:
        np.testing.assert_allclose(kernel_displacement(P, D, W, Z[:50], 0.1), whole)
    finally:
        _rules.KERNEL_CHUNK = old


def test_rule_strength_reads_the_chosen_then_the_validated_then_the_default():
    from scimpute.tl._transfer._predict import DEFAULT_STRENGTH, rule_strength

    params = {"rule": "kernel", "transport_alpha": 0.05, "width": 8, "depth": 1, "latent_dim": "4"}
    table = {"rule": np.array(["transport", "transport", "kernel"], dtype=object),
             "alpha": np.array([0.1, 10.0, 0.05]), "score": np.array([0.2, 0.9, 0.5]),
             "width": np.array([8, 8, 8]), "depth": np.array([1, 1, 1]),
             "latent_dim": np.array(["4", "4", "4"], dtype=object)}  # fmt: skip
    rec = {"validation": {"candidates": table}}
    assert rule_strength(rec, params, "kernel") == 0.05
    assert rule_strength(rec, params, "transport") == 10.0
    assert rule_strength(rec, params, "shift") == np.inf
    assert rule_strength({}, {"rule": "shift"}, "kernel") == DEFAULT_STRENGTH["kernel"]


def test_architecture_search_records_candidates_and_keeps_the_winner(cells):
    tr = cells[~((cells.obs["cell_type"] == "ct0") & (cells.obs["perturbation"] == "p0"))
               .to_numpy()].copy()  # fmt: skip
    small = {**SMALL, "max_epochs": 3, "depth": 1}
    del small["width"]  # searched: SEARCH_GRID's widths, the rest fixed (two compiled shapes)
    si.tl.fit_transfer(tr, progress=False, inner_folds=1, n_candidates=2,
                       representation="autoencoder", **small)  # fmt: skip
    rec = tr.uns["transfer"]
    widths = set(rec["validation"]["candidates"]["width"])
    assert widths == {128, 512}
    df = __import__("pandas").DataFrame(rec["validation"]["candidates"])
    best = df.loc[df["score"].idxmax()]
    assert rec["params"]["width"] == best["width"]
    assert rec["params"]["input"] == "pca" and rec["pca"]["loadings"].shape == (30, 30)


def test_predicted_cells_round_trip_through_h5ad(context_dependent, tmp_path):
    _, _, tr = context_dependent
    pred = si.tl.transfer(tr, target_context="ct0", target_perturbation="p0")
    pred.write_h5ad(tmp_path / "pred.h5ad")
    back = ad.read_h5ad(tmp_path / "pred.h5ad")
    np.testing.assert_array_equal(back.X, pred.X)
    assert (back.obs["source_cell"].to_numpy() == pred.obs["source_cell"].to_numpy()).all()
    assert back.uns["transfer"]["rule"] == pred.uns["transfer"]["rule"]
    tr.write_h5ad(tmp_path / "train.h5ad")
    again = si.tl.transfer(ad.read_h5ad(tmp_path / "train.h5ad"), target_context="ct0",
                           target_perturbation="p0")  # fmt: skip
    np.testing.assert_allclose(again.X, pred.X, rtol=1e-5, atol=1e-5)


def test_bad_rule_and_output_are_refused(train):
    with pytest.raises(ValueError, match="rule"):
        si.tl.transfer(train, target_context="ct0", target_perturbation="p0", rule="flow")
    with pytest.raises(ValueError, match="rule"):
        si.tl.fit_transfer(train.copy(), progress=False, rule="flow")


def test_cross_validate_transfer_on_cells_scores_next_to_baselines(cells, fast):
    a = cells.copy()
    tab = si.tl.cross_validate_transfer(
        a, "cell_type", "perturbation", contexts=["ct0"], perturbations=["p0"], n_comps=5,
        progress=False, **fast,
    )  # fmt: skip
    assert list(tab["method"]) == ["scimpute", "no change", "mean shift", "split-half ceiling"]
    assert set(si.metrics.TRANSFER_METRICS) <= set(tab.columns)
    s = tab.set_index("method")
    assert s.loc["scimpute", "r2_top20"] > s.loc["no change", "r2_top20"]
    assert s.loc["split-half ceiling", "edistance"] < s.loc["no change", "edistance"]
    assert s.loc["scimpute", "rule"] == "shift"  # inner_folds=0: no validation, the shift
    assert "cross_validation_transfer" in a.uns
    assert "transfer" not in a.uns  # fitted on copies
    with pytest.raises(ValueError, match="both context_key and perturbation_key"):
        si.tl.cross_validate_transfer(a, "cell_type")


# --------------------------------------------------------------------------------------------
# The PCA representation (no network), chosen against the autoencoder by the same validation
# --------------------------------------------------------------------------------------------


def _argmax_candidate(rec):
    """The (representation, architecture, rule, alpha) of best score, its output by E-distance."""
    df = __import__("pandas").DataFrame(rec["validation"]["candidates"])
    keys = ["representation", "width", "depth", "latent_dim", "rule", "alpha"]
    best = df.loc[df["score"].idxmax(), keys]
    pick = df[np.logical_and.reduce([df[k] == best[k] for k in keys])]
    return best, pick.loc[pick["edistance"].idxmin(), "output"]


def test_chosen_representation_and_rule_are_the_validation_argmax(context_dependent):
    _, _, tr = context_dependent
    rec = tr.uns["transfer"]
    table = rec["validation"]["candidates"]
    assert set(table["representation"]) == {"autoencoder", "pca"}
    assert set(table["latent_dim"][table["representation"] == "pca"]) == {"20", "30"}  # 30 genes
    best, output = _argmax_candidate(rec)
    p = rec["params"]
    assert p["representation"] == best["representation"]
    assert (p["width"], p["depth"], str(p["latent_dim"])) == (
        best["width"], best["depth"], best["latent_dim"]
    )  # fmt: skip
    assert (p["rule"], p["transport_alpha"], p["output"]) == (best["rule"], best["alpha"], output)
    assert tr.obsm["X_transfer"].shape[1] == int(best["latent_dim"])


@pytest.fixture(scope="module")
def pca_fit(context_dependent):
    """The context-dependent cells fitted with the PCA representation only (no training)."""
    cells, hide, _ = context_dependent
    tr = cells[~hide].copy()
    si.tl.fit_transfer(tr, progress=False, inner_folds=3, representation="pca", random_state=3)
    return tr


def test_pca_representation_needs_no_network_and_predicts_the_effect(context_dependent, pca_fit):
    cells, hide, _ = context_dependent
    rec = pca_fit.uns["transfer"]
    assert rec["params"]["representation"] == "pca" and len(rec["weights"]) == 0
    assert set(rec["validation"]["candidates"]["representation"]) == {"pca"}
    assert rec["training"]["n_epochs"] == 0
    net, _ = si.tl.load_network(pca_fit)
    Z = si.nn.encode(net, pca_fit.X)
    np.testing.assert_allclose(Z, pca_fit.obsm["X_transfer"], atol=1e-4)
    L = rec["pca"]["loadings"].astype(np.float64)
    np.testing.assert_allclose(L.T @ L, np.eye(L.shape[1]), atol=1e-4)  # orthonormal basis
    truth = cells[hide].layers["mean"].mean(0)
    pred = si.tl.transfer(pca_fit, target_context="ct0", target_perturbation="p0")
    shift = si.tl.transfer(pca_fit, target_context="ct0", target_perturbation="p0", rule="shift")
    assert _r2(pred.X.mean(0), truth) > _r2(shift.X.mean(0), truth) + 0.2
    best, output = _argmax_candidate(rec)
    assert (rec["params"]["rule"], rec["params"]["output"]) == (best["rule"], output)


def test_pca_with_every_component_and_the_shift_is_gene_space_arithmetic(cells):
    """A full-rank basis spans the genes: the PCA shift with the residual output moves each
    control cell by the balanced mean change in genes (numpy reference)."""
    hide = ((cells.obs["cell_type"] == "ct0") & (cells.obs["perturbation"] == "p0")).to_numpy()
    tr = cells[~hide].copy()
    si.tl.fit_transfer(tr, progress=False, representation="pca", n_comps=30, inner_folds=0)
    assert tr.uns["transfer"]["params"]["rule"] == "shift"
    pred = si.tl.transfer(tr, target_context="ct0", target_perturbation="p0", output="residual")
    X = np.asarray(tr.X, dtype=np.float64)
    ct, pt = tr.obs["cell_type"].to_numpy(), tr.obs["perturbation"].to_numpy()
    s = np.mean([X[(ct == c) & (pt == "p0")].mean(0) - X[(ct == c) & (pt == "control")].mean(0)
                 for c in ("ct1", "ct2", "ct3")], axis=0)  # fmt: skip
    np.testing.assert_allclose(pred.X, X[(ct == "ct0") & (pt == "control")] + s, atol=1e-4)


def test_each_fold_fits_its_pca_without_the_hidden_cells(cells, monkeypatch):
    from scimpute.tl._transfer import _search

    seen, real = [], _search.representation
    monkeypatch.setattr(_search, "representation", lambda X, k, rng: seen.append(len(X))
                        or real(X, k, rng))  # fmt: skip
    tr = cells.copy()
    si.tl.fit_transfer(tr, progress=False, representation="pca", inner_folds=2)
    folds = [f.split("|") for f in tr.uns["transfer"]["validation"]["folds"]]
    ct, pt = tr.obs["cell_type"].to_numpy(), tr.obs["perturbation"].to_numpy()
    hidden = [int(((ct == c) & (pt == p)).sum()) for c, p in folds]
    assert seen == [tr.n_obs - h for h in hidden] and min(hidden) > 0  # one PCA per fold


def test_pca_fit_round_trips_through_h5ad_and_is_deterministic(context_dependent, pca_fit,
                                                               tmp_path):  # fmt: skip
    cells, hide, _ = context_dependent
    pred = si.tl.transfer(pca_fit, target_context="ct0", target_perturbation="p0")
    pca_fit.write_h5ad(tmp_path / "pca.h5ad")
    back = ad.read_h5ad(tmp_path / "pca.h5ad")
    assert back.uns["transfer"]["params"]["representation"] == "pca"
    again = si.tl.transfer(back, target_context="ct0", target_perturbation="p0")
    np.testing.assert_array_equal(again.X, pred.X)
    assert (again.obs["source_cell"] == pred.obs["source_cell"]).all()
    twin = cells[~hide].copy()
    si.tl.fit_transfer(twin, progress=False, inner_folds=3, representation="pca", random_state=3)
    for k, v in pca_fit.uns["transfer"]["validation"]["candidates"].items():
        np.testing.assert_array_equal(twin.uns["transfer"]["validation"]["candidates"][k], v)
    np.testing.assert_array_equal(twin.obsm["X_transfer"], pca_fit.obsm["X_transfer"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"representation": "umap"}, "representation must be one of"),
        ({"n_comps": 0}, "n_comps must be"),
    ],
)
def test_bad_representation_parameters_are_refused(cells, kwargs, match):
    a = cells.copy()
    with pytest.raises(ValueError, match=match):
        si.tl.fit_transfer(a, progress=False, **kwargs)
    assert "transfer" not in a.uns
