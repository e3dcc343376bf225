"""Training methods as pure `LossFn` factories (see `adacorr.core.types`).

Each `make_*(model, **hyperparameters) -> LossFn` (ANT: a `StatefulLoss`); the keywords
default to the papers' settings. A factory parses no config and does no I/O: objects
such as AdA's backbones or PAT's external LPIPS network are passed in built. `FACTORIES`
maps `config.method` names to factories; the run layer (`adacorr.run.methods`)
translates `config.method_kwargs` into their keywords. Shared helpers: `methods.common`.
"""

from adacorr.methods.ada import (
    Backbone, ada_stage, backbone_from_net, make_ada, split_sizes)
from adacorr.methods.augmix import (
    augmix_objective, check_augmix_kwargs, consistency_loss, make_augmix, make_robust_augmix)
from adacorr.methods.ant import make_ant
from adacorr.methods.adversarial_training import (
    input_attack, make_adversarial_training, make_l2_at, make_linf_at)
from adacorr.methods.noise_augmentation import (
    GNT_MULT_SIGMAS, SPECKLE_SIGMAS, add_noise, make_gaussian_augmentation, make_gnt_mult,
    make_noise_augmentation, make_speckle)
from adacorr.methods.nominal import make_nominal
from adacorr.methods.pat import make_pat
from adacorr.methods.rlat import make_rlat, rlat_deltas, rlat_eps_multipliers

FACTORIES = {
    "nominal": make_nominal,
    "linf_at": make_linf_at,
    "l2_at": make_l2_at,
    "gaussian_augmentation": make_gaussian_augmentation,
    "gnt_mult": make_gnt_mult,
    "speckle": make_speckle,
    "rlat": make_rlat,
    "ada": make_ada,
    "pat": make_pat,
    "ant": make_ant,
    "augmix": make_augmix,
    "robust_augmix": make_robust_augmix,
}

__all__ = [
    "Backbone", "ada_stage", "backbone_from_net", "make_ada", "split_sizes",
    "FACTORIES", "make_ant", "augmix_objective", "check_augmix_kwargs", "consistency_loss", "make_augmix",
    "make_robust_augmix", "GNT_MULT_SIGMAS", "SPECKLE_SIGMAS", "add_noise", "input_attack",
    "make_adversarial_training", "make_gaussian_augmentation", "make_gnt_mult", "make_l2_at",
    "make_nominal", "make_linf_at", "make_noise_augmentation", "make_pat", "make_rlat", "make_speckle", "rlat_deltas",
    "rlat_eps_multipliers",
]
