"""Reproduction suites (`python -m experiments.reproduce --suite=NAME`): which configs run
side by side, at which budget, evaluated how, and the papers' orderings and numbers.

A suite is a dict:
  runs       run name -> config module under experiments/configs
  base       the config whose model, data, steps, batch, optimiser and schedule every run
             gets (`adacorr.run.reproduce.equal_budget`)
  baseline   the run others are compared with (relative mCE; LPA's LPIPS network)
  quick      the `--quick` subset (fashion_mnist)
  report     `run.report.ReportOptions` fields, the same for every run ('@baseline': the
             baseline's seed-0 workdir)
  claims     the orderings the papers claim, checked on the table
  reference  run -> the papers' numbers (paper-scale suites), printed under our row
  notes      a paragraph under the table: the budget and the evaluation, in words
"""

import difflib
import importlib

import ml_collections

# The orderings the five papers claim (keys of `evaluation.comparison.comparison_row`).
CLAIMS = (
    dict(better="l2_at", worse="nominal", key="c_mean",
         claim="l2 AT above nominal on -C (Kireev et al., Table 1)"),
    dict(better="rlat", worse="nominal", key="c_mean",
         claim="RLAT above nominal on -C (Kireev et al., Table 2)"),
    dict(better="rlat", worse="l2_at", key="c_mean",
         claim="RLAT >= l2 AT on -C (Kireev et al., Table 2)"),
    dict(better="ada_edsr", worse="nominal", key="c_mean",
         claim="AdA(EDSR) above nominal on -C (Calian et al., Table 1)"),
    dict(better="ada_edsr", worse="nominal", key="clean", margin=0.02,
         claim="AdA(EDSR) clean within ~2 points of nominal (Calian et al., Table 1)"),
    dict(better="ada_edsr", worse="ada_cae", key="c_mean",
         claim="AdA(EDSR) above AdA(CAE) on -C (Calian et al., Table 1: mCE 15.47 vs 29.15)"),
    dict(better="ada_all", worse="nominal", key="c_mean",
         claim="AdA(All) above nominal on -C (Calian et al., Table 1: mCE 18.49 vs 29.37)"),
    dict(better="deepaugment_augmix", worse="augmix_jsd", key="c_mean",
         claim="DeepAugment adds to AugMix on -C (Calian et al., Table 1: mCE 7.99 vs 12.26)"),
    dict(better="ada_augmix", worse="ada_edsr", key="c_mean",
         claim="AugMix adds to AdA on -C (Calian et al., Table 1)"),
    dict(better="augmix_rlat", worse="rlat", key="c_mean",
         claim="AugMix adds to RLAT on -C (Kireev et al., Table 2)"),
    dict(better="augmix_rlat", worse="augmix_jsd", key="c_mean",
         claim="RLAT adds to AugMix on -C (Kireev et al., Table 2)"),
    dict(better="ant", worse="nominal", key="family/noise",
         claim="ANT above nominal on the noise corruptions (Rusak et al., Table 3)"),
    dict(better="ant", worse="gaussian50", key="family/noise",
         claim="ANT >= Gaussian augmentation on noise (Rusak et al., Table 3)"),
    dict(better="pat", worse="nominal", key="lpips 0.5",
         claim="PAT above nominal under LPA (Laidlaw et al., Table 2)"),
    dict(better="robust_augmix", worse="augmix_jsd", key="linf 2/255",
         claim="RobustAugMix above AugMix under l_inf attacks (Martinez-Martinez et al.)"),
)

FASHION_MNIST_RUNS = {
    "nominal": "fashion_mnist_base",
    "gaussian50": "fashion_mnist_gaussian50",
    "gnt_mult": "fashion_mnist_gnt_mult",
    "speckle": "fashion_mnist_speckle",
    "linf_at": "fashion_mnist_linf_at",
    "l2_at": "fashion_mnist_l2_at",
    "rlat": "fashion_mnist_rlat",
    "ant": "fashion_mnist_ant",
    "augmix_jsd": "fashion_mnist_augmix",
    "deepaugment": "fashion_mnist_deepaugment",
    "deepaugment_augmix": "fashion_mnist_deepaugment_augmix",
    "ada_edsr": "fashion_mnist_ada",
    "ada_cae": "fashion_mnist_ada_cae",
    "ada_all": "fashion_mnist_ada_all",
    "ada_augmix": "fashion_mnist_ada_augmix",
    "augmix_rlat": "fashion_mnist_augmix_rlat",
    "pat": "fashion_mnist_pat",
    "robust_augmix": "fashion_mnist_robust_augmix",
    # Not a paper row: RLAT at half the eps, the paper's relative perturbation size on this
    # small model (configs/fashion_mnist_rlat_eps04.py), to test why RLAT trails here.
    "rlat_eps04": "fashion_mnist_rlat_eps04",
}


def _fashion_mnist_base():
  base = importlib.import_module("experiments.configs.fashion_mnist_base").get_config()
  # The budget: 150 steps of 128 (19,200 images, 0.32 epochs) of the small PreActResNet,
  # every method at the same step count (the papers compare at equal epochs). Measured on
  # 2 CPU cores, two runs at a time (RESULTS.md): a nominal-like run with its report
  # ~3.5 min, AdA(EDSR) and AdA+AugMix ~13-17 min, AdA(CAE) / AdA(All) more (per-example
  # CAE weights); the whole suite, 3 seeds, takes ~3.5 h with --jobs=2, not the ~2 h aimed
  # at, because AdA's step costs 10-20 nominal steps here.
  base.num_steps = 150
  base.global_batch_size = 128
  base.warmup_epochs = 0.05
  base.log_every_steps = 50
  base.eval_every_steps = -1
  base.checkpoint_every_steps = 100
  return base


SUITES = {
    "fashion_mnist": dict(
        runs=FASHION_MNIST_RUNS,
        base=_fashion_mnist_base,
        baseline="nominal",
        quick=("nominal", "gaussian50", "l2_at", "rlat", "augmix_jsd", "ada_edsr"),
        # The same report for every run, sized to the CPU budget (~1.5 min a run on 2 cores,
        # measured in RESULTS.md): the 15 benchmark corruptions x 5 severities on 500 test
        # images; l_p on 100 (PGD-10 and a reduced AutoAttack-fast: APGD-CE + APGD-T on the
        # runner-up class, 20 iterations each, labelled so in the notes); eps*_GN on 50
        # (eps*_AN skipped: its generator training costs more than the rest of the noise
        # section); LPA + PPGD (10 steps x 3 rounds) on 50.
        report=dict(corruptions="generated", extra=False, num_examples=500,
                    corrupted_dir="@suite/fashion_mnist-C-500", lp_num_examples=100,
                    linf_eps=["2/255"], l2_eps=["0.5"], pgd_steps=10, apgd_steps=0,
                    autoattack="fast", aa_steps=20, aa_targets=1, masking_steps=0,
                    noise_num_examples=50, an_steps=0, lpips_bounds=["0.5"],
                    lpips_model="@baseline", lpa_num_examples=50, lpa_steps=10,
                    lpa_lambda_steps=3),
        claims=CLAIMS,
        reference=None,
        notes=("**Budget**: every run 150 steps of 128 images (0.32 epochs) of the small "
               "PreActResNet (width 16, one block per stage), SGD + Nesterov, cosine schedule, "
               "the same seeds; a method that costs more per step gets the same steps. "
               "**Evaluation** (the same for every run): clean accuracy, ECE and -C (the 15 "
               "benchmark corruptions x 5 severities, generated) on the first 500 test images; "
               "l_inf 2/255 and l2 0.5: the per-example worst case of PGD-10 and a reduced "
               "AutoAttack-fast (APGD-CE + APGD-T on the runner-up class, 20 iterations each) "
               "on the first 100; eps*_GN on 50 (no eps*_AN); LPA + PPGD at LPIPS 0.5 (10 "
               "steps x 3 rounds, LPIPS on the nominal run's layers) on 50. Relative mCE is "
               "against the same seed's nominal run; it is undefined ('-', left out of the "
               "mean) at a seed whose nominal run is no less accurate on some corruption than "
               "on clean images. AdA runs use EDSR-tiny and, for AdA(CAE) / AdA(All), an "
               "eighth-width CAE (49k parameters; DeepAugment's full CAE costs ~1 min per "
               "AdA step of "
               "128 on 2 CPU cores). rlat_eps04 is not a paper row: RLAT at half the eps, "
               "the paper's relative perturbation size on this model "
               "(benchmarks/rlat_scale.py)."),
    ),
    "cifar10": dict(
        runs={"nominal": "cifar10_preact_resnet18", "gaussian50": "cifar10_gaussian50",
              "linf_at": "cifar10_linf_at", "l2_at": "cifar10_l2_at", "rlat": "cifar10_rlat",
              "augmix_jsd": "cifar10_augmix_jsd", "augmix_rlat": "cifar10_augmix_jsd_rlat",
              "ant": "cifar10_ant", "deepaugment": "cifar10_deepaugment",
              "ada_edsr": "cifar10_ada", "ada_augmix": "cifar10_ada_augmix",
              "deepaugment_augmix": "cifar10_deepaugment_augmix",
              "pat": "cifar10_pat", "robust_augmix": "cifar10_robust_augmix"},
        base=None,  # each config keeps its paper's own budget
        baseline="nominal",
        quick=None,
        report=dict(corruptions="published", lp_num_examples=1000,
                    lpips_model="@baseline", lpa_num_examples=500),
        claims=CLAIMS,
        # The papers' numbers (fractions; mCE in %): Kireev et al. 2022 Table 2 (PreAct
        # ResNet-18, -C mean accuracy), Calian et al. 2022 Table 1 (PreAct ResNet-50, mCE).
        reference={"nominal": {"c_mean": 0.746, "mce": 29.37},
                   "l2_at": {"c_mean": 0.834, "mce": 17.42},
                   "rlat": {"c_mean": 0.841},
                   "augmix_rlat": {"c_mean": 0.896},
                   "ada_edsr": {"clean": 0.9337, "mce": 15.47, "linf 2/255": 0.7241},
                   "augmix_jsd": {"mce": 12.26},
                   "ada_augmix": {"mce": 9.40},
                   "deepaugment_augmix": {"mce": 7.99}},
    ),
    "imagenet100": dict(
        runs={"nominal": "imagenet100_resnet50", "ada_edsr": "imagenet100_ada",
              "rlat": "imagenet100_rlat"},
        base=None,
        baseline="nominal",
        quick=None,
        report=dict(corruptions="generated", lp_num_examples=1000, lpa_num_examples=0),
        claims=CLAIMS,
        # Kireev et al. 2022 Table 2 (ImageNet-100-C mean accuracy, PreAct ResNet-18).
        reference={"nominal": {"c_mean": 0.475}, "rlat": {"c_mean": 0.488}},
    ),
}


def get_suite(name: str, *, quick: bool = False, methods=None) -> dict:
  """The suite `name` with its configs built: {'configs' (run -> ConfigDict, at the equal
  budget where the suite has a base), 'baseline', 'report', 'claims', 'reference'}."""
  if name not in SUITES:
    raise ValueError(f"suite={name!r} is not one of {sorted(SUITES)}.")
  spec = SUITES[name]
  runs = dict(spec["runs"])
  if quick:
    if not spec["quick"]:
      raise ValueError(f"suite {name!r} has no --quick subset.")
    runs = {k: runs[k] for k in spec["quick"]}
  if methods:
    unknown = sorted(set(methods) - set(spec["runs"]))
    if unknown:
      hints = "".join(f" {u!r}: did you mean {m[0]!r}?" for u in unknown
                      for m in [difflib.get_close_matches(u, list(spec["runs"]), n=1)] if m)
      raise ValueError(f"methods {unknown} are not runs of suite {name!r};{hints} runs: "
                       f"{sorted(spec['runs'])}.")
    runs = {k: spec["runs"][k] for k in spec["runs"] if k in methods or k == spec["baseline"]}
  configs = {k: importlib.import_module(f"experiments.configs.{v}").get_config()
             for k, v in runs.items()}
  if spec["base"] is not None:
    from adacorr.run import reproduce  # pylint: disable=import-outside-toplevel
    configs = reproduce.equal_budget(configs, spec["base"]())
  from adacorr.run import report as report_lib  # pylint: disable=import-outside-toplevel
  try:  # the report options are `ReportOptions` fields (a typo fails here, not after training)
    report_lib.make_report_options(spec["report"])
  except ValueError as e:
    raise ValueError(f"suite {name!r} report: {e}") from e
  return {"configs": {k: ml_collections.ConfigDict(v) for k, v in configs.items()},
          "baseline": spec["baseline"], "report": dict(spec["report"]),
          "claims": spec["claims"], "reference": spec["reference"],
          "notes": spec.get("notes")}
