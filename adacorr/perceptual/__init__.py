"""The neural perceptual threat model (Laidlaw et al. 2021): LPIPS distances and the
feature extractors they are computed on.

  lpips_distance(features_fn, x1, x2)   per-example LPIPS distance (B,)
  normalize_features(features)          the LPIPS embedding phi (B, D)
  model_features_fn / features_and_logits_fn / model_logits_fn
                                        a classifier's own layers (self-bounded) or any
                                        sowing network's (CifarAlexNet, AlexNet)
The perceptual attacks (fast_lpa, lpa, ppgd, project_lpips) live in `adacorr.attacks`.
"""

from adacorr.perceptual.alexnet_lpips import (
    alexnet_lpips_features_fn, alexnet_params_from_torch, load_alexnet_lpips,
    lpips_linear_weights_from_torch, weighted_lpips_distance)
from adacorr.perceptual.features import (
    features_and_logits_fn, lpips_layers, model_features_fn, model_logits_fn)
from adacorr.perceptual.lpips import (
    EPS, check_features, embedding_distance, lpips_distance, lpips_embedding,
    normalize_features)

__all__ = [
    "alexnet_lpips_features_fn", "alexnet_params_from_torch", "load_alexnet_lpips",
    "lpips_linear_weights_from_torch", "weighted_lpips_distance",
    "EPS", "check_features", "embedding_distance", "features_and_logits_fn", "lpips_distance",
    "lpips_embedding", "lpips_layers", "model_features_fn", "model_logits_fn",
    "normalize_features",
]
