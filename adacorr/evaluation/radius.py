"""Radii and bounds written as text: '8/255', '0.5' -> float (`parse_radius`, from
`adacorr.core.radius`), and the radii a report evaluates by default."""

from __future__ import annotations

# Parsed in one place for every entry point (attacks, threat-model checks, evaluators):
# `adacorr.core.radius`; re-exported here for the evaluation API and existing callers.
from adacorr.core.radius import parse_radius

__all__ = ["STANDARD_RADII", "parse_radius", "standard_radii"]


# The l_p radii a report evaluates by default, per dataset: the papers' small radii beside
# the ones readers compare with (RobustBench: CIFAR-10 l_inf 8/255 and l2 0.5; ImageNet
# l_inf 4/255). Fashion-MNIST / MNIST: 8/255 and 0.5 line up with CIFAR-10, and l_inf 0.1
# with l2 1.5 are the MNIST-family radii at which adversarially trained models keep most
# of their accuracy (MNIST papers use 0.3 and 2.0, at which Fashion-MNIST models, less
# robust, fall to near zero; 0.1 is the usual Fashion-MNIST l_inf radius, e.g. in Croce &
# Hein 2020's FAB and Wong et al. 2020's comparisons).
STANDARD_RADII = {
    "cifar": {"linf": ("1/255", "2/255", "8/255"), "l2": ("0.1", "0.5")},
    "imagenet": {"linf": ("1/255", "2/255", "4/255"), "l2": ("0.1", "0.5")},
    "mnist": {"linf": ("8/255", "0.1"), "l2": ("0.5", "1.5")},
}


def standard_radii(dataset: str) -> dict[str, tuple[str, ...]]:
  """`{norm: radii}` evaluated by default for `dataset` (see `STANDARD_RADII`):
  'fashion_mnist'/'mnist' -> the MNIST family, 'imagenet*' -> ImageNet, else CIFAR."""
  if dataset in ("fashion_mnist", "mnist"):
    return dict(STANDARD_RADII["mnist"])
  if dataset.startswith("imagenet"):
    return dict(STANDARD_RADII["imagenet"])
  return dict(STANDARD_RADII["cifar"])
