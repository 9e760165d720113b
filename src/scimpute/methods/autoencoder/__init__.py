"""Latent arithmetic on grids: autoencoders that transfer effects across contexts.

A network (a wide autoencoder, or a scGen-style VAE) is trained to reconstruct the measured
profiles of the grid (controls included). A target pair (c, a) is then predicted by latent
arithmetic, the "word2vec analogy" of Belyaeva et al. (2021) and scGen::

    z(c, a) = z_b(c) + mean_{c'} [z(c', a) - z_b(c')]

over the contexts c' where a and the baseline are measured, with ``z_b(c)`` the latent code of
c's control profile (or, on grids without control, the mean code of c's measured profiles),
and decoded. With ``output="residual"`` the decoded change is added to the measured baseline
instead, ``b(c) + dec(z(c, a)) - dec(z_b(c))``, which removes the network's reconstruction
error of ``b(c)`` from the prediction.

Fallbacks (recorded per pair in ``source``): the shared
:func:`~scimpute.methods._stats.validated_fallback` (the grid's best baseline by
leave-one-out).

Modules: ``_params`` (the typed parameters), ``_fit`` (training on the grid),
``_arithmetic`` (latent arithmetic), ``_methods`` (the registered methods), ``_refit`` (the
grouped cross-validation registered as the methods' ``grouped_refit`` hook).
"""

from ._arithmetic import latent_arithmetic
from ._fit import fit_grid_networks
from ._methods import autoencoder, vae
from ._params import AutoencoderParams, VAEParams
from ._refit import grouped_refit, leave_one_out_predictions

__all__ = [
    "AutoencoderParams",
    "VAEParams",
    "autoencoder",
    "fit_grid_networks",
    "grouped_refit",
    "latent_arithmetic",
    "leave_one_out_predictions",
    "vae",
]
