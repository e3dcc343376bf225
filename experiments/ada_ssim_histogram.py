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

import json
import os

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import numpy as np

from adacorr import data as data_lib
from adacorr import run
from adacorr.evaluation import ada_ssim, plots
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
  try:
    model, variables, config, _ = run.load_classifier(FLAGS.workdir)
  except FileNotFoundError as e:
    raise app.UsageError(f"--workdir must be a training workdir: {e}") from e
  info = data_lib.DATASETS[config.dataset]
  logits_fn = lambda imgs: model.apply(variables, imgs, train=False)

  kw = config.method_kwargs.to_dict() if config.get("method") == "ada" else {}
  if FLAGS.backbones:
    specs = [ada_backbones.backbone(n, config.dataset, root=FLAGS.corruption_net_dir)
             for n in FLAGS.backbones]
  elif kw.get("backbones"):
    specs = list(kw["backbones"])
  else:
    specs = [ada_backbones.backbone("edsr", config.dataset, root=FLAGS.corruption_net_dir)]
  base_nu = float(kw.get("nu", 0.015))
  nus = ([float(v) for v in FLAGS.nus] if FLAGS.nus
         else [round(base_nu * f, 8) for f in PAPER_NU_FRACTIONS])
  num_steps = FLAGS.num_steps if FLAGS.num_steps is not None else int(kw.get("num_steps", 10))
  threshold = kw.get("ssim_threshold", 0.3)
  blocks = kw.get("blocks", "layer")

  _, (source,) = data_lib.load_dataset(config, splits=(info.test_split,))
  source = data_lib.first_n(source, FLAGS.num_examples)
  n = source.num_examples
  images, labels = source.get(np.arange(n))
  x = jnp.asarray(images, jnp.float32) / 255.0
  y = jnp.asarray(labels, jnp.int32)

  samples, stats = {}, {}
  key = jax.random.PRNGKey(FLAGS.seed)
  for spec in specs:
    backbone = run.load_backbone(spec, image_shape=info.image_shape)
    samples[backbone.name], stats[backbone.name] = {}, {}
    for nu in [0.0] + nus:
      values = ada_ssim.ssim_samples(backbone, logits_fn, x, y, key, nu=nu, num_steps=num_steps,
                            batch_size=FLAGS.batch_size, blocks=blocks)
      samples[backbone.name][nu] = values
      stats[backbone.name][str(nu)] = ada_ssim.summarize(values)
      print(f"{backbone.name:6s} nu={nu:<9g} SSIM mean {values.mean():.3f} "
            f"median {np.median(values):.3f} 5% {np.quantile(values, 0.05):.3f}")

  output = FLAGS.output or os.path.join(FLAGS.workdir, "ada_ssim_histogram.png")
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  plots.save_ssim_densities(samples, output, threshold)
  with open(os.path.splitext(output)[0] + ".json", "w", encoding="utf-8") as f:
    json.dump({"workdir": os.path.abspath(FLAGS.workdir), "num_examples": n,
               "num_steps": num_steps, "nus": nus, "ssim": stats}, f, indent=2)
  print(f"Wrote {output}")


if __name__ == "__main__":
  app.run(main)
