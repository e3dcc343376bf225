"""The common-corruption test sets of a run: which corruptions (`corruption_names`) and
their `data.Source`s (`corrupted_sources`: generated and cached on disk, or the published
CIFAR-10-C). Their accuracies and mCE are `robustness.evaluate`'s corruption section
(`robustness.evaluate_corruptions` on these sources)."""

from __future__ import annotations

from typing import Sequence

import jax
from jax.experimental import multihost_utils

from adacorr import corruptions as corruptions_lib
from adacorr import data as data_lib
from adacorr.data import corrupted

CORRUPTED_MODES = ("generated", "published")


def corruption_names(*, extra: bool = True, selected: Sequence[str] | None = None) -> list[str]:
  """The corruptions to evaluate, in `corruptions.ALL_CORRUPTIONS` order.

  Args:
    extra: with the 15 benchmark corruptions, also the extra ones (not in the mCE).
    selected: only these names (any of `ALL_CORRUPTIONS`); overrides `extra`.

  Raises:
    ValueError: if `selected` holds an unknown name.
  """
  if selected:
    unknown = sorted(set(selected) - set(corruptions_lib.ALL_CORRUPTIONS))
    if unknown:
      raise ValueError(f"selected: unknown {unknown}; known: "
                       f"{', '.join(corruptions_lib.ALL_CORRUPTIONS)}.")
    return [n for n in corruptions_lib.ALL_CORRUPTIONS if n in selected]
  names = list(corruptions_lib.BENCHMARK_CORRUPTIONS)
  return names + list(corruptions_lib.EXTRA_CORRUPTIONS) if extra else names


def corrupted_sources(mode: str, dataset: str, test_source: data_lib.Source,
                      names: Sequence[str], *, cache_dir: str | None = None, seed: int = 0,
                      params: str = "cifar10", data_dir: str | None = None,
                      download: bool = False) -> dict[tuple[str, int], data_lib.Source]:
  """`{(name, severity): Source}` of the corrupted test sets, names in the order given.

  Args:
    mode: 'published' (tfds `cifar10_corrupted`; `dataset` must be 'cifar10') or
      'generated' (`test_source` corrupted with `adacorr.corruptions`, built once into
      `cache_dir` (by process 0 of a multi-process run, the others waiting) and read
      from there: `cache_dir` must be shared by the processes).
    dataset: the dataset name of `test_source`.
    test_source: the clean test set.
    names: corruption names (see `corruption_names`).
    cache_dir: directory of the generated sets (required for 'generated').
    seed, params: seed and parameter table of the generated corruptions.
    data_dir, download: tfds data dir and whether tfds may download the published sets
      (see `data.corrupted.load_cifar10_corrupted`).

  Raises:
    ValueError: for an unknown `mode`, 'published' with another dataset than
      cifar10, or 'generated' without `cache_dir`.
  """
  if mode not in CORRUPTED_MODES:
    raise ValueError(f"mode={mode!r} is not one of {CORRUPTED_MODES}.")
  if mode == "published":
    if dataset != "cifar10":
      raise ValueError(f"mode='published' exists only for cifar10, not {dataset!r}; use "
                       "mode='generated'.")
    return {(n, s): corrupted.load_cifar10_corrupted(n, s, data_dir=data_dir, download=download)
            for n in names for s in corruptions_lib.SEVERITIES}
  if not cache_dir:
    raise ValueError("cache_dir is required for mode='generated'.")
  if jax.process_index() == 0:  # one writer; the other processes wait, then read
    corrupted.build_corrupted(test_source, cache_dir, corruptions=names, seed=seed,
                              params=params)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("adacorr.evaluation.corrupted_sources")
  return {(n, s): corrupted.load_corrupted(cache_dir, n, s) for n in names
          for s in corruptions_lib.SEVERITIES}
