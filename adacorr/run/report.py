"""The robustness report of a training workdir: every evaluator on the run's test set.

`robustness_report(workdir, ...)` loads the run's classifier and test split and runs the
evaluators of `adacorr.evaluation` (clean + calibration, CIFAR-10.1 for CIFAR-10, l_p,
eps*_GN, LPA per LPIPS bound, common corruptions); `evaluation.write_report` writes it.
`ensure_report` reuses a written report of the same checkpoint and options. The CLI is
`python -m experiments.evaluate`.

`ada_ssim_figure(workdir, ...)`: the AdA paper's Figure 2 for a trained run (SSIM of its
AdA images to the clean test images, per backbone and relative radius nu, the
unperturbed backbone included); the CLI is `python -m experiments.ada_ssim_histogram`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import time
from typing import Any, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from adacorr import attacks
from adacorr import data as data_lib
from adacorr import evaluation
from adacorr import parallel
from adacorr import perceptual
from adacorr.attacks.autoattack import NUM_TARGETS
from adacorr.evaluation import ada_ssim, plots
from adacorr.run.classifiers import load_classifier
from adacorr.run.corruption_nets import load_backbone


def load_run(workdir: str, name: str = "workdir", step: int | None = None):
  """`(config, dataset info, model, eval variables, step)` of a training workdir's
  checkpoint `step` (default: the latest).

  Raises:
    ValueError: naming `name`, if `workdir` is not a training workdir.
  """
  try:
    model, variables, config, step = load_classifier(workdir, step)
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


def _option(default, help_text: str, kind: str, **extra):
  """A `ReportOptions` field: its default, its help (the CLI flag's) and its flag kind."""
  return dataclasses.field(default=default, metadata={"help": help_text, "kind": kind, **extra})


@dataclasses.dataclass(frozen=True)
class ReportOptions:
  """The options of a run's robustness report, spelled once: `robustness_report` takes
  them, `python -m experiments.evaluate` derives its flags from these fields (`flag`
  metadata where the flag's name differs, e.g. `--attacks`), and the suites' `report`
  dicts and `make demo` are checked against them (`make_report_options`). Sequences are
  tuples (a frozen, comparable record); a written report keeps them as lists in
  'options'.
  """
  corruptions: str = _option(
      "generated", "Corrupted test sets: generated with adacorr.corruptions (cached), the "
      "published tfds cifar10_corrupted, or none.", "enum",
      choices=("generated", "published", "none"))
  extra: bool = _option(True, "Also evaluate the 4 extra corruptions (not in the mCE).",
                        "bool")
  corruption_names: tuple | None = _option(
      None, "Evaluate only these corruptions (default: the 15 benchmark ones, plus the "
      "extras with --extra); the mCE needs all 15.", "list")
  corrupted_dir: str | None = _option(
      None, "Cache of the generated <dataset>-C (default: WORKDIR/<dataset>-C).", "string")
  num_examples: int = _option(0, "Evaluate on the first N test examples (0: all).", "integer")
  batch_size: int = _option(500, "Evaluation batch size (global).", "integer")
  seed: int = _option(0, "Seed of the generated corruptions (and eps*_AN).", "integer")
  linf_eps: tuple | None = _option(
      None, "l_inf radii (fractions ok; default: the dataset's standard radii, e.g. "
      "CIFAR-10 1/255,2/255,8/255; empty: none).", "list")
  l2_eps: tuple | None = _option(
      None, "l2 radii (default: the dataset's, e.g. CIFAR-10 0.1,0.5; empty: none).", "list")
  lp_num_examples: int = _option(1000, "Test examples attacked (0: none, skip l_p).",
                                 "integer")
  pgd_steps: int = _option(20, "PGD steps (step size 2.5 eps / steps, random start).",
                           "integer")
  apgd_steps: int = _option(50, "APGD steps (CE and DLR losses; 0: skip them).", "integer")
  autoattack: str = _option(
      "standard", "AutoAttack version beside PGD/APGD: standard (APGD-CE, APGD-T, FAB-T, "
      "Square; the RobustBench number), fast (APGD-CE + APGD-T, a quick look) or none.",
      "enum", choices=("standard", "fast", "none"), flag="attacks")
  masking_steps: int = _option(
      100, "Steps of the PGD run compared with PGD---pgd_steps in the gradient-masking "
      "check (0: skip).", "integer")
  aa_steps: int = _option(100, "AutoAttack's APGD and FAB iterations (reference 100).",
                          "integer")
  square_queries: int = _option(5000, "Square's queries (reference 5000).", "integer")
  aa_targets: int = _option(NUM_TARGETS, "AutoAttack's APGD-T and FAB-T target classes "
                            "(reference 9).", "integer")
  noise_num_examples: int | None = _option(
      None, "Test examples for the Gaussian-noise robustness eps* (Rusak et al. 2020; "
      "default: --lp_num_examples; 0: skip).", "integer")
  an_steps: int = _option(200, "Adam steps of eps*_AN's noise generator (0: skip eps*_AN).",
                          "integer")
  an_batch_size: int = _option(128, "Batch of eps*_AN's generator training.", "integer")
  lpips_bounds: tuple = _option(
      ("0.25", "0.5", "1.0"), "LPIPS bounds for LPA (fractions ok; empty: skip the "
      "perceptual section).", "list")
  lpips_model: str = _option(
      "self", "LPIPS network: 'self' (the evaluated classifier's own LPIPS layers) or a "
      "training workdir of another run (e.g. a cifar_alexnet run) whose layers bound the "
      "attack.", "string")
  lpa_num_examples: int | None = _option(
      None, "Test examples attacked by LPA (default: half of --lp_num_examples, rounded "
      "up; 0: skip the perceptual section).", "integer")
  lpa_steps: int = _option(40, "LPA steps per lambda round (the paper evaluates with 40).",
                           "integer")
  lpa_lambda_steps: int = _option(5, "LPA lambda rounds (the paper's S = 5).", "integer")
  lpa_projection: str = _option("newton", "LPA's final projection onto the LPIPS ball.",
                                "enum", choices=("newton", "bisection"))

  def to_dict(self) -> dict[str, Any]:
    """The record a report keeps in 'options' (sequences as lists)."""
    return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)}


def make_report_options(options: ReportOptions | Mapping[str, Any] | None = None,
                        **overrides: Any) -> ReportOptions:
  """`ReportOptions` from an instance or a mapping (e.g. a suite's `report` dict), with
  `overrides`; sequences become tuples.

  Raises:
    ValueError: for an option that does not exist (with the closest known name).
  """
  base = options if isinstance(options, ReportOptions) else ReportOptions()
  given = dict(options or {}) if not isinstance(options, ReportOptions) else {}
  given.update(overrides)
  known = [f.name for f in dataclasses.fields(ReportOptions)]
  unknown = sorted(set(given) - set(known))
  if unknown:
    hints = []
    for k in unknown:
      close = difflib.get_close_matches(k, known, n=1)
      hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ValueError(f"unknown report options {', '.join(hints)}; known: {known}.")
  given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
  return dataclasses.replace(base, **given)


def robustness_report(workdir: str, options: ReportOptions | Mapping[str, Any] | None = None,
                      *, step: int | None = None, download: bool = False,
                      **overrides: Any) -> tuple[dict[str, Any], list[str]]:
  """The robustness report of the latest checkpoint in `workdir`.

  Args:
    workdir: a training run.
    options, overrides: the report's options (`ReportOptions`, or a mapping of its
      fields, and keyword overrides; the options of `python -m experiments.evaluate`,
      same names):
      corruptions: 'generated' (our corruptions of the test set, cached in
        `corrupted_dir`, default `workdir/<dataset>-C`), 'published' (tfds
        cifar10_corrupted) or 'none'; extra, corruption_names: which corruptions
        (`evaluation.corruption_names`).
      num_examples: the first N test examples (0: all); the l_p, noise and LPA sections
        use the first `lp_num_examples`, `noise_num_examples` (default `lp_num_examples`)
        and `lpa_num_examples` (default half of `lp_num_examples`, rounded up); 0 skips.
      linf_eps, l2_eps: radii ('8/255' or '0.5'; None: the dataset's
        `evaluation.standard_radii`); pgd_steps, apgd_steps, autoattack, masking_steps,
        aa_steps, square_queries, aa_targets: the l_p section (`evaluation.lp_robustness`).
      an_steps, an_batch_size: eps*_AN's generator training (`evaluation.evaluate_noise`).
      lpips_bounds, lpips_model, lpa_*: the LPA section (`evaluation.evaluate_lpips`).
    step: the checkpoint evaluated (default: the latest).
    download: let tfds download missing data.

  Returns:
    `(report, names)`: the report dict (see `evaluation.write_report`) and the
    corruption names in table order.

  Raises:
    ValueError: naming the option, for a bad option or a workdir that is not a run.
  """
  o = make_report_options(options, **overrides)
  options = o.to_dict()
  # The options as locals (read-only).
  corruptions, extra, corruption_names = o.corruptions, o.extra, o.corruption_names
  corrupted_dir, num_examples, batch_size, seed = (o.corrupted_dir, o.num_examples,
                                                   o.batch_size, o.seed)
  linf_eps, l2_eps, lp_num_examples = o.linf_eps, o.l2_eps, o.lp_num_examples
  pgd_steps, apgd_steps, autoattack, masking_steps = (o.pgd_steps, o.apgd_steps,
                                                      o.autoattack, o.masking_steps)
  aa_steps, square_queries, aa_targets = o.aa_steps, o.square_queries, o.aa_targets
  noise_num_examples, an_steps, an_batch_size = (o.noise_num_examples, o.an_steps,
                                                 o.an_batch_size)
  lpips_bounds, lpips_model, lpa_num_examples = (o.lpips_bounds, o.lpips_model,
                                                 o.lpa_num_examples)
  lpa_steps, lpa_lambda_steps, lpa_projection = (o.lpa_steps, o.lpa_lambda_steps,
                                                 o.lpa_projection)
  config, info, model, variables, step = load_run(workdir, step=step)
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
  if noise_num_examples is None:
    noise_num_examples = lp_num_examples
  attacked = {"lp_num_examples": lp_num_examples, "noise_num_examples": noise_num_examples,
              "lpa_num_examples": lpa_num_examples if bounds else 0}
  if jax.process_count() > 1 and any(attacked.values()):
    raise ValueError(
        "Several processes evaluate only the clean and corruption sections (each process "
        "its rows of every batch); the attacks are not multi-process yet: pass "
        + " ".join(f"--{k}=0" for k in attacked) + ", or run on one host.")
  if lpa_num_examples > 0 and bounds:
    lpips_net, lpips_name, lpips_layers = lpips_network(lpips_model, config, info, model)

  mesh = parallel.make_mesh()
  _, (test_source,) = data_lib.load_dataset(config, splits=(info.test_split,),
                                             download=download)
  if num_examples > 0:
    test_source = data_lib.first_n(test_source, num_examples)
  seconds = {}  # wall time per section (compilation included)
  sources = None
  if corruptions != "none":  # the sets first (built once, cached on disk)
    tic = time.time()
    sources = evaluation.corrupted_sources(
        corruptions, config.dataset, test_source, names,
        cache_dir=corrupted_dir or os.path.join(workdir, f"{config.dataset}-C"),
        seed=seed, params="cifar10", data_dir=config.get("data_dir"), download=download)
    seconds["corrupted"] = time.time() - tic
  # The clean and corruption sections: `evaluation.evaluate`, the one implementation,
  # on the test Source and the cached -C Sources (several processes too).
  logits_fn = attacks.traced_logits_fn(evaluation.clean.eval_apply(model), variables)
  result = evaluation.evaluate(
      logits_fn, test_source, None, threat_models=None, autoattack="none",
      corruptions=sources, batch_size=batch_size, mesh=mesh, log=logging.info)
  seconds["clean"] = result.seconds["clean"]
  if sources is not None:
    seconds["corrupted"] += result.seconds["corruptions"]
  report = {
      "workdir": os.path.abspath(workdir), "dataset": config.dataset, "model": config.model,
      "method": config.get("method"), "step": step, "options": options,
      "num_examples": result.num_examples, "corruptions": corruptions,
      "clean": {"accuracy": result.clean_accuracy}, "calibration": result.calibration,
      "seconds": seconds,
  }
  if sources is not None:
    report["corrupted"] = {**result.corruptions, "source": corruptions,
                           "params": "cifar10" if corruptions == "generated" else None}
  if config.dataset == "cifar10":
    try:
      _, (cifar10_1,) = data_lib.load_dataset("cifar10_1", splits=("test",),
                                              data_dir=config.get("data_dir"),
                                              download=download)
      report["cifar10_1"] = {"accuracy": evaluation.evaluate(
          logits_fn, cifar10_1, None, threat_models=None, autoattack="none",
          calibration=False, batch_size=batch_size, mesh=mesh, progress=False,
          log=None).clean_accuracy}
    except FileNotFoundError as e:
      logging.warning("CIFAR-10.1 not available: %s", e)
      report["cifar10_1"] = None

  default_radii = evaluation.standard_radii(config.dataset)
  radii = {"linf": list(default_radii["linf"] if linf_eps is None else linf_eps),
           "l2": list(default_radii["l2"] if l2_eps is None else l2_eps)}
  if lp_num_examples > 0 and (radii["linf"] or radii["l2"]):
    tic = time.time()
    lp = evaluation.evaluate_lp(model, variables, data_lib.first_n(test_source, lp_num_examples),
                                radii={k: v for k, v in radii.items() if v},
                                pgd_steps=pgd_steps, apgd_steps=apgd_steps,
                                autoattack=autoattack, masking_steps=masking_steps,
                                aa_steps=aa_steps, square_queries=square_queries,
                                aa_targets=aa_targets)
    report["lp_num_examples"], report["lp"] = lp["num_examples"], lp["results"]
    report["lp_warnings"] = lp["warnings"]
    seconds["lp"] = time.time() - tic

  if noise_num_examples > 0:
    tic = time.time()
    # eps*_AN's generator trains on the training split (as the reference's retraining).
    noise_train = (data_lib.load_dataset(config, splits=(info.train_split,),
                                         download=download)[1][0]
                   if info.train_split else None)
    report["noise"] = evaluation.evaluate_noise(
        model, variables, data_lib.first_n(test_source, noise_num_examples),
        batch_size=batch_size, seed=seed, train_source=noise_train, an_steps=an_steps,
        an_batch_size=an_batch_size)
    seconds["noise"] = time.time() - tic

  if lpa_num_examples > 0 and bounds:
    tic = time.time()
    r = evaluation.evaluate_lpips(
        model, variables, data_lib.first_n(test_source, lpa_num_examples), bounds=bounds,
        features_fn=lpips_net, num_steps=lpa_steps, lambda_steps=lpa_lambda_steps,
        projection=lpa_projection, batch_size=batch_size, mesh=mesh)
    report["lpips"] = {
        "model": "self" if lpips_model == "self" else os.path.abspath(lpips_model),
        "model_name": lpips_name, "layers": list(lpips_layers), **r,
    }
    seconds["lpips"] = time.time() - tic

  return report, names


def ensure_report(workdir: str, output_dir: str | None = None, **options: Any
                  ) -> tuple[dict[str, Any], list[str], bool]:
  """`robustness_report(workdir, **options)` written to `output_dir` (default
  `workdir/report`), or the report already there: `(report, names, reused)`.

  A written report is reused when it is of the run's latest checkpoint and was made with
  the same options (`report['options']`, the arguments of `robustness_report`).
  """
  output_dir = output_dir or os.path.join(workdir, "report")
  path = os.path.join(output_dir, "report.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      previous = json.load(f)
    wanted = report_options(**{k: v for k, v in options.items() if k not in ("download", "step")})
    step = options.get("step")
    if step is None:
      try:
        step = load_run(workdir)[-1]
      except ValueError:
        step = None
    if previous.get("step") == step and previous.get("options") == wanted:
      return previous, list(previous.get("corrupted", {}).get("accuracy", {})), True
  report, names = robustness_report(workdir, **options)
  evaluation.write_report(report, output_dir, names)
  return report, names, False


def report_options(**options: Any) -> dict[str, Any]:
  """The record of a report's options (`ReportOptions` with `options` applied, defaults
  filled in, sequences as lists) that a report keeps in 'options'.

  Raises:
    ValueError: for an option `ReportOptions` does not have.
  """
  return make_report_options(**options).to_dict()


def ada_ssim_figure(workdir: str, output: str, *, specs: Sequence[Mapping[str, Any]] | None = None,
                    nus: Sequence[float] | None = None,
                    nu_fractions: Sequence[float] = (0.5, 0.625, 0.75, 0.875, 1.0),
                    num_examples: int = 512, num_steps: int | None = None,
                    batch_size: int = 128, seed: int = 0,
                    log: Any = print) -> dict[str, Any]:
  """The AdA paper's Figure 2 for the trained run in `workdir`: SSIM(clean test image,
  its AdA image before the line search) per backbone and nu, the unperturbed backbone
  (nu = 0) included. Writes `output` (PNG) and its `.json` (per-(backbone, nu) SSIM
  statistics, `ada_ssim.summarize`); returns that JSON's dict.

  Args:
    workdir: a trained classifier run (AdA attacks this classifier).
    output: the PNG path.
    specs: backbone specs (`load_backbone`); default the run's AdA backbones.
    nus: relative radii; default `nu_fractions` of the run's nu (the paper's figure:
      0.5x .. 1x of 0.015).
    num_examples: first test images; num_steps: AdA steps (default the run's, else 10).
    log: called with one line per (backbone, nu); None: silent.

  Raises:
    ValueError: if the run is not a training workdir, or no backbone is given for a run
      that is not AdA.
  """
  config, info, model, variables, _ = load_run(workdir)
  kw = config.method_kwargs.to_dict() if config.get("method") == "ada" else {}
  specs = list(specs) if specs else list(kw.get("backbones") or [])
  if not specs:
    raise ValueError(f"{workdir} is not an AdA run: give the backbone specs.")
  base_nu = float(kw.get("nu", 0.015))
  nus = [float(v) for v in nus] if nus else [round(base_nu * f, 8) for f in nu_fractions]
  num_steps = int(num_steps if num_steps is not None else kw.get("num_steps", 10))
  blocks = kw.get("blocks", "layer")

  _, (source,) = data_lib.load_dataset(config, splits=(info.test_split,))
  source = data_lib.first_n(source, num_examples)
  images, labels = source.get(np.arange(source.num_examples))
  x = jnp.asarray(images, jnp.float32) / 255.0
  y = jnp.asarray(labels, jnp.int32)

  def logits_fn(imgs):
    return model.apply(variables, imgs, train=False)

  samples, stats = {}, {}
  key = jax.random.PRNGKey(seed)
  for spec in specs:
    backbone = load_backbone(spec, image_shape=info.image_shape)
    samples[backbone.name], stats[backbone.name] = {}, {}
    for nu in [0.0] + nus:
      values = ada_ssim.ssim_samples(backbone, logits_fn, x, y, key, nu=nu,
                                     num_steps=num_steps, batch_size=batch_size,
                                     blocks=blocks)
      samples[backbone.name][nu] = values
      stats[backbone.name][str(nu)] = ada_ssim.summarize(values)
      if log is not None:
        log(f"{backbone.name:6s} nu={nu:<9g} SSIM mean {values.mean():.3f} "
            f"median {np.median(values):.3f} 5% {np.quantile(values, 0.05):.3f}")
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  plots.save_ssim_densities(samples, output, kw.get("ssim_threshold", 0.3))
  result = {"workdir": os.path.abspath(workdir), "num_examples": int(source.num_examples),
            "num_steps": num_steps, "nus": nus, "ssim": stats}
  with open(os.path.splitext(output)[0] + ".json", "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  return result
