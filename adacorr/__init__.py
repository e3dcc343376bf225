"""adacorr: robustness to common corruptions and adversarial perturbations in JAX/Flax.

Subpackages (import what you use; none is imported here, so `import adacorr.models`
does not pull in TensorFlow):
  adacorr.data      datasets, batching, standard augmentation
  adacorr.models    classifiers (PreActResNet, WideResNet, ResNet-50, CifarAlexNet, SmallCNN)
  adacorr.train     train state, optimizers, data-parallel train step, checkpoints, loop
  adacorr.parallel  mesh and sharding helpers

`adacorr.evaluate(logits_fn, images, labels, key=...)`: how robust is any JAX model (clean,
common corruptions, AutoAttack, LPA) in one call; it is `adacorr.evaluation.evaluate`,
imported on first use.
"""

__version__ = "0.1.0"


def __getattr__(name):
  """`adacorr.evaluate` and `adacorr.Robustness`, imported on first use (PEP 562), so
  that `import adacorr` stays light."""
  if name in ("evaluate", "Robustness"):
    from adacorr.evaluation import robustness  # pylint: disable=import-outside-toplevel
    return getattr(robustness, name)
  raise AttributeError(f"module 'adacorr' has no attribute {name!r}")
