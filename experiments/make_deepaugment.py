r"""Writes a DeepAugment copy of a training set: every image through a randomly distorted
EDSR or CAE (adacorr.augment.deepaugment), stored as uint8 arrays.

  python -m experiments.make_deepaugment --dataset=fashion_mnist --net=edsr \
      --config_name=fashion_mnist_edsr_tiny --out_dir=runs/deepaugment/fashion_mnist_edsr_tiny
  python -m experiments.make_deepaugment --dataset=fashion_mnist --net=cae \
      --out_dir=runs/deepaugment/fashion_mnist_cae [--num_examples=10000]
  [--torch_weights=PATH (DeepAugment's EDSR x4 / CAE weights)] [--random_init \
      --net_kwargs='{"features": 8, "num_blocks": 1}'] [--batch_size=20] [--seed=0]
  [--data_dir=TFDS_DIR] [--fashion_mnist_dir=IDX_DIR] [--download]

(from the repository root). The data is read from disk; --download lets tfds download a
dataset that is missing (needs internet).

The corruption net comes from `experiments/configs/ada_backbones.backbone(net, dataset,
config_name=...)` (pretrained into --corruption_net_dir on first use, like AdA's), from
--torch_weights, or is randomly initialised (--random_init, for tests). The weights are
redrawn for every batch of --batch_size images (the reference redraws them every ~20
images) and the activation distortions per image. The output depends only on the net,
--seed, --batch_size and the data.

Writes chunks of --chunk_size images to <out_dir>/chunks/ (a rerun skips finished
chunks), then <out_dir>/images.npy (uint8 (N, H, W, C)), labels.npy (int32 (N,)) and,
last, info.json. Train on clean + copies with `config.deepaugment_dirs=(out_dir, ...)`.
"""

import json
import os
import time

from absl import app, flags, logging
import jax
import numpy as np

from adacorr import data as data_lib
from adacorr.data import deepaugment as da_data
from adacorr.run.deepaugment import load_net, make_copy

FLAGS = flags.FLAGS


def _define(kind, name, default, help_):
  # Guarded: other experiment scripts sharing a process (tests) define some of these.
  if name not in FLAGS:
    getattr(flags, f"DEFINE_{kind}")(name, default, help_)


_define("string", "dataset", "fashion_mnist", "Dataset (a key of adacorr.data.DATASETS).")
_define("string", "split", "train", "Split to copy.")
_define("string", "net", "edsr", "Corruption net: 'edsr' or 'cae'.")
_define("string", "config_name", None, "Corruption-net config in experiments/configs/"
        "corruption_nets/ (default <dataset>_<net>); pretrained on first use.")
_define("string", "corruption_net_dir", None, "Where pretrained corruption nets live / are "
        "trained (default runs/corruption_nets or $ADACORR_CORRUPTION_NETS).")
_define("string", "torch_weights", None, "DeepAugment's PyTorch weights (EDSR x4 / CAE) "
        "instead of a pretrained run.")
_define("bool", "random_init", False, "Randomly initialised net (tests / smoke runs).")
_define("string", "net_kwargs", None, "JSON dict of net kwargs (--random_init, "
        "--torch_weights), e.g. '{\"features\": 8, \"num_blocks\": 1}'.")
_define("string", "out_dir", None, "Output directory.")
_define("integer", "batch_size", 20, "Images per call; one weight distortion per batch.")
_define("integer", "chunk_size", 5000, "Images per resumable chunk (a multiple of "
        "--batch_size).")
_define("integer", "num_examples", None, "Copy only the first N examples (default: all).")
_define("integer", "max_chunks", None, "Stop after writing this many new chunks (resume "
        "later by rerunning).")
_define("integer", "seed", 0, "Seed of the distortions.")
_define("string", "data_dir", None, "tfds data_dir.")
_define("string", "fashion_mnist_dir", None, "Directory of the Fashion-MNIST IDX .gz files.")
_define("bool", "download", False, "Let tfds download a dataset that is not on disk "
        "(needs internet).")


def backbone_spec(net, dataset, *, config_name=None, torch_weights=None, random_init=False,
                  net_kwargs=None, root=None):
  """The backbone spec dict (as `ada_backbones.backbone` / `load_backbone` take)."""
  if random_init:
    return dict(net=net, name=net, init="random", net_kwargs=dict(net_kwargs or {}))
  from experiments.configs import ada_backbones  # pylint: disable=import-outside-toplevel
  spec = ada_backbones.backbone(net, dataset, root=root, torch_weights=torch_weights,
                                config_name=config_name)
  if net_kwargs:
    spec["net_kwargs"] = dict(net_kwargs)
  return spec


def ensure_copy(out_dir, *, dataset, net, config_name=None, split="train", seed=0,
                data_dir=None, fashion_mnist_dir=None, download=False):
  """Makes the DeepAugment copy in `out_dir` unless it is already complete (first use of a
  DeepAugment config; the corruption net is pretrained first if absent). `data_dir`,
  `fashion_mnist_dir` and `download` are `adacorr.data.load_dataset`'s."""
  if os.path.isfile(os.path.join(out_dir, da_data.INFO_FILE)):
    return
  print(f"DeepAugment copy {out_dir} is missing: making it ({net}, {config_name}) ...",
        flush=True)
  info, (source,) = data_lib.load_dataset(dataset, splits=(split,), data_dir=data_dir,
                                          fashion_mnist_dir=fashion_mnist_dir,
                                          download=download)
  spec = backbone_spec(net, dataset, config_name=config_name)
  model, params = load_net(spec, image_shape=info.image_shape, seed=seed)
  start = time.time()
  result = make_copy(model, params, source, out_dir, seed=seed,
                     meta=dict(dataset=dataset, split=split, weights=f"workdir={spec['workdir']}",
                               source_examples=source.num_examples))
  print(f"Wrote {result['count']} images to {out_dir} in {time.time() - start:.1f} s.",
        flush=True)


def ensure_copies(config) -> None:
  """Makes every DeepAugment copy a training config names that is not there yet (its
  `deepaugment_dirs`; see `experiments/configs/deepaugment_copies.py`)."""
  from experiments.configs import deepaugment_copies  # pylint: disable=import-outside-toplevel
  for copy in deepaugment_copies.missing(config):
    ensure_copy(**copy, data_dir=config.get("data_dir"),
                fashion_mnist_dir=config.get("fashion_mnist_dir"),
                download=bool(config.get("download", False)))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.out_dir:
    raise app.UsageError("--out_dir is required.")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if FLAGS.dataset not in data_lib.DATASETS:
    raise app.UsageError(f"--dataset={FLAGS.dataset!r} is not one of "
                         f"{sorted(data_lib.DATASETS)}.")
  info, (source,) = data_lib.load_dataset(
      FLAGS.dataset, splits=(FLAGS.split,), data_dir=FLAGS.data_dir,
      fashion_mnist_dir=FLAGS.fashion_mnist_dir, download=FLAGS.download)
  net_kwargs = json.loads(FLAGS.net_kwargs) if FLAGS.net_kwargs else None
  spec = backbone_spec(FLAGS.net, FLAGS.dataset, config_name=FLAGS.config_name,
                       torch_weights=FLAGS.torch_weights, random_init=FLAGS.random_init,
                       net_kwargs=net_kwargs, root=FLAGS.corruption_net_dir)
  start = time.time()
  net, params = load_net(spec, image_shape=info.image_shape, seed=FLAGS.seed)
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  print(f"Loaded {type(net).__name__} ({count:,} params) in {time.time() - start:.1f} s; "
        f"distorting {FLAGS.dataset}/{FLAGS.split} "
        f"into {FLAGS.out_dir}", flush=True)
  weights = (f"torch_weights={spec['torch_weights']}" if spec.get("torch_weights")
             else "init=random" if spec.get("init") == "random" else f"workdir={spec['workdir']}")
  meta = dict(dataset=FLAGS.dataset, split=FLAGS.split, weights=weights,
              source_examples=source.num_examples)
  start = time.time()
  result = make_copy(net, params, source, FLAGS.out_dir, batch_size=FLAGS.batch_size,
                     chunk_size=FLAGS.chunk_size, seed=FLAGS.seed,
                     num_examples=FLAGS.num_examples, max_chunks=FLAGS.max_chunks, meta=meta)
  if result is not None:
    print(f"Wrote {result['count']} images to {FLAGS.out_dir} in {time.time() - start:.1f} s.")


if __name__ == "__main__":
  app.run(main)
