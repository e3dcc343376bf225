r"""Train-step time of the augmentation methods relative to the nominal step, in one run.

  python -m benchmarks.augmentation_steps [--model=preact_resnet18] [--batch_size=128]
      [--steps=10] [--repeats=3] [--out=benchmarks/augmentation_steps.json]

Times the full jitted train step (pad-crop-flip, method loss, backward, SGD) of: nominal;
AugMix without JSD (one AugMix view); AugMix + JSD (clean + 2 AugMix views, a 3B forward
and backward); RobustAugMix (7-step l2 PGD + clean/AugMix/adversarial views); ANT^1x1 and
ANT^3x3 (one generator Adam step + the 30/20/50 batch). Each with its paper defaults
(`adacorr.methods`); ratios are to the nominal step of the same run.
"""

import os


from adacorr import methods  # noqa: E402
from benchmarks import method_steps  # noqa: E402

METHODS = {
    "nominal": None,
    "augmix (no JSD)": lambda model: methods.make_augmix(model, jsd=False),
    "augmix + JSD": methods.make_augmix,
    "robust_augmix (PGD-7)": methods.make_robust_augmix,
    "ant 1x1": lambda model: methods.make_ant(model, generator="1x1"),
    "ant 3x3": lambda model: methods.make_ant(model, generator="3x3"),
}


def main():
  method_steps.main(METHODS, __doc__.split("\n")[0],
                    os.path.join(os.path.dirname(__file__), "augmentation_steps.json"))


if __name__ == "__main__":
  main()
