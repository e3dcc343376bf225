"""l_p adversarial attacks (pure, jittable functions of a `logits_fn`).

Images are NHWC float32 in [0, 1]; labels int (B,); `logits_fn(x) -> (B, K)`.
  pgd, fgsm, fgm           l_inf / l2 PGD and one-step attacks (`adacorr.attacks.lp`)
  apgd, apgd_targeted      Auto-PGD (Croce & Hein 2020) with CE / DLR loss; APGD-T
  fab                      FAB-T, targeted minimum-norm attack (`adacorr.attacks.fab`)
  square                   Square Attack, score-based, no gradients (`adacorr.attacks.square`)
  autoattack               the AutoAttack ensemble (standard / rand / fast / custom) on the
                           examples still robust, threat-model checked; autoattack_label
                           names a run ('AutoAttack' only at the standard full budget)
  robust_accuracy          clean and per-example worst-case robust accuracy
  traced_logits_fn         a model's logits_fn with its variables traced: the jitted
                           attacks compile once per architecture, not once per model
  fast_lpa, lpa, ppgd      perceptual attacks in the LPIPS threat model (Laidlaw et al. 2021;
                           `adacorr.attacks.perceptual`), project_lpips, margin_loss
  ada, ssim_line_search    AdA: per-example adversarial weight perturbations of a
                           corruption net (`adacorr.attacks.adversarial_augment`), SSIM safeguard
  building blocks          project_linf, project_l2, project, random_init,
                           loss_per_example, pgd_step, steepest_direction, l2_norm
  ascend, signed_step      the shared ascent loop (loss x update x project, over pytrees;
                           `adacorr.attacks.ascent`) that PGD, FGSM/FGM, AT's and
                           RobustAugMix's training attacks and AdA are configurations of
"""

from adacorr.attacks.ascent import (
    DIRECTIONS, ascend, keep_better, l2_direction, sign_direction, signed_step)
from adacorr.attacks.adversarial_augment import (
    BLOCKS, SSIM_READINGS, ada, block_ids, block_radii, default_step_size, line_search_gamma,
    min_ssim, perturbed_corruption, project_deltas, random_delta,
    relative_norms, ssim, ssim_line_search)
from adacorr.attacks.apgd import apgd, apgd_targeted, checkpoints
from adacorr.attacks.autoattack import COMPONENTS, VERSIONS, autoattack, component_attacks
from adacorr.attacks.autoattack import label as autoattack_label
from adacorr.attacks.fab import fab
from adacorr.attacks.square import square
from adacorr.attacks.evaluation import check_threat_model, robust_accuracy
from adacorr.attacks.perceptual import (
    fast_lpa, gauss_newton_direction, lpa, margin_loss, perceptual_step, ppgd, project_lpips)
from adacorr.core.checks import NORMS
from adacorr.attacks.lp import (
    LOSSES, as_pytree, fgm, fgsm, l2_norm, l2_normalize, linf_norm, loss_per_example,
    per_example_keys, pgd, pgd_step, project, project_l2, project_linf, random_init,
    steepest_direction, traced_logits_fn)

__all__ = [
    "DIRECTIONS", "ascend", "keep_better", "l2_direction", "sign_direction", "signed_step",
    "fast_lpa", "gauss_newton_direction", "lpa", "margin_loss", "perceptual_step", "ppgd",
    "project_lpips",
    "BLOCKS", "SSIM_READINGS", "ada", "block_ids", "block_radii", "default_step_size",
    "line_search_gamma", "min_ssim", "perturbed_corruption", "project_deltas",
    "random_delta", "relative_norms", "ssim", "ssim_line_search",
    "COMPONENTS", "VERSIONS", "apgd_targeted", "autoattack", "autoattack_label",
    "check_threat_model",
    "component_attacks", "fab", "square",
    "LOSSES", "NORMS", "apgd", "checkpoints", "fgm", "fgsm", "l2_norm", "l2_normalize",
    "linf_norm", "loss_per_example", "per_example_keys", "pgd", "pgd_step", "project",
    "project_l2", "project_linf", "random_init", "robust_accuracy", "steepest_direction",
    "as_pytree", "traced_logits_fn",
]
