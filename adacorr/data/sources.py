"""Random-access data sources: `get(indices) -> (images uint8 NHWC, labels int32)`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Source(Protocol):
  """A split of a labelled image dataset with random access by example index.

  Attributes:
    num_examples: number of examples `N`; valid indices are `0 .. N-1`.
    image_shape: `(H, W, C)` of every image.
    num_classes: labels lie in `[0, num_classes)`.
  """

  num_examples: int
  image_shape: tuple[int, int, int]
  num_classes: int

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples `indices` (1-D ints), in that order.

    Returns:
      `(images, labels)`: uint8 `(n, H, W, C)` in `[0, 255]` and int32 `(n,)`.
    """
    ...


def check_indices(indices: np.ndarray, num_examples: int) -> np.ndarray:
  """`indices` as a 1-D int64 array, checked to lie in `[0, num_examples)`."""
  if isinstance(indices, (bool, np.bool_)) or (
      np.ndim(indices) == 0 and isinstance(indices, (int, np.integer))):
    raise ValueError(f"indices must be a 1-D integer array, got the scalar {indices!r}; "
                     f"pass [{indices!r}].")
  indices = np.asarray(indices)
  if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
    raise ValueError(
        f"indices must be a 1-D integer array, got shape {indices.shape} and dtype "
        f"{indices.dtype}.")
  indices = indices.astype(np.int64, copy=False)
  if indices.size and (indices.min() < 0 or indices.max() >= num_examples):
    raise ValueError(
        f"indices must lie in [0, {num_examples}), got values in "
        f"[{indices.min()}, {indices.max()}].")
  return indices


CHANNELS = (1, 3)  # grey or RGB: what the models' normalisation and the corruptions take


def check_image_array(images: np.ndarray, name: str = "images") -> None:
  """ValueError unless `images` is uint8 `(N, H, W, C)` with C in `CHANNELS`, channels
  last; an NCHW array (second dim 1 or 3, last dim > 4) is named as such, with the fix."""
  shape = images.shape
  if images.ndim != 4:
    hint = (f"; for grey images (N, H, W) add the channel axis: {name}[..., None]"
            if images.ndim == 3 else "")
    raise ValueError(f"{name} must be uint8 of shape (N, H, W, C), got dtype {images.dtype} "
                     f"and shape {shape}{hint}.")
  if shape[1] in CHANNELS and shape[-1] not in CHANNELS and shape[-1] > 4:
    raise ValueError(
        f"{name} of shape {shape} look like NCHW (N, C, H, W); channels must be last, "
        f"(N, H, W, C) with C in {CHANNELS}: use np.transpose({name}, (0, 2, 3, 1)).")
  if shape[-1] not in CHANNELS:
    raise ValueError(f"{name} must be (N, H, W, C) with channels last and C in {CHANNELS} "
                     f"(grey or RGB), got shape {shape}.")
  if images.dtype != np.uint8:
    hint = ""
    if np.issubdtype(images.dtype, np.floating):
      hint = (f"; for float images in [0, 1] pass np.round({name} * 255).astype(np.uint8)")
    raise ValueError(f"{name} must be uint8 in [0, 255] of shape (N, H, W, C), got dtype "
                     f"{images.dtype}{hint}.")


class ArraySource:
  """A `Source` over in-memory numpy arrays.

  Args:
    images: uint8 `(N, H, W, C)`, channels last, C in `CHANNELS` (1 or 3).
    labels: integer `(N,)` in `[0, num_classes)`; stored as int32.
    num_classes: number of classes, a positive int.

  Raises:
    ValueError: for images of another dtype, rank or channel count (an NCHW array is
      named as such), labels of the wrong shape, dtype or range, or a `num_classes` that
      is not a positive int (2.5 is not silently 2).
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int):
    images = np.asarray(images)
    labels = np.asarray(labels)
    check_image_array(images)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
      raise ValueError(
          f"labels must have shape ({images.shape[0]},) to match images, got "
          f"{labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer) and not (
        labels.size == 0 and np.issubdtype(labels.dtype, np.floating)):
      raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
    if (isinstance(num_classes, (bool, np.bool_))
        or not isinstance(num_classes, (int, np.integer)) or num_classes <= 0):
      raise ValueError(f"num_classes={num_classes!r} must be a positive int.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
      raise ValueError(
          f"labels must lie in [0, {num_classes}) (num_classes), got values in "
          f"[{labels.min()}, {labels.max()}].")
    self.images = images
    self.labels = labels.astype(np.int32, copy=False)
    self.num_examples = int(images.shape[0])
    self.image_shape = tuple(int(d) for d in images.shape[1:])
    self.num_classes = int(num_classes)

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples `indices`, in order: uint8 `(n, H, W, C)` and int32 `(n,)`."""
    indices = check_indices(indices, self.num_examples)
    return self.images[indices], self.labels[indices]

  def __repr__(self) -> str:
    return (f"ArraySource(num_examples={self.num_examples}, "
            f"image_shape={self.image_shape}, num_classes={self.num_classes})")


class FirstN:
  """The first `n` examples of a `Source` (a `Source` itself; nothing is copied).

  Made by `first_n`. `get(indices)` accepts indices in `[0, num_examples)` only and
  returns exactly what `source.get(indices)` returns.

  Attributes:
    source: the wrapped `Source`.
    num_examples: `min(n, source.num_examples)`.
    image_shape, num_classes: those of `source`.
  """

  def __init__(self, source: Source, n: int):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
      raise ValueError(f"n must be a positive int, got {n!r}.")
    for attr in ("num_examples", "image_shape", "num_classes", "get"):
      if not hasattr(source, attr):
        raise TypeError(f"source must be a Source (with num_examples, image_shape, "
                        f"num_classes and get), got {type(source).__name__} without "
                        f"{attr!r}.")
    self.source = source
    self.num_examples = min(int(n), int(source.num_examples))
    self.image_shape = source.image_shape
    self.num_classes = source.num_classes

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples `indices` (in `[0, num_examples)`), in order: uint8 `(n, H, W, C)`, int32 `(n,)`."""
    return self.source.get(check_indices(indices, self.num_examples))

  def __repr__(self) -> str:
    return f"FirstN({self.source!r}, n={self.num_examples})"


def first_n(source: Source, n: int) -> FirstN:
  """A `Source` of the first `n` examples of `source` (all of them if it has fewer).

  Args:
    source: any `Source`.
    n: a positive int.

  Raises:
    ValueError: if `n` is not a positive int.
    TypeError: if `source` is not a `Source`.
  """
  return FirstN(source, n)
