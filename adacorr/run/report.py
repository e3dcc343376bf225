"""The robustness report of a training workdir: every evaluator on the run's test set.

`robustness_report(workdir, ...)` loads the run's classifier and test split and runs the
evaluators of `adacorr.evaluation` (clean + calibration, CIFAR-10.1 for CIFAR-10, l_p,
eps*_GN, LPA per LPIPS bound, common corruptions); `evaluation.write_report` writes it.
The CLI is `python -m experiments.evaluate`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from absl import logging

from adacorr import data as data_lib
from adacorr import evaluation
from adacorr import parallel
from adacorr import perceptual
from adacorr.run.classifiers import load_classifier


def load_run(workdir: str, name: str = "workdir"):
  """`(config, dataset info, model, eval variables, step)` of a training workdir.

  Raises:
    ValueError: naming `name`, if `workdir` is not a training workdir.
  """
  try:
    model, variables, config, step = load_classifier(workdir)
  except FileNotFoundError as e:
    raise ValueError(f"{name} must be a training workdir: {e}") from e
  return config, data_lib.DATASETS[config.dataset], model, variables, step


def lpips_network(lpips_model: str, config, info, model):
  """`(features_fn or None for self, display name, layer names)` of an LPIPS network:
  'self' (the evaluated classifier's own LPIPS layers) or another run's workdir."""
  if lpips_model == "self":
    try:
      layers = perceptual.lpips_layers(model)
    except ValueError as e:
      raise ValueError(f"lpips_model='self': {e}") from e
    return None, f"{config.model} (self: {', '.join(layers)})", layers
  net_config, net_info, net_model, net_variables, _ = load_run(lpips_model, "lpips_model")
  if tuple(net_info.image_shape) != tuple(info.image_shape):
    raise ValueError(
        f"lpips_model={lpips_model} takes {net_config.dataset} images "
        f"{tuple(net_info.image_shape)}, the evaluated run {config.dataset} images "
        f"{tuple(info.image_shape)}.")
  layers = perceptual.lpips_layers(net_model)
  return (perceptual.model_features_fn(net_model, net_variables),
          f"{net_config.model} ({', '.join(layers)})", layers)


def robustness_report(
    workdir: str, *, corruptions: str = "generated", extra: bool = True,
    corruption_names: Sequence[str] | None = None, corrupted_dir: str | None = None,
    num_examples: int = 0, batch_size: int = 500, seed: int = 0,
    linf_eps: Sequence[str] = ("1/255", "2/255"), l2_eps: Sequence[str] = ("0.1",),
    lp_num_examples: int = 1000, pgd_steps: int = 20, apgd_steps: int = 50,
    noise_num_examples: int | None = None, lpips_bounds: Sequence[str] = ("0.25", "0.5", "1.0"),
    lpips_model: str = "self", lpa_num_examples: int | None = None, lpa_steps: int = 40,
    lpa_lambda_steps: int = 5, lpa_projection: str = "newton",
    download: bool = False) -> tuple[dict[str, Any], list[str]]:
  """The robustness report of the latest checkpoint in `workdir`.

  Args (the options of `python -m experiments.evaluate`, same names):
    corruptions: 'generated' (our corruptions of the test set, cached in `corrupted_dir`,
      default `workdir/<dataset>-C`), 'published' (tfds cifar10_corrupted) or 'none'.
    extra, corruption_names: which corruptions (`evaluation.corruption_names`).
    num_examples: the first N test examples (0: all); the l_p, noise and LPA sections
      use the first `lp_num_examples`, `noise_num_examples` (default `lp_num_examples`)
      and `lpa_num_examples` (default half of `lp_num_examples`, rounded up); 0 skips.
    linf_eps, l2_eps: radii ('8/255' or '0.5'); pgd_steps, apgd_steps: the attacks' steps.
    lpips_bounds, lpips_model, lpa_*: the LPA section (`evaluation.evaluate_lpips`).
    download: let tfds download missing data.

  Returns:
    `(report, names)`: the report dict (see `evaluation.write_report`) and the
    corruption names in table order.

  Raises:
    ValueError: naming the option, for a bad option or a workdir that is not a run.
  """
  config, info, model, variables, step = load_run(workdir)
  if corruptions == "published" and config.dataset != "cifar10":  # fail before the attacks
    raise ValueError(f"corruptions='published' exists only for cifar10, not "
                     f"{config.dataset!r}; use corruptions='generated'.")
  bounds = [evaluation.parse_radius(b) for b in lpips_bounds]
  try:
    names = evaluation.corruption_names(extra=extra, selected=corruption_names)
  except ValueError as e:
    raise ValueError(f"corruption_names: {e}") from e
  if any(not b >= 0 for b in bounds):
    raise ValueError(f"lpips_bounds must be non-negative, got {list(lpips_bounds)}.")
  # Half the l_p examples by default: LPA at the paper's 5 x 40 steps on the 200 examples of
  # `make demo` would add ~60 CPU-seconds (2 cores) to the l_p section's ~110.
  if lpa_num_examples is None:
    lpa_num_examples = -(-lp_num_examples // 2)
  if lpa_num_examples > 0 and bounds:
    lpips_net, lpips_name, lpips_layers = lpips_network(lpips_model, config, info, model)

  mesh = parallel.make_mesh()
  _, (test_source,) = data_lib.load_dataset(config, splits=(info.test_split,),
                                             download=download)
  if num_examples > 0:
    test_source = data_lib.first_n(test_source, num_examples)
  clean = evaluation.evaluate_clean(model, variables, test_source, batch_size=batch_size,
                                    mesh=mesh)
  report = {
      "workdir": os.path.abspath(workdir), "dataset": config.dataset, "model": config.model,
      "method": config.get("method"), "step": step,
      "num_examples": clean["num_examples"], "corruptions": corruptions,
      "clean": {"accuracy": clean["accuracy"]}, "calibration": clean["calibration"],
  }
  if config.dataset == "cifar10":
    try:
      _, (cifar10_1,) = data_lib.load_dataset("cifar10_1", splits=("test",),
                                              data_dir=config.get("data_dir"),
                                              download=download)
      report["cifar10_1"] = {"accuracy": evaluation.evaluate_clean(
          model, variables, cifar10_1, batch_size=batch_size, mesh=mesh,
          with_calibration=False)["accuracy"]}
    except FileNotFoundError as e:
      logging.warning("CIFAR-10.1 not available: %s", e)
      report["cifar10_1"] = None

  if lp_num_examples > 0 and (linf_eps or l2_eps):
    lp = evaluation.evaluate_lp(model, variables, data_lib.first_n(test_source, lp_num_examples),
                                radii={"linf": list(linf_eps), "l2": list(l2_eps)},
                                pgd_steps=pgd_steps, apgd_steps=apgd_steps)
    report["lp_num_examples"], report["lp"] = lp["num_examples"], lp["results"]

  if noise_num_examples is None:
    noise_num_examples = lp_num_examples
  if noise_num_examples > 0:
    report["noise"] = evaluation.evaluate_noise(
        model, variables, data_lib.first_n(test_source, noise_num_examples),
        batch_size=batch_size, seed=seed)

  if lpa_num_examples > 0 and bounds:
    r = evaluation.evaluate_lpips(
        model, variables, data_lib.first_n(test_source, lpa_num_examples), bounds=bounds,
        features_fn=lpips_net, num_steps=lpa_steps, lambda_steps=lpa_lambda_steps,
        projection=lpa_projection, batch_size=batch_size, mesh=mesh)
    report["lpips"] = {
        "model": "self" if lpips_model == "self" else os.path.abspath(lpips_model),
        "model_name": lpips_name, "layers": list(lpips_layers), **r,
    }

  if corruptions != "none":
    sources = evaluation.corrupted_sources(
        corruptions, config.dataset, test_source, names,
        cache_dir=corrupted_dir or os.path.join(workdir, f"{config.dataset}-C"),
        seed=seed, params="cifar10", data_dir=config.get("data_dir"), download=download)
    report["corrupted"] = evaluation.evaluate_corruptions(
        model, variables, sources, batch_size=batch_size, mesh=mesh,
        num_examples=num_examples)
  return report, names
