"""Common corruptions (Hendrycks & Dietterich 2019) as jittable JAX functions.

  from adacorr.corruptions import corrupt, BENCHMARK_CORRUPTIONS
  y = corrupt(images, "fog", 3, key)                  # CIFAR-10-C parameters
  y = corrupt(images, "fog", 3, key, params="imagenet")  # ImageNet-C parameters

Modules: `noise` (gaussian, shot, impulse, speckle), `blur` (defocus, glass, motion,
zoom, gaussian), `weather` (snow, frost, fog, spatter), `digital` (brightness, contrast,
saturate, elastic_transform, pixelate, jpeg_compression); `filters` holds shared filters.
`FAMILIES` groups the 15 benchmark corruptions as the benchmark does (noise, blur,
weather with brightness, digital).
"""

from adacorr.corruptions.core import (ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS,
                                      EXTRA_CORRUPTIONS, FAMILIES, PARAM_TABLES, SEVERITIES,
                                      Corruption, corrupt, per_example_keys, registry)

__all__ = ["ALL_CORRUPTIONS", "BENCHMARK_CORRUPTIONS", "EXTRA_CORRUPTIONS", "FAMILIES",
           "PARAM_TABLES",
           "SEVERITIES", "Corruption", "corrupt", "per_example_keys", "registry"]
