"""Common-corruption robustness: accuracy per corruption and severity, mean accuracy, mCE."""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np
import tqdm

from adacorr import corruptions as corruptions_lib
from adacorr import data as data_lib
from adacorr import metrics
from adacorr.core import checks
from adacorr.data import corrupted
from adacorr.evaluation import clean

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


def evaluate_corruptions(model, variables,
                         sources: Mapping[tuple[str, int], data_lib.Source], *,
                         batch_size: int = 500, mesh=None,
                         num_examples: int = 0) -> dict[str, Any]:
  """Accuracy of `model` on every corrupted test set of `sources`.

  Args:
    model, variables: as for `clean.predict`.
    sources: `{(name, severity): Source}` with every severity 1..5 of each name (e.g.
      from `corrupted_sources`).
    batch_size, mesh: as for `clean.predict`.
    num_examples: evaluate on the first `num_examples` of each set (0: all).

  Returns:
    dict with 'accuracy' ({name: [accuracy at severity 1..5]}, names in the order of
    `sources`), 'mean_accuracy' (over the benchmark corruptions evaluated and their
    severities; None without any) and 'mce' (CIFAR style, in %; None unless all 15
    benchmark corruptions were evaluated).

  Raises:
    ValueError: if a name lacks a severity, or `sources` is empty.
  """
  names = list(dict.fromkeys(n for n, _ in sources))
  if not names:
    raise ValueError("sources is empty: give at least one (name, severity) set.")
  for n in names:
    severities = sorted(s for m, s in sources if m == n)
    if severities != list(corruptions_lib.SEVERITIES):
      raise ValueError(f"sources must hold severities {list(corruptions_lib.SEVERITIES)} of "
                       f"each corruption; {n!r} has {severities}.")
  checks.check_steps(num_examples, "num_examples")
  accuracy = {n: [0.0] * len(corruptions_lib.SEVERITIES) for n in names}
  for (n, s), source in tqdm.tqdm(sorted(sources.items()), desc="corrupted test sets",
                                  file=sys.stdout):
    if num_examples > 0:
      source = data_lib.first_n(source, num_examples)
    logits, labels = clean.predict(model, variables, source, batch_size=batch_size, mesh=mesh)
    accuracy[n][s - 1] = float(metrics.accuracy(logits, labels))
  benchmark = [n for n in corruptions_lib.BENCHMARK_CORRUPTIONS if n in accuracy]
  complete = len(benchmark) == len(corruptions_lib.BENCHMARK_CORRUPTIONS)
  return {
      "accuracy": accuracy,
      "mean_accuracy": float(np.mean([accuracy[n] for n in benchmark])) if benchmark else None,
      "mce": (float(metrics.mce({n: [1.0 - a for a in accuracy[n]] for n in benchmark},
                                style="cifar")) if complete else None),
  }
