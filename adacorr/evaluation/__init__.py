"""Evaluation: a trained classifier's numbers on clean, corrupted and attacked test data.

Any JAX model, one call (`robustness.evaluate`, also `adacorr.evaluate`)::

  result = evaluation.evaluate(logits_fn, images, labels, key=jax.random.key(0),
                               threat_models={"linf": ["8/255"]}, corruptions="benchmark")
  print(result.to_markdown()); result.save("eval/")

Each evaluator takes a model (`model.apply(variables, x, train=False)` -> logits), its
variables and the data, and returns numbers; none reads a run directory. Resolved by
name::

  from adacorr import evaluation
  clean = evaluation.get_evaluator("clean")(model, variables, test_source, batch_size=500)
  lp = evaluation.EVALUATORS["lp"](model, variables, data.first_n(test_source, 1000),
                                   radii={"linf": ["8/255"]})

Modules: `ada_ssim` (SSIM of AdA images per nu, the paper's Figure 2), `clean` (logits,
accuracy, calibration), `corruptions` (-C accuracy, mCE),
`lp` (PGD / APGD / AutoAttack, gradient-masking flags), `noise` (eps*_GN), `lpips` (LPA), `registry` (`EVALUATORS`), and
`report` / `plots` (report.json, report.md and the figures). The layer above
(`adacorr.run`) and experiments/evaluate.py load the run and write the report.
"""

from adacorr.evaluation.clean import calibration, logits_of, predict
from adacorr.evaluation.corruptions import corrupted_sources, corruption_names
from adacorr.evaluation.lp import evaluate_lp, lp_robustness, masking_flags
from adacorr.evaluation.lpips import evaluate_lpips
from adacorr.evaluation.noise import evaluate_noise
from adacorr.evaluation.radius import parse_radius, standard_radii
from adacorr.evaluation.registry import EVALUATORS, get_evaluator
from adacorr.evaluation.robustness import (Robustness, corruption_summary, evaluate,
                                           evaluate_clean, evaluate_corruptions,
                                           imagenet_c_files, load_cifar10c, load_imagenet_c)
from adacorr.evaluation.report import markdown_report, write_report

__all__ = [
    "EVALUATORS",
    "Robustness",
    "evaluate",
    "imagenet_c_files",
    "load_cifar10c",
    "load_imagenet_c",
    "calibration",
    "corrupted_sources",
    "corruption_summary",
    "corruption_names",
    "evaluate_clean",
    "evaluate_corruptions",
    "evaluate_lp",
    "evaluate_lpips",
    "evaluate_noise",
    "get_evaluator",
    "logits_of",
    "lp_robustness",
    "markdown_report",
    "masking_flags",
    "parse_radius",
    "predict",
    "standard_radii",
    "write_report",
]
