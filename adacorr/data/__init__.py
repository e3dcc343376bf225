"""Datasets, deterministic data-parallel batching, standard augmentation.

Typical use::

  info = data.DATASETS['cifar10']
  train = data.load_split('cifar10', info.train_split)
  aug = data.get_augment('pad_crop_flip', pad=4)
  batches = data.train_batches(train, global_batch_size=512, seed=0, mesh=mesh,
                               start_step=start)
  for step, batch in zip(range(start, num_steps), batches):
    # batch['image']: float32 (B, H, W, C) in [0, 1], sharded over mesh's 'data' axis.
    images = aug(batch['image'], jax.random.fold_in(key, step))  # inside the jitted step

TensorFlow / tfds are imported only when a tfds dataset is loaded.
"""

from adacorr.data import augment
from adacorr.data.augment import get_augment
from adacorr.data.datasets import DATASETS, DatasetInfo, load_split
from adacorr.data.idx import read_idx
from adacorr.data.pipeline import (batch_indices, epoch_permutation, eval_batches,
                                   steps_per_epoch, train_batches)
from adacorr.data.sources import ArraySource, Source

__all__ = [
    "ArraySource",
    "DATASETS",
    "DatasetInfo",
    "Source",
    "augment",
    "batch_indices",
    "epoch_permutation",
    "eval_batches",
    "get_augment",
    "load_split",
    "read_idx",
    "steps_per_epoch",
    "train_batches",
]
