r"""Figure 2 of the AdA paper: the distribution of SSIM(clean, AdA image) for several
relative radii nu, one panel per backbone.

  python -m experiments.ada_ssim_histogram --workdir=runs/fashion_mnist_ada \
      [--backbones=edsr,cae] [--nus=0.0075,0.009375,0.01125,0.013125,0.015] \
      [--num_examples=512] [--num_steps=10] [--output=PATH.png]

The classifier (the one AdA attacks) is the trained run in --workdir (its config.json and
latest checkpoint). Backbones default to the run's AdA backbones (else EDSR), pretrained
or reused as in training. The AdA images are taken BEFORE the SSIM line search (as in the
paper's figure); the unperturbed backbone (nu = 0) is drawn as a reference. Writes the
PNG and a JSON of per-(backbone, nu) SSIM statistics next to it.
"""

import os

from absl import app, flags, logging

from adacorr.run import read_config
from adacorr.run import report as report_lib
from experiments.configs import ada_backbones

flags.DEFINE_string("workdir", None, "Trained classifier run (config.json + checkpoints/).")
flags.DEFINE_list("backbones", None, "Corruption nets (default: the run's AdA backbones, "
                  "else edsr).")
flags.DEFINE_list("nus", None, "Relative radii (default: the paper's 0.5x..1x of the run's "
                  "nu, i.e. 0.0075 .. 0.015).")
flags.DEFINE_integer("num_examples", 512, "Test images to corrupt.")
flags.DEFINE_integer("num_steps", None, "AdA steps (default: the run's, else 10).")
flags.DEFINE_integer("batch_size", 128, "Images per AdA call.")
flags.DEFINE_integer("seed", 0, "Attack seed.")
flags.DEFINE_string("corruption_net_dir", None, "Where corruption nets live / are trained.")
flags.DEFINE_string("output", None, "PNG path (default <workdir>/ada_ssim_histogram.png).")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS

PAPER_NU_FRACTIONS = (0.5, 0.625, 0.75, 0.875, 1.0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  config = read_config(FLAGS.workdir)
  if config is None:
    raise app.UsageError(f"--workdir must be a training workdir: {FLAGS.workdir} has no "
                         "config.json.")
  if FLAGS.backbones:
    specs = [ada_backbones.backbone(n, config.dataset, root=FLAGS.corruption_net_dir)
             for n in FLAGS.backbones]
  elif config.get("method") == "ada" and config.method_kwargs.get("backbones"):
    specs = None  # the run's own
  else:
    specs = [ada_backbones.backbone("edsr", config.dataset, root=FLAGS.corruption_net_dir)]
  output = FLAGS.output or os.path.join(FLAGS.workdir, "ada_ssim_histogram.png")
  try:
    report_lib.ada_ssim_figure(
        FLAGS.workdir, output, specs=specs, nus=[float(v) for v in FLAGS.nus or []],
        nu_fractions=PAPER_NU_FRACTIONS, num_examples=FLAGS.num_examples,
        num_steps=FLAGS.num_steps, batch_size=FLAGS.batch_size, seed=FLAGS.seed)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  print(f"Wrote {output}")


if __name__ == "__main__":
  app.run(main)
