"""Reader for the IDX format of (Fashion-)MNIST, gzipped or not.

An IDX file is a 4-byte magic number `0x00 0x00 <dtype code> <ndim>`, then `ndim`
big-endian uint32 dimension sizes, then the data in C order, big-endian.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

# IDX type code -> numpy dtype (big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
  """Decodes the bytes of an IDX file into an array with the header's dims.

  Raises:
    ValueError: naming `name` if the magic number, the dims or the size are wrong.
  """
  if len(data) < 4:
    raise ValueError(f"{name}: not an IDX file (only {len(data)} bytes).")
  zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
  if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES:
    raise ValueError(
        f"{name}: bad IDX magic number 0x{data[:4].hex()} (expected 00 00, a type "
        f"code in {{{', '.join(hex(c) for c in _IDX_DTYPES)}}}, then the rank).")
  if ndim == 0:
    raise ValueError(f"{name}: IDX rank must be at least 1, got 0.")
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"{name}: IDX header truncated ({len(data)} bytes, rank {ndim}).")
  dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
  dtype = _IDX_DTYPES[code]
  expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
  if len(data) - header != expected:
    raise ValueError(
        f"{name}: IDX dims {dims} of {dtype} need {expected} data bytes, file has "
        f"{len(data) - header}.")
  array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
  return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file (`.gz` is decompressed) into a native-endian array."""
  path = os.fspath(path)
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    try:
      data = f.read()
    except gzip.BadGzipFile as e:
      raise ValueError(f"{path}: not a valid gzip file ({e}).") from e
  return parse_idx(data, name=path)


FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_mnist_split(directory: str | os.PathLike, split: str,
                     num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """Images uint8 `(N, 28, 28, 1)` and labels int32 `(N,)` of an MNIST-style split.

  Reads `FASHION_MNIST_FILES[split]` from `directory`; checks ranks, counts and labels.

  Raises:
    FileNotFoundError: if a file is missing.
    ValueError: if a file is not a valid IDX file of the expected kind.
  """
  image_file, label_file = (os.path.join(os.fspath(directory), f)
                            for f in FASHION_MNIST_FILES[split])
  images = read_idx(image_file)
  labels = read_idx(label_file)
  if images.dtype != np.uint8 or images.ndim != 3:
    raise ValueError(
        f"{image_file}: expected uint8 images of rank 3 (N, rows, cols), got "
        f"{images.dtype} {images.shape}.")
  if labels.dtype != np.uint8 or labels.ndim != 1:
    raise ValueError(
        f"{label_file}: expected uint8 labels of rank 1, got {labels.dtype} "
        f"{labels.shape}.")
  if labels.shape[0] != images.shape[0]:
    raise ValueError(
        f"{label_file}: {labels.shape[0]} labels for {images.shape[0]} images in "
        f"{image_file}.")
  if labels.size and labels.max() >= num_classes:
    raise ValueError(f"{label_file}: label {labels.max()} >= {num_classes} classes.")
  return images[..., None], labels.astype(np.int32)
