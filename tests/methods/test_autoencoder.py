import numpy as np
import pandas as pd
import pytest

import scimpute as si
from scimpute.methods.autoencoder import (
    AutoencoderParams,
    VAEParams,
    latent_arithmetic,
    leave_one_out_predictions,
)
from scimpute.nn import TrainingDivergedError
from scimpute.tl._data import to_grid_data

# same architecture and batch as tests/test_nn.py: the training loops compile once
FAST = {
    "width": 32,
    "depth": 2,
    "latent_dim": 8,
    "max_epochs": 40,
    "batch_size": 32,
    "validation_fraction": 0.0,
}


@pytest.fixture(scope="module")
def grid():
    return si.datasets.simulate_grid(
        n_contexts=6, n_perturbations=5, n_features=30, fraction_measured=0.7, random_state=1
    )


def test_impute_autoencoder_and_vae(grid):
    g = grid.copy()
    si.tl.impute(g, method="autoencoder", **FAST)
    src = g.obs["imputed_autoencoder_source"]
    assert np.isfinite(g.layers["imputed_autoencoder"]).all()
    assert (src[~g.obs["measured"]] == "autoencoder").any()
    assert g.uns["imputed_autoencoder"]["params"]["width"] == 32
    g2 = grid.copy()
    si.tl.impute(g2, method="autoencoder", **FAST)
    np.testing.assert_array_equal(g.layers["imputed_autoencoder"], g2.layers["imputed_autoencoder"])
    si.tl.impute(g, method="vae", **{**FAST, "max_epochs": 5})
    assert np.isfinite(g.layers["imputed_vae"]).all()


def test_identity_network_reduces_to_additive_model(grid):
    """With an identity encoder/decoder, latent arithmetic is the gene-space additive model."""
    data, _ = to_grid_data(grid)

    import equinox as eqx

    class Identity(eqx.Module):
        def encode(self, x):
            return x

        def decode(self, z):
            return z

    net = Identity()
    targets = np.argwhere(~data.measured & (np.arange(data.n_perturbations) != 0))
    pred, ok, _ = latent_arithmetic(net, data, data.measured, targets)
    ref = si.methods.get_method("additive").fn(data, targets).prediction
    np.testing.assert_allclose(pred[ok], ref[ok], rtol=1e-4, atol=1e-3)
    pred2, ok2, _ = latent_arithmetic(net, data, data.measured, targets, baseline="context_mean")
    # two-way additive model in gene space
    Y = np.where(data.measured[..., None], data.Y, np.nan).astype(float)
    treated = data.measured.copy()
    treated[:, 0] = False
    n_c = data.n_contexts
    cm = np.array([np.nanmean(np.where(treated[c][:, None], Y[c], np.nan), 0) for c in range(n_c)])
    assert ok2.all()
    for (c, a), p in zip(targets[ok2], pred2[ok2], strict=True):
        others = [k for k in range(n_c) if treated[k, a]]
        eff = np.mean([Y[k, a] - cm[k] for k in others], 0)
        np.testing.assert_allclose(p, cm[c] + eff, rtol=1e-4, atol=1e-3)


def test_leave_one_out_never_sees_the_target(grid):
    data, _ = to_grid_data(grid)
    spec = AutoencoderParams.from_kwargs("autoencoder", {"n_groups": 3, **FAST})
    kw = {"params": spec, "random_state": 3}
    out = leave_one_out_predictions(data, **kw)
    t = out["targets"][0]
    Y2 = data.Y.copy()
    Y2[t[0], t[1]] += 5.0
    from dataclasses import replace

    out2 = leave_one_out_predictions(replace(data, Y=Y2), **kw)
    np.testing.assert_allclose(out["prediction"][0], out2["prediction"][0], rtol=1e-5, atol=1e-5)
    others = out["group"] != out["group"][0]
    assert not np.allclose(out["prediction"][others], out2["prediction"][others])


def test_cross_validate_transfer_table(grid):
    g = grid.copy()
    tab = si.tl.cross_validate_transfer(g, n_groups=3, progress=False, **FAST)
    base = si.tl.cross_validate(g, methods=["context_mean"], progress=False, key_added=None)
    assert list(tab.columns) == list(base.columns)
    assert len(tab) == len(base)
    summ = si.tl.summarize_cross_validation(pd.concat([base, tab]))
    assert set(summ.index) == {"context_mean", "autoencoder"}
    ref = base.set_index(["context", "perturbation"])["mse"]
    rel = tab.set_index(["context", "perturbation"])
    np.testing.assert_allclose(rel["mse"] / rel["relative_mse"], ref.loc[rel.index], rtol=1e-6)
    assert "cross_validation_transfer" in g.uns


def test_grid_bad_params(grid):
    g = grid.copy()
    with pytest.raises(ValueError, match="output"):
        si.tl.impute(g, method="autoencoder", output="x", **FAST)
    with pytest.raises(ValueError, match="log1p"):
        si.tl.impute(g, method="autoencoder", transform="log1p", **FAST)
    effects = si.datasets.simulate_grid(
        n_contexts=4, n_perturbations=4, n_features=30, control=None, random_state=0
    )
    with pytest.raises(ValueError, match="baseline='control'"):
        si.tl.impute(effects, method="autoencoder", baseline="control", **FAST)
    si.tl.impute(effects, method="autoencoder", **FAST)
    assert np.isfinite(effects.layers["imputed_autoencoder"]).all()


def test_fallbacks_are_recorded(grid):
    g = grid.copy()
    pert, ctx = g.obs["perturbation"].astype(str), g.obs["context"].astype(str)
    g.obs.loc[(pert == "p2").to_numpy(), "measured"] = False  # p2 measured nowhere
    g.obs.loc[((ctx == "c0") & (pert == "control")).to_numpy(), "measured"] = False
    si.tl.impute(g, method="autoencoder", **FAST)
    src = g.obs["imputed_autoencoder_source"].astype(str)
    assert set(src[(pert == "p2") & (ctx != "c0")]) == {"context_mean"}
    assert set(src[(ctx == "c0") & (pert != "control") & ~g.obs["measured"]]) == {
        "perturbation_mean"
    } | ({"context_mean"} if ((ctx == "c0") & (pert == "p2")).any() else set())
    n_ctx = g.obs["imputed_autoencoder_n_contexts"]
    assert (n_ctx[src == "autoencoder"] > 0).all()


def test_grouped_refit_is_the_registered_hook_and_honest_for_multi_pair_folds(grid):
    data, _ = to_grid_data(grid)
    m = si.methods.get_method("autoencoder")
    assert m.grouped_refit is not None and si.methods.get_method("vae").grouped_refit
    spec = m.parse({"n_groups": 2, **FAST})
    from scimpute.tl._cross_validate import make_folds

    folds = make_folds(data, "contexts", 3, 0)
    res = m.grouped_refit(data, folds, spec, random_state=0, progress=False)
    assert [r.prediction.shape[0] for r in res] == [f.shape[0] for f in folds]
    # a fold's predictions do not depend on the fold's own profiles
    f = folds[0]
    Y2 = data.Y.copy()
    Y2[f[:, 0], f[:, 1]] += 5.0
    from dataclasses import replace

    res2 = m.grouped_refit(replace(data, Y=Y2), folds, spec, random_state=0, progress=False)
    np.testing.assert_allclose(res[0].prediction, res2[0].prediction, rtol=1e-5, atol=1e-5)
    assert set(res[0].per_target["group"]) <= {0, 1}


def test_parameters_are_declared_once():
    import dataclasses

    from scimpute.nn import TrainConfig

    names = [f.name for f in dataclasses.fields(VAEParams)]
    assert len(names) == len(set(names))
    assert set(TrainConfig.names()) <= set(names)
    assert AutoencoderParams().max_epochs == 300 and TrainConfig().max_epochs == 100
    assert (VAEParams().depth, VAEParams().latent_dim, VAEParams().dropout) == (2, 16, 0.2)
    assert "kl_weight" not in AutoencoderParams.names()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"learning_rate": float("nan")}, "autoencoder: learning_rate must be a number > 0"),
        ({"learning_rate": -1.0}, "autoencoder: learning_rate must be a number > 0"),
        ({"max_epochs": 0}, "autoencoder: max_epochs must be an integer >= 1, got 0"),
        ({"batch_size": 0}, "autoencoder: batch_size must be an integer >= 1, got 0"),
        ({"validation_fraction": 2.0}, "autoencoder: validation_fraction must be a number"),
        ({"width": "big"}, "autoencoder: width must be an integer >= 1, got 'big'"),
        ({"depth": 1.5}, "autoencoder: depth must be an integer >= 1, got 1.5"),
        ({"latent_dim": 2.5}, "autoencoder: latent_dim must be an integer >= 1 or None, got 2.5"),
        ({"latent_dim": "big"}, "autoencoder: latent_dim must be"),
        ({"output": "x"}, "autoencoder: output must be one of"),
    ],
)
def test_bad_parameters_get_the_house_message(grid, kwargs, match):
    g = grid.copy()
    with pytest.raises(ValueError, match=match):
        si.tl.impute(g, method="autoencoder", **{**FAST, **kwargs})
    assert "imputed_autoencoder" not in g.layers


def test_vae_needs_a_latent_dim(grid):
    with pytest.raises(ValueError, match="vae: latent_dim must be an integer >= 1, got None"):
        si.tl.impute(grid.copy(), method="vae", latent_dim=None)


def test_diverging_training_raises_and_writes_nothing(grid):
    g = grid.copy()
    g.X = g.X * np.float32(1e30)  # squared errors overflow float32
    with pytest.raises(TrainingDivergedError, match="diverged"):
        si.tl.impute(g, method="autoencoder", standardize=False, **FAST)
    assert "imputed_autoencoder" not in g.layers
