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

from adacorr import attacks
from adacorr import data as data_lib
from adacorr import run
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


def ssim_samples(backbone, logits_fn, x, y, key, *, nu, num_steps, batch_size,
                 blocks="layer"):
  """SSIM(x, AdA(x)) per image (no line search); nu = 0: the unperturbed backbone."""
  out = []
  if nu == 0:
    run = jax.jit(lambda xb: attacks.ssim(xb, backbone.apply(backbone.params, xb)))
    for i in range(0, len(x), batch_size):
      out.append(np.asarray(run(x[i:i + batch_size])))
    return np.concatenate(out)
  run = jax.jit(lambda xb, yb, k: attacks.ssim(xb, attacks.ada(
      backbone.apply, backbone.params, logits_fn, xb, yb, k, nu=nu, num_steps=num_steps,
      blocks=blocks)))
  for n, i in enumerate(range(0, len(x), batch_size)):
    out.append(np.asarray(run(x[i:i + batch_size], y[i:i + batch_size],
                              jax.random.fold_in(key, n))))
  return np.concatenate(out)


def summarize(values: np.ndarray) -> dict:
  q = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
  return {"mean": float(values.mean()), "std": float(values.std()), "q05": float(q[0]),
          "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "q95": float(q[4]),
          "min": float(values.min()), "count": int(values.size)}


def plot(samples: dict, path: str, threshold: float | None) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  names = list(samples)
  fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
  bins = np.linspace(-0.2, 1.0, 61)
  for ax, name in zip(axes[0], names):
    for nu, values in sorted(samples[name].items()):
      label = "unperturbed" if nu == 0 else f"nu = {nu:g}"
      ax.hist(values, bins=bins, density=True, histtype="step", linewidth=1.5,
              linestyle="--" if nu == 0 else "-", label=label)
    if threshold is not None:
      ax.axvline(threshold, color="k", linewidth=0.8, linestyle=":",
                 label=f"line-search t = {threshold:g}")
    ax.set_title(f"AdA ({name})")
    ax.set_xlabel("SSIM(clean, AdA image)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


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
      values = ssim_samples(backbone, logits_fn, x, y, key, nu=nu, num_steps=num_steps,
                            batch_size=FLAGS.batch_size, blocks=blocks)
      samples[backbone.name][nu] = values
      stats[backbone.name][str(nu)] = summarize(values)
      print(f"{backbone.name:6s} nu={nu:<9g} SSIM mean {values.mean():.3f} "
            f"median {np.median(values):.3f} 5% {np.quantile(values, 0.05):.3f}")

  output = FLAGS.output or os.path.join(FLAGS.workdir, "ada_ssim_histogram.png")
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  plot(samples, output, threshold)
  with open(os.path.splitext(output)[0] + ".json", "w", encoding="utf-8") as f:
    json.dump({"workdir": os.path.abspath(FLAGS.workdir), "num_examples": n,
               "num_steps": num_steps, "nus": nus, "ssim": stats}, f, indent=2)
  print(f"Wrote {output}")


if __name__ == "__main__":
  app.run(main)
