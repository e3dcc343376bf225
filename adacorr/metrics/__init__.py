"""Robustness metrics: accuracy, corruption errors (mCE, relative mCE) and calibration.

  from adacorr import metrics
  errors = metrics.error_table({("fog", 1): 0.91, ...})   # name -> (5,) errors
  metrics.mce(errors)                                       # CIFAR-10-C, in %
  metrics.mce(errors, style="imagenet")                     # AlexNet-normalised, in %
  metrics.ece(probs, labels)                                # in [0, 1]
  t = metrics.fit_temperature(val_logits, val_labels)
  metrics.ece_after_temperature(test_logits, test_labels, t)

Everything is numpy on the host (inputs may be jax arrays) and pure.
"""

from adacorr.metrics.calibration import (ReliabilityBins, ece, ece_after_temperature,
                                         fit_temperature, nll, reliability_bins,
                                         softmax)
from adacorr.metrics.classification import accuracy, check_labels
from adacorr.metrics.noise_robustness import (eps_star, minimal_noise_norm,
                                              noise_robustness_eps_star)
from adacorr.metrics.corruption import (ALEXNET_CLEAN_ERR, ALEXNET_ERR, CorruptionResults,
                                        corruption_errors, error_table, mce,
                                        relative_corruption_errors, relative_mce)

__all__ = [
    "ALEXNET_CLEAN_ERR", "ALEXNET_ERR", "CorruptionResults", "ReliabilityBins", "accuracy",
    "check_labels", "corruption_errors", "ece", "ece_after_temperature", "eps_star", "error_table",
    "fit_temperature", "mce", "minimal_noise_norm", "nll", "noise_robustness_eps_star",
    "relative_corruption_errors", "relative_mce",
    "reliability_bins", "softmax",
]
