r"""How strong RLAT's latent perturbations are on a model, beside l2 AT's input perturbation.

  python -m benchmarks.rlat_scale [--workdirs=DIR,...] [--num_examples=256]
      [--json=benchmarks/rlat_scale.json]

For each trained run (`--workdirs`, default the fashion_mnist suite's nominal, l2 AT and
RLAT seed-0 runs) and, at initialisation, for the suite's model and the paper's
PreActResNet-18 on CIFAR-shaped inputs, prints per RLAT point the multiplier
eps_l / eps, the mean over examples of ||delta_l|| / ||a_l|| (the perturbation relative to
the activation it is added to, train-mode pass as RLAT attacks), and the cross-entropy of
the clean pass, of RLAT's perturbed pass (eps 0.08, every point, as the suite trains) and of
l2 AT's (FGM, eps 0.1). Images: the first `--num_examples` of the TRAINING split (CIFAR
shapes: uniform noise, only for the ratios at initialisation; nothing is read from a test
split). A ratio much larger than the paper model's means the same eps is a stronger
perturbation here. CPU: well under a minute.
"""

import argparse
import json
import platform

import jax
import jax.numpy as jnp
import numpy as np

from adacorr import data as data_lib
from adacorr.attacks.lp import fgm
from adacorr.core.tree import per_example_l2
from adacorr.methods import rlat
from adacorr.methods.common import cross_entropy, train_apply
from adacorr.models import get_model
from adacorr.run.classifiers import load_classifier

SUITE = "runs/reproduce/fashion_mnist"
DEFAULT_RUNS = tuple(f"{SUITE}/{r}/seed0" for r in ("nominal", "l2_at", "rlat"))


def measure(model, variables, x, y, *, eps=0.08, at_eps=0.1) -> dict:
  """Per-point multipliers and relative norms, and the three cross-entropies."""
  params, stats = variables["params"], variables.get("batch_stats", {})
  key = jax.random.PRNGKey(0)
  batch = {"image": x, "label": y}
  _, inter = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                         mutable=["batch_stats", "intermediates"])
  acts = {k: v[0] for k, v in inter["intermediates"].items()}
  deltas, clean = rlat.rlat_deltas(model, params, stats, batch, key, eps=eps)
  mults = rlat.rlat_eps_multipliers(model, x.shape[1:])
  logits, _, _ = rlat.perturbed_apply(model, params, stats, x, deltas, key)

  def logits_fn(images):
    return train_apply(model, params, stats, images, key)[0]

  x_at = fgm(logits_fn, x, y, eps=at_eps)  # clipped to [0, 1]
  points = {}
  for mult, name in zip(mults, deltas):
    ratio = per_example_l2(deltas[name]) / jnp.maximum(per_example_l2(acts[name]), 1e-12)
    points[name] = {"multiplier": float(mult), "eps_l": float(eps * mult),
                    "relative_norm": float(jnp.mean(ratio)),
                    "elements": int(np.prod(acts[name].shape[1:]))}
  return {"points": points, "ce_clean": float(clean["loss"]),
          "ce_rlat": float(cross_entropy(logits, y)),
          "ce_l2_at": float(cross_entropy(logits_fn(x_at), y))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdirs", default=",".join(DEFAULT_RUNS))
  parser.add_argument("--num_examples", type=int, default=256)
  parser.add_argument("--json", default="benchmarks/rlat_scale.json")
  args = parser.parse_args()
  rows = {}
  for workdir in [w for w in args.workdirs.split(",") if w]:
    model, variables, config, step = load_classifier(workdir)
    info = data_lib.DATASETS[config.dataset]
    _, (train,) = data_lib.load_dataset(config, splits=(info.train_split,))
    images, labels = train.get(np.arange(args.num_examples))
    x = jnp.asarray(images, jnp.float32) / 255.0
    rows[f"{workdir} (step {step})"] = measure(model, variables, x, jnp.asarray(labels))
  rng = np.random.default_rng(0)
  for name, model_name, kwargs, shape in (
      ("suite model at init, 28x28x1", "preact_resnet",
       dict(width=16, stage_sizes=(1, 1, 1, 1),
            mean=tuple(data_lib.DATASETS["fashion_mnist"].mean),
            std=tuple(data_lib.DATASETS["fashion_mnist"].std)), (28, 28, 1)),
      ("PreActResNet-18 at init, 32x32x3 (the paper's)", "preact_resnet18", {}, (32, 32, 3))):
    model = get_model(model_name, num_classes=10, **kwargs)
    x = jnp.asarray(rng.uniform(size=(64,) + shape), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 64))
    variables = model.init(jax.random.PRNGKey(0), x[:2], train=False)
    rows[name] = measure(model, variables, x, y)

  names = list(next(iter(rows.values()))["points"])
  print("| model | " + " | ".join(names) + " | CE clean | CE RLAT | CE l2 AT |")
  print("|---|" + "---:|" * (len(names) + 3))
  for label, r in rows.items():
    cells = [f"{100 * p['relative_norm']:.2f}% (x{p['multiplier']:.2f})"
             for p in r["points"].values()]
    print(f"| {label} | " + " | ".join(cells)
          + f" | {r['ce_clean']:.3f} | {r['ce_rlat']:.3f} | {r['ce_l2_at']:.3f} |")
  with open(args.json, "w", encoding="utf-8") as f:
    json.dump({"machine": platform.platform(), "num_examples": args.num_examples,
               "rows": rows}, f, indent=1)
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
