"""Data augmentation methods that run on device (images NHWC float32 in [0, 1]).

* AugMix (Hendrycks et al. 2020): `augmix`, `augmix_views`, `jsd_consistency`; the single
  ops, matching PIL on the uint8 grid, in `adacorr.augment.image_ops`.
* ANT (Rusak et al. 2020): `NoiseGenerator`, `sample_noise`, `clip_aware_rescale`.
* DeepAugment (Hendrycks et al. 2021): `distort_params`, `distorted_apply`,
  `deepaugment_batch` (the EDSR / CAE weight and activation distortions); the offline
  copies are written by `experiments/make_deepaugment.py` and read by
  `adacorr.data.deepaugment`.

The training methods built on them are in `adacorr.methods` (`make_augmix`,
`make_robust_augmix`, `make_ant`; AugMix inside `make_ada` / `make_rlat`).
"""

from adacorr.augment import image_ops
from adacorr.augment.augmix import (
    ALL_OPS, CIFAR_OPS, augment_and_mix, augmix, augmix_views, jsd_consistency,
    jsd_consistency_per_example)
from adacorr.augment.deepaugment import (
    deepaugment_batch, distort_params, distorted_apply, jit_deepaugment_batch)
from adacorr.augment.noise_generator import (
    NoiseGenerator, clip_aware_eta, clip_aware_rescale, init_generator, sample_noise)

__all__ = [
    "ALL_OPS", "CIFAR_OPS", "NoiseGenerator", "augment_and_mix", "augmix", "augmix_views",
    "clip_aware_eta", "clip_aware_rescale", "deepaugment_batch", "distort_params",
    "distorted_apply", "image_ops", "init_generator", "jit_deepaugment_batch",
    "jsd_consistency", "jsd_consistency_per_example", "sample_noise",
]
