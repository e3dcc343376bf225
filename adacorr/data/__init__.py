"""Datasets, deterministic data-parallel batching, standard augmentation.

Typical use::

  info, (train, test) = data.load_dataset(config)  # or data.load_dataset('cifar10')
  test = data.first_n(test, 1000)  # a Source of its first 1000 examples
  aug = data.get_augment('pad_crop_flip', pad=4)
  batches = data.train_batches(train, global_batch_size=512, seed=0, mesh=mesh,
                               start_step=start)
  for step, batch in zip(range(start, num_steps), batches):
    # batch['image']: float32 (B, H, W, C) in [0, 1], sharded over mesh's 'data' axis.
    images = aug(batch['image'], jax.random.fold_in(key, step))  # inside the jitted step

TensorFlow / tfds are imported only when a tfds dataset is loaded. Nothing is downloaded
unless asked (`download=True`, or a config's `download = True`): data that is not on disk
fails at once with a FileNotFoundError saying where it looked and how to get the data.
"""

from adacorr.data import augment
from adacorr.data.augment import get_augment
from adacorr.data.datasets import DATASETS, DatasetInfo, load_dataset, load_split
from adacorr.data.idx import read_idx
from adacorr.data.pipeline import (batch_indices, epoch_permutation, eval_batches,
                                   steps_per_epoch, train_batches)
from adacorr.data.sources import ArraySource, FirstN, Source, first_n

__all__ = [
    "ArraySource",
    "DATASETS",
    "DatasetInfo",
    "FirstN",
    "Source",
    "augment",
    "batch_indices",
    "epoch_permutation",
    "eval_batches",
    "first_n",
    "get_augment",
    "load_dataset",
    "load_split",
    "read_idx",
    "steps_per_epoch",
    "train_batches",
]
