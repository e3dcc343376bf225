"""adacorr: robustness to common corruptions and adversarial perturbations in JAX/Flax.

Subpackages (import what you use; none is imported here, so `import adacorr.models`
does not pull in TensorFlow):
  adacorr.data      datasets, batching, standard augmentation
  adacorr.models    classifiers (PreActResNet, WideResNet, ResNet-50, CifarAlexNet, SmallCNN)
  adacorr.train     train state, optimizers, data-parallel train step, checkpoints, loop
  adacorr.parallel  mesh and sharding helpers
"""

__version__ = "0.1.0"
