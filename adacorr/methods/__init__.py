"""Training methods as `LossFn` factories (see `adacorr.train.step`).

Each `make_*(model, config=None, **keywords) -> LossFn`; the keywords default to the
papers' settings and `config.method_kwargs` (if a config is passed) overrides them.
`FACTORIES` maps method names to `(model, config) -> LossFn`, the form of
`adacorr.train.loop.LOSS_FACTORIES`.
"""

from adacorr.methods.ada import (
    Backbone, ada_stage, backbone_from_net, load_backbone, make_ada, split_sizes)
from adacorr.methods.augmix import (
    augmix_objective, check_augmix_kwargs, consistency_loss, make_augmix, make_robust_augmix)
from adacorr.methods.ant import make_ant
from adacorr.methods.adversarial_training import (
    input_attack, make_adversarial_training, make_l2_at, make_linf_at)
from adacorr.methods.noise_augmentation import (
    GNT_MULT_SIGMAS, SPECKLE_SIGMAS, add_noise, make_gaussian_augmentation, make_gnt_mult,
    make_noise_augmentation, make_speckle)
from adacorr.methods.pat import load_lpips_network, make_pat
from adacorr.methods.rlat import make_rlat, rlat_deltas, rlat_eps_multipliers

FACTORIES = {
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
    "Backbone", "ada_stage", "backbone_from_net", "load_backbone", "make_ada", "split_sizes",
    "FACTORIES", "make_ant", "augmix_objective", "check_augmix_kwargs", "consistency_loss", "make_augmix",
    "make_robust_augmix", "GNT_MULT_SIGMAS", "SPECKLE_SIGMAS", "add_noise", "input_attack",
    "make_adversarial_training", "make_gaussian_augmentation", "make_gnt_mult", "make_l2_at",
    "load_lpips_network", "make_linf_at", "make_noise_augmentation", "make_pat", "make_rlat", "make_speckle", "rlat_deltas",
    "rlat_eps_multipliers",
]
