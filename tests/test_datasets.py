import numpy as np
import pytest

import scimpute as si


def test_simulator_is_seeded_and_consistent():
    a = si.datasets.simulate_grid(5, 6, 12, noise=0.1, random_state=7, keep_noisy=True)
    b = si.datasets.simulate_grid(5, 6, 12, noise=0.1, random_state=7, keep_noisy=True)
    np.testing.assert_array_equal(a.X, b.X)
    c = si.datasets.simulate_grid(5, 6, 12, noise=0.1, random_state=8)
    assert not np.allclose(np.nan_to_num(a.X), np.nan_to_num(c.X))
    meas = a.obs["measured"].to_numpy()
    np.testing.assert_array_equal(a.X[meas], a.layers["noisy"][meas])
    assert np.isnan(a.X[~meas]).all()
    # noise level is what was asked for
    resid = a.layers["noisy"] - a.layers["truth"]
    assert abs(resid.std() - 0.1) < 0.02
    # the control has no effect: truth of control rows = common component
    sim = a.uns["simulation"]
    ctrl = (a.obs["perturbation"] == "control").to_numpy()
    common = sim["mu"] + sim["G"] @ sim["H"]
    np.testing.assert_allclose(a.layers["truth"][ctrl], common, rtol=1e-4, atol=1e-4)
    # every context and perturbation is measured at least once beyond the control
    t = a.obs[meas & ~ctrl]
    assert t["context"].nunique() == 5 and t["perturbation"].nunique() == 6


def test_simulator_truth_is_low_rank():
    g = si.datasets.simulate_grid(12, 15, 40, rank=3, context_strength=0.0, random_state=0)
    T = g.layers["truth"].reshape(12, 16, 40) - g.uns["simulation"]["mu"]
    # contexts x (perturbations * features) unfolding has rank <= 3
    s = np.linalg.svd(T.reshape(12, -1), compute_uv=False)
    assert s[3] / s[0] < 1e-5


def test_simulator_combinations_and_doses():
    g = si.datasets.simulate_grid(4, 3, 10, n_combinations=2, doses=[0.1, 1, 10], random_state=0)
    labels = list(g.obs["perturbation"].cat.categories)
    assert "p0@0.1" in labels and sum("+" in x for x in labels) == 2
    V = g.uns["simulation"]["V"]
    assert V.shape[0] == len(labels)


def test_loaders_find_real_files(data_dir):
    cmap = si.datasets.cmap(data_dir)
    assert cmap.shape == (326, 978) and "DMSO" in set(cmap.obs.pert_id)
    assert si.datasets.korkut(data_dir).shape == (52, 87)


def test_inpainting_images_and_masks(data_dir):
    if not (data_dir / "images" / "vase.png").is_file():
        pytest.skip("the shared images/ folder is absent")
    img, mask = si.datasets.inpainting_image("vase", data_dir)
    assert img.shape == (320, 320, 3) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert mask.shape == (320, 320) and mask.dtype == bool
    assert 0.0 < mask.mean() < 1.0  # some pixels missing, most observed
    with pytest.raises(ValueError, match="Unknown image 'cmap'"):
        si.datasets.inpainting_image("cmap", data_dir)


def test_missing_file_names_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("SCIMPUTE_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"cmap_l1000_24cells_20drugs.h5ad.*GSE92742"):
        si.datasets.cmap(tmp_path)
    with pytest.raises(ValueError, match="Unknown dataset"):
        si.datasets.dataset_path("nope")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_contexts": 0}, "simulate_grid: n_contexts must be an integer >= 1, got 0"),
        ({"rank": 0}, "simulate_grid: rank must be an integer >= 1, got 0"),
        ({"n_features": 2.5}, "n_features must be an integer >= 1, got 2.5"),
        ({"noise": -0.1}, "noise must be a number >= 0"),
        ({"fraction_measured": 0}, "fraction_measured must be a number > 0 and <= 1"),
        ({"doses": []}, "doses must hold at least one dose level"),
        ({"doses": [0, 1]}, "doses must be"),
        ({"n_perturbations": 3, "n_combinations": 4}, "n_combinations must be <= 3"),
        ({"control": " "}, "control must be a non-empty label or None"),
        ({"random_state": -1}, "random_state must be a non-negative integer"),
        ({"keep_noisy": "yes"}, "keep_noisy must be True or False"),
    ],
)
def test_simulate_grid_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        si.datasets.simulate_grid(**{"n_contexts": 3, "n_perturbations": 4, **kwargs})


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        ("simulate_cells", {"n_contexts": 0}, "simulate_cells: n_contexts must be an integer >= 1"),
        ("simulate_cells", {"n_cells": 0}, "n_cells must be an integer >= 1"),
        ("simulate_cells", {"latent_dim": 0}, "latent_dim must be an integer >= 1"),
        ("simulate_cells", {"noise": -1.0}, "noise must be a number >= 0"),
        ("simulate_multimodal", {"n_cells": 1}, "n_cells must be an integer >= 2"),
        ("simulate_multimodal", {"n_features": (0, 5)}, "n_features must be"),
        ("simulate_multimodal", {"modalities": ("a", "a")}, "modalities must be unique"),
        ("simulate_multimodal", {"modalities": ("a",)}, "same length >= 2"),
        ("simulate_multimodal", {"fraction_paired": 1.5}, "fraction_paired must be"),
    ],
)
def test_simulators_reject_bad_parameters(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(si.datasets, fn)(**kwargs)


def test_simulators_take_numpy_integers():
    g = si.datasets.simulate_grid(np.int64(3), np.int32(4), 5, rank=np.int64(2), random_state=0)
    assert g.n_obs == 3 * 5 and g.uns["simulation"]["params"]["rank"] == 2
