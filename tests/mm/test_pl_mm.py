import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import scimpute as si


@pytest.fixture(scope="module")
def scored():
    # the plots read the embeddings and scores: the closed-form linear backbone suffices
    m = si.datasets.simulate_multimodal(400, (60, 60), random_state=0)
    si.mm.integrate(m, pairing=0.5, backbone="linear", progress=False)
    si.mm.invariant_features(m, n_bootstrap=20)
    return m


def test_latent_plot(scored, tmp_path):
    ax = si.pl.latent(scored, connect=5, show=False)
    assert isinstance(ax, Axes)
    assert len(ax.collections) >= 2  # one scatter per modality
    fig = si.pl.latent(
        scored,
        color=["modality", "label"],
        basis="latent",
        save=tmp_path / "latent.png",
        show=False,
    )
    assert isinstance(fig, Figure)
    assert len(fig.axes) >= 2
    assert (tmp_path / "latent.png").is_file()
    import matplotlib.pyplot as plt

    _, own = plt.subplots()
    assert si.pl.latent(scored, color="label", ax=own, show=False) is own
    with pytest.raises(ValueError, match="one panel"):
        si.pl.latent(scored, color=["modality", "label"], ax=own)
    with pytest.raises(KeyError, match="cell_type"):
        si.pl.latent(scored, color="cell_type")
    with pytest.raises(KeyError, match="integrate"):
        si.pl.latent(scored, key="missing")


def test_invariance_plot(scored):
    fig = si.pl.invariance(scored, n_top=5, highlight=["m0_f0"], show=False)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    ax = si.pl.invariance(scored, modalities="m1", n_top=5, show=False)
    assert isinstance(ax, Axes)
    assert len(ax.patches) == 5
    widths = [p.get_width() for p in ax.patches]
    assert widths == sorted(widths, reverse=True)  # drawn best first, at the top
    assert np.isclose(max(widths), scored["m1"].var["invariance"].max())
    ax = si.pl.invariance(scored, kind="latent", show=False)
    assert isinstance(ax, Axes)
    assert si.pl.invariance(scored, kind="latent", show=True) is None
    with pytest.raises(ValueError, match="kind must"):
        si.pl.invariance(scored, kind="genes")
