"""DeepAugment training data: stored distorted copies of a training set, and the union.

`experiments/make_deepaugment.py` writes a copy into a directory:

  images.npy   uint8 (N, H, W, C)
  labels.npy   int32 (N,)
  info.json    {"net", "dataset", "split", "count", "seed", "num_classes", "image_shape", ...}

Example `i` of the copy is the distorted training example `i` (the first `count`
examples of the split). DeepAugment trains on the clean set plus such copies, mixed:

  train = load_train_source(config, info, clean_train)   # clean unless deepaugment_dirs
  # every training batch then samples uniformly from clean + copies
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from adacorr.data.sources import Source, check_indices

IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npy"
INFO_FILE = "info.json"
MAKE_CLI = "python -m experiments.make_deepaugment"


def make_command(directory: str, dataset: str | None = None) -> str:
  """The `python -m experiments.make_deepaugment` command that writes `directory`.

  The net and the corruption-net config are guessed from the directory's name
  (`<dataset>_<net>[...]`, e.g. runs/deepaugment/fashion_mnist_edsr_tiny).
  """
  base = os.path.basename(os.path.normpath(directory))
  net = "cae" if "cae" in base else "edsr"
  parts = [MAKE_CLI]
  if dataset:
    parts.append(f"--dataset={dataset}")
  parts.append(f"--net={net}")
  if dataset and base.startswith(f"{dataset}_{net}"):
    parts.append(f"--config_name={base}")
  parts.append(f"--out_dir={directory}")
  return " ".join(parts)


def read_info(directory: str) -> dict[str, Any]:
  """`info.json` of a stored copy.

  Raises:
    FileNotFoundError: if `directory` holds no finished copy (says how to make it).
  """
  path = os.path.join(directory, INFO_FILE)
  missing = [p for p in (path, os.path.join(directory, IMAGES_FILE),
                         os.path.join(directory, LABELS_FILE)) if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(
        f"No DeepAugment copy in {directory!r} ({missing[0]} not found). Make it with "
        f"`{make_command(directory)}` (add --dataset=..., and --config_name=... or "
        "--torch_weights=... for the corruption net).")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


class DeepAugmentSource:
  """A `Source` over a stored DeepAugment copy (memory-mapped `.npy` arrays).

  Args:
    directory: a directory written by `experiments/make_deepaugment.py`.

  Attributes:
    info: the copy's `info.json`; plus `num_examples`, `image_shape`, `num_classes`.

  Raises:
    FileNotFoundError: if the directory holds no finished copy.
    ValueError: if the arrays disagree with each other or with `info.json`.
  """

  def __init__(self, directory: str):
    self.directory = os.fspath(directory)
    self.info = read_info(self.directory)
    self.images = np.load(os.path.join(self.directory, IMAGES_FILE), mmap_mode="r")
    self.labels = np.load(os.path.join(self.directory, LABELS_FILE), mmap_mode="r")
    if self.images.ndim != 4 or self.images.dtype != np.uint8:
      raise ValueError(f"{self.directory}/{IMAGES_FILE} must be uint8 (N, H, W, C), got "
                       f"{self.images.dtype} {self.images.shape}.")
    if self.labels.shape != (self.images.shape[0],):
      raise ValueError(f"{self.directory}/{LABELS_FILE} has shape {self.labels.shape}, "
                       f"expected ({self.images.shape[0]},) to match the images.")
    count = self.info.get("count")
    if count is not None and int(count) != self.images.shape[0]:
      raise ValueError(f"{self.directory}: info.json count={count} but {IMAGES_FILE} holds "
                       f"{self.images.shape[0]} images.")
    self.num_examples = int(self.images.shape[0])
    self.image_shape = tuple(int(d) for d in self.images.shape[1:])
    self.num_classes = int(self.info["num_classes"])
    if self.num_examples and int(np.max(self.labels)) >= self.num_classes:
      raise ValueError(f"{self.directory}: labels up to {int(np.max(self.labels))}, but "
                       f"num_classes={self.num_classes}.")

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples `indices`, in order: uint8 `(n, H, W, C)` and int32 `(n,)`."""
    indices = check_indices(indices, self.num_examples)
    return (np.asarray(self.images[indices]),
            np.asarray(self.labels[indices]).astype(np.int32, copy=False))

  def __repr__(self) -> str:
    return (f"DeepAugmentSource({self.directory!r}, num_examples={self.num_examples}, "
            f"net={self.info.get('net')!r})")


class ConcatSource:
  """The union of `Source`s: example indices run through the sources in order.

  Args:
    *sources: at least one `Source`, all with the same `image_shape` and `num_classes`.

  Raises:
    ValueError: if no source is given or the sources' image shapes or classes differ.
  """

  def __init__(self, *sources: Source):
    if not sources:
      raise ValueError("sources must name at least one Source.")
    first = sources[0]
    for k, s in enumerate(sources[1:], 1):
      if tuple(s.image_shape) != tuple(first.image_shape):
        raise ValueError(f"sources[{k}] has image_shape {tuple(s.image_shape)}, sources[0] "
                         f"has {tuple(first.image_shape)}; they must agree.")
      if s.num_classes != first.num_classes:
        raise ValueError(f"sources[{k}] has num_classes={s.num_classes}, sources[0] has "
                         f"{first.num_classes}; they must agree.")
    self.sources = tuple(sources)
    self.offsets = np.cumsum([0] + [int(s.num_examples) for s in sources])
    self.num_examples = int(self.offsets[-1])
    self.image_shape = tuple(first.image_shape)
    self.num_classes = int(first.num_classes)

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples `indices`, in order: uint8 `(n, H, W, C)` and int32 `(n,)`."""
    indices = check_indices(indices, self.num_examples)
    images = np.empty((indices.size,) + self.image_shape, np.uint8)
    labels = np.empty((indices.size,), np.int32)
    which = np.searchsorted(self.offsets, indices, side="right") - 1
    for k in np.unique(which):
      sel = np.nonzero(which == k)[0]
      images[sel], labels[sel] = self.sources[k].get(indices[sel] - self.offsets[k])
    return images, labels

  def __repr__(self) -> str:
    return f"ConcatSource({', '.join(repr(s) for s in self.sources)})"


def load_train_source(config: Any, info: Any, train_source: Source) -> Source:
  """The training `Source` of `config`: clean, or clean + its stored DeepAugment copies.

  Args:
    config: an experiment config; `config.get('deepaugment_dirs')`, a sequence of
      directories written by `experiments/make_deepaugment.py`, turns DeepAugment on.
    info: the dataset's `DatasetInfo` (its `name`, `image_shape` and `num_classes`
      are checked against each copy).
    train_source: the clean training split.

  Returns:
    `train_source` itself when `deepaugment_dirs` is missing or empty, else
    `ConcatSource(train_source, *copies)`, so that every training batch draws uniformly
    from the clean images and the copies.

  Raises:
    FileNotFoundError: for a directory without a copy (the message gives the command).
    ValueError: if a copy is of another dataset or its shapes / classes disagree.
  """
  dirs = config.get("deepaugment_dirs") if hasattr(config, "get") else None
  if not dirs:
    return train_source
  if isinstance(dirs, str):
    dirs = (dirs,)
  copies = []
  for d in dirs:
    if not os.path.isdir(d) or not os.path.isfile(os.path.join(d, INFO_FILE)):
      raise FileNotFoundError(
          f"deepaugment_dirs: {d!r} holds no DeepAugment copy; make it with "
          f"`{make_command(d, getattr(info, 'name', None))}`.")
    copy = DeepAugmentSource(d)
    dataset = copy.info.get("dataset")
    if info is not None and dataset is not None and dataset != info.name:
      raise ValueError(f"deepaugment_dirs: {d!r} is a copy of {dataset!r}, not of "
                       f"{info.name!r} (config.dataset).")
    if info is not None and tuple(copy.image_shape) != tuple(info.image_shape):
      raise ValueError(f"deepaugment_dirs: {d!r} has image_shape {copy.image_shape}, "
                       f"{info.name!r} has {tuple(info.image_shape)}.")
    copies.append(copy)
  return ConcatSource(train_source, *copies)

