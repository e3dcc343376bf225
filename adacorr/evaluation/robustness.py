"""How robust is this model? One call: `evaluate(logits_fn, images, labels, key=...)`.

Any JAX model: a batched `logits_fn(x) -> (B, K)` on NHWC float images in [0, 1] (flax,
haiku, equinox or plain jax; normalisation inside), the test images and labels as arrays.
No flax module, run directory or disk is needed. Sections, each run when asked:

  clean        accuracy and calibration (ECE before / after temperature scaling)
  corruptions  accuracy per corruption and severity, mean, mCE (and relative mCE with a
               baseline): generated in memory on device (`adacorr.corruptions`, per-example
               keys, quantised to 256 levels like a stored -C set) or a published set
               (CIFAR-10-C's `.npy` layout, ImageNet-C's folders, or a mapping of arrays)
  autoattack   AutoAttack (`attacks.autoattack`, 'standard' by default) per threat model
  lpips        LPA and PPGD (Laidlaw et al. 2021) per LPIPS bound, given a feature network

Every batch is sharded over every device of the mesh (`parallel.make_mesh()`): the
numbers equal the one-device ones. The clean and corruption sections also run as several
processes (the attack sections need one). The run report (`run.report`,
`python -m experiments.evaluate`) and the registry's `evaluate_clean` /
`evaluate_corruptions` are these same sections on a `data.Source`. The result (`Robustness`) has `to_dict`
(RobustBench-style fields), `to_json`, `to_markdown` and `save` (JSON, markdown, plots).

    result = adacorr.evaluate(logits_fn, images, labels, key=jax.random.key(0),
                              threat_models={"linf": ["8/255"], "l2": ["0.5"]},
                              corruptions="benchmark")
    print(result.to_markdown())
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from adacorr import attacks
from adacorr import corruptions as corruptions_lib
from adacorr import data as data_lib
from adacorr import metrics
from adacorr import parallel
from adacorr.attacks.autoattack import NUM_TARGETS
from adacorr.core import checks
from adacorr.data import corrupted as corrupted_lib
from adacorr.data.imagenet import decode_resize_center_crop
from adacorr.evaluation import clean as clean_lib
from adacorr.evaluation import plots
from adacorr.evaluation.radius import parse_radius

AUTOATTACK_VERSIONS = ("standard", "fast", "custom", "none")
CORRUPTION_SETS = ("benchmark", "all")
DEFAULT_THREAT_MODELS = {"linf": ("8/255",)}
PERCEPTUAL_ATTACKS = ("LPA", "PPGD")


@dataclasses.dataclass
class Robustness:
  """The numbers of `evaluate`; accuracies are fractions in [0, 1], (m)CEs in percent.

  Attributes:
    num_examples: N, the images evaluated.
    clean_accuracy: top-1 accuracy on the clean images.
    calibration: `evaluation.calibration` of the clean logits ('ece', 'temperature',
      'ece_after_temperature', ..., 'reliability'), or None (N < 2).
    autoattack: one dict per threat model, in order: 'threat_model' ('linf 8/255'),
      'norm', 'eps' (as given), 'eps_value', 'attack' (what ran: 'AutoAttack' only for
      the standard version at full budget, else e.g. 'APGD-CE+APGD-T(1) 20 it'),
      'version', 'robust_accuracy', 'per_component' (robust accuracy after each
      component and all before it), 'num_attacked', 'seconds'.
    corruptions: None, or 'source' ('generated' or 'published'), 'params' (the
      generated corruptions' table), 'accuracy' ({name: [accuracy at severity 1..5]}),
      'mean_accuracy' (over the benchmark corruptions evaluated), 'mce' (None unless
      all 15 benchmark corruptions were evaluated), 'mce_baseline' (what mCE is
      relative to), 'relative_mce' (None without a baseline).
    lpips: None, or 'bounds', 'accuracy' (under every perceptual attack, per bound),
      'per_attack', 'attacks', 'steps'.
    seconds: wall time per section (compilation included).
  """
  num_examples: int
  clean_accuracy: float
  calibration: dict | None = None
  autoattack: list = dataclasses.field(default_factory=list)
  corruptions: dict | None = None
  lpips: dict | None = None
  seconds: dict = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready dict with RobustBench-style fields: 'clean_acc', 'autoattack_acc'
    ({threat model: robust accuracy}), 'corruptions_acc' (mean), 'corruptions_mce', and
    the sections in full ('calibration', 'autoattack', 'corruptions', 'lpips')."""
    out = {
        "num_examples": self.num_examples,
        "clean_acc": self.clean_accuracy,
        "ece": None if self.calibration is None else self.calibration["ece"],
        "autoattack_acc": {r["threat_model"]: r["robust_accuracy"] for r in self.autoattack},
        "autoattack_attack": {r["threat_model"]: r["attack"] for r in self.autoattack},
    }
    if self.corruptions is not None:
      out.update({"corruptions_acc": self.corruptions["mean_accuracy"],
                  "corruptions_mce": self.corruptions["mce"],
                  "corruptions_mce_baseline": self.corruptions["mce_baseline"],
                  "corruptions_relative_mce": self.corruptions["relative_mce"]})
    out.update({"calibration": self.calibration, "autoattack": self.autoattack,
                "corruptions": self.corruptions, "lpips": self.lpips,
                "seconds": self.seconds})
    return out

  def to_json(self, path: str | None = None) -> str:
    """`to_dict` as JSON text; also written to `path` when given."""
    text = json.dumps(self.to_dict(), indent=1)
    if path is not None:
      with open(path, "w") as f:
        f.write(text + "\n")
    return text

  def to_markdown(self) -> str:
    """The result as markdown tables (accuracies in %)."""
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"
    lines = [f"## Robustness on {self.num_examples} examples", "",
             "| metric | value |", "|---|---:|", f"| clean accuracy | {pct(self.clean_accuracy)} |"]
    if self.calibration is not None:
      lines.append(f"| ECE (%) | {100 * self.calibration['ece']:.2f} |")
    for r in self.autoattack:
      lines.append(f"| {r['attack']} {r['threat_model']} | {pct(r['robust_accuracy'])} |")
    c = self.corruptions
    if c is not None:
      lines.append(f"| corruptions, mean accuracy | {pct(c['mean_accuracy'])} |")
      if c["mce"] is not None:
        lines.append(f"| mCE ({c['mce_baseline']}) | {c['mce']:.2f} |")
      if c["relative_mce"] is not None:
        lines.append(f"| relative mCE ({c['mce_baseline']}) | {c['relative_mce']:.2f} |")
    if self.lpips is not None:
      for b, a in zip(self.lpips["bounds"], self.lpips["accuracy"]):
        lines.append(f"| {'+'.join(self.lpips['attacks'])} LPIPS {b:g} | {pct(a)} |")
    if self.autoattack:
      lines += ["", "### AutoAttack, robust accuracy (%) after each component", "",
                "| threat model | attack | " + " | ".join(["clean", "components", "robust"])
                + " | seconds |", "|---|---|---:|---|---:|---:|"]
      for r in self.autoattack:
        comps = ", ".join(f"{k} {100 * v:.1f}" for k, v in r["per_component"].items())
        lines.append(f"| {r['threat_model']} | {r['attack']} | {pct(self.clean_accuracy)} | "
                     f"{comps} | {pct(r['robust_accuracy'])} | {r['seconds']:.1f} |")
    if c is not None:
      src = c["source"] + (f", {c['params']} table" if c.get("params") else "")
      lines += ["", f"### Accuracy (%) per corruption and severity ({src})", "",
                "| corruption | 1 | 2 | 3 | 4 | 5 | mean |", "|---|---:|---:|---:|---:|---:|---:|"]
      for name, accs in c["accuracy"].items():
        lines.append(f"| {name} | " + " | ".join(pct(a) for a in accs)
                     + f" | {pct(float(np.mean(accs)))} |")
    lines += ["", "Seconds per section: " + ", ".join(
        f"{k} {v:.1f}" for k, v in self.seconds.items())]
    return "\n".join(lines) + "\n"

  def save(self, output_dir: str) -> dict[str, str]:
    """Writes result.json, result.md and the plots (corruptions.png: accuracy per
    corruption and severity; reliability.png: the reliability diagram) to `output_dir`.
    Returns {what: path}."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, "result.json"),
             "markdown": os.path.join(output_dir, "result.md")}
    self.to_json(paths["json"])
    with open(paths["markdown"], "w") as f:
      f.write(self.to_markdown())
    if self.corruptions is not None:
      paths["corruptions"] = os.path.join(output_dir, "corruptions.png")
      acc = self.corruptions["accuracy"]
      plots.save_heatmap(acc, list(acc), self.clean_accuracy, paths["corruptions"])
    if self.calibration is not None:
      cal = self.calibration
      paths["reliability"] = os.path.join(output_dir, "reliability.png")
      plots.save_reliability_diagram(cal["reliability"], cal["ece"],
                                     cal["ece_before_temperature_same_half"],
                                     cal["ece_after_temperature"], cal["temperature"],
                                     paths["reliability"])
    return paths


# --------------------------------------------------------------------------- helpers


def _as_images(images, name: str = "images") -> jax.Array:
  """uint8 (0-255) or float [0, 1] NHWC -> float32 [0, 1], checked."""
  if isinstance(images, (np.ndarray, jax.Array)) and images.dtype == np.uint8:
    images = jnp.asarray(images, jnp.float32) / 255.0
  images = jnp.asarray(images)
  checks.check_images(images, name, allow_empty=False)
  return images.astype(jnp.float32)


def _padded(a, size: int):
  """`a` with rows appended (copies of its last row) up to `size` rows."""
  if a.shape[0] == size:
    return a
  return jnp.concatenate([a, jnp.repeat(a[-1:], size - a.shape[0], axis=0)])


def _batches(n: int, batch_size: int, mesh):
  """(start, stop, padded size) of each batch: sizes a multiple of the device count."""
  d = mesh.devices.size
  bs = -(-min(batch_size, n) // d) * d
  for start in range(0, n, bs):
    yield start, min(start + bs, n), bs


def _threat_models(threat_models, image_shape=None) -> list[tuple[str, str, float]]:
  """[(norm, eps text, eps)] from {norm: [radius, ...]} or [(norm, radius), ...]."""
  if threat_models is None:
    return []
  if isinstance(threat_models, Mapping):
    pairs = [(norm, r) for norm, radii in threat_models.items()
             for r in ([radii] if isinstance(radii, (str, int, float)) else radii)]
  else:
    pairs = list(threat_models)
  out = []
  for pair in pairs:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
      raise ValueError(f"threat_models: {pair!r} is not a (norm, radius) pair; pass e.g. "
                       "{'linf': ['8/255'], 'l2': ['0.5']}.")
    norm, text = pair
    checks.check_norm(norm, "threat_models norm")
    # The checks every evaluation entry point shares: finite, > 0, l_inf <= 1, l2 < sqrt(D).
    eps = checks.check_radius_for_evaluation(text, norm, f"threat_models[{norm!r}]",
                                             image_shape=image_shape)
    text = text if isinstance(text, str) else f"{eps:g}"
    out.append((norm, text, eps))
  return out


def _corruption_names(corruptions) -> list[str] | None:
  if corruptions is None:
    return None
  if isinstance(corruptions, str) and corruptions in CORRUPTION_SETS:
    return list(corruptions_lib.BENCHMARK_CORRUPTIONS if corruptions == "benchmark"
                else corruptions_lib.ALL_CORRUPTIONS)
  if isinstance(corruptions, (str, Mapping)):
    return None  # a directory or a mapping: published
  names = list(corruptions) if isinstance(corruptions, (list, tuple)) else None
  unknown = [n for n in names or () if n not in corruptions_lib.ALL_CORRUPTIONS]
  if unknown or not names:
    raise ValueError(f"corruptions: give 'benchmark', 'all', a list of names from "
                     f"{corruptions_lib.ALL_CORRUPTIONS}, a CIFAR-10-C directory or a "
                     f"{{(name, severity): images}} mapping (got {type(corruptions).__name__}"
                     f"{'; unknown names ' + str(unknown) if unknown else ''}).")
  return names


def load_cifar10c(path: str, names: Sequence[str] | None = None, *,
                  num_examples: int | None = None) -> tuple[dict, np.ndarray]:
  """A published set in CIFAR-10-C's layout: `<path>/<name>.npy` (5 N, H, W, C) uint8,
  severities 1..5 stacked in blocks of N in test-set order, and `<path>/labels.npy`.

  Returns:
    `({(name, severity): uint8 images (n, H, W, C)}, labels (n,))`, n = `num_examples`
    (default N), names: those given (default: every benchmark name present).
  Raises:
    ValueError: if `path` has no labels.npy, a name is missing, or a file's rows are not
      5 blocks.
  """
  labels_path = os.path.join(path, "labels.npy")
  if not os.path.exists(labels_path):
    raise ValueError(f"corruptions={path!r} is not a CIFAR-10-C directory (no labels.npy).")
  if names is None:
    names = [n for n in corruptions_lib.ALL_CORRUPTIONS
             if os.path.exists(os.path.join(path, f"{n}.npy"))]
  labels = np.load(labels_path, mmap_mode="r")
  if labels.shape[0] % 5:
    raise ValueError(f"{labels_path} has {labels.shape[0]} rows, not 5 severities x N.")
  per = labels.shape[0] // 5
  n = per if num_examples is None else min(int(num_examples), per)
  sets = {}
  for name in names:
    file = os.path.join(path, f"{name}.npy")
    if not os.path.exists(file):
      raise ValueError(f"corruptions={path!r} has no {name}.npy.")
    arr = np.load(file, mmap_mode="r")
    if arr.shape[0] != labels.shape[0]:
      raise ValueError(f"{file} has {arr.shape[0]} rows, labels.npy {labels.shape[0]}.")
    for s in corruptions_lib.SEVERITIES:
      sets[(name, s)] = np.asarray(arr[(s - 1) * per:(s - 1) * per + n])
  return sets, np.asarray(labels[:n])


def imagenet_c_files(path: str, name: str, severity: int, *,
                     class_index: Mapping[str, int] | None = None
                     ) -> tuple[list[str], np.ndarray]:
  """The images of one ImageNet-C folder `<path>/<name>/<severity>/<wnid>/<file>`, in
  order (WordNet ids sorted, then files sorted), and their labels: the index of the
  WordNet id in the sorted list (tfds' and torchvision's ImageNet labels), or
  `class_index[wnid]` (e.g. a subset's relabelling; WordNet ids not in it are skipped).

  Raises:
    ValueError: if the folder does not exist.
  """
  folder = os.path.join(path, name, str(severity))
  if not os.path.isdir(folder):
    raise ValueError(f"corruptions={path!r}: no ImageNet-C folder {folder}.")
  wnids = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
  files, labels = [], []
  for i, wnid in enumerate(wnids):
    if class_index is not None and wnid not in class_index:
      continue
    for f in sorted(os.listdir(os.path.join(folder, wnid))):
      files.append(os.path.join(folder, wnid, f))
      labels.append(i if class_index is None else class_index[wnid])
  return files, np.asarray(labels, np.int64)


def load_imagenet_c(path: str, name: str, severity: int, *, image_size: int,
                    num_examples: int | None = None,
                    class_index: Mapping[str, int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """The first `num_examples` images of one ImageNet-C folder (`imagenet_c_files`'s
  order) as uint8 (n, image_size, image_size, 3) (shorter side resized, centre crop:
  `data.imagenet.decode_resize_center_crop`) and their labels (n,)."""
  files, labels = imagenet_c_files(path, name, severity, class_index=class_index)
  n = len(files) if num_examples is None else min(int(num_examples), len(files))
  images = [decode_resize_center_crop(open(f, "rb").read(), image_size) for f in files[:n]]
  images = np.stack(images) if n else np.zeros((0, image_size, image_size, 3), np.uint8)
  return images, labels[:n]


def _published(path: str, image_size: int, y) -> dict:
  """{(name, severity): thunk -> images} of a published directory (CIFAR-10-C's `.npy`
  layout or ImageNet-C's folders) for the first N = len(y) images, labels checked
  against `y`."""
  n = int(y.shape[0])
  if os.path.exists(os.path.join(path, "labels.npy")):
    sets, published_labels = load_cifar10c(path, num_examples=n)
    if published_labels.shape[0] < n or not np.array_equal(published_labels[:n],
                                                            np.asarray(y)):
      raise ValueError(f"corruptions={path!r}: its labels.npy does not match `labels` "
                       "(pass the first N test images and labels, in order).")
    return {k: (lambda v=v: v) for k, v in sets.items()}
  names = [nm for nm in corruptions_lib.ALL_CORRUPTIONS
           if os.path.isdir(os.path.join(path, nm, "1"))]
  if not names:
    raise ValueError(f"corruptions={path!r} is not a CIFAR-10-C directory (no labels.npy) "
                     "nor ImageNet-C folders (<name>/<severity>/<wnid>/<image>).")

  def thunk(nm, s):
    images, labels = load_imagenet_c(path, nm, s, image_size=image_size, num_examples=n)
    if labels.shape[0] < n or not np.array_equal(labels, np.asarray(y)):
      raise ValueError(f"corruptions={path!r}: the labels of {nm}/{s} (sorted WordNet ids) "
                       "do not match `labels` (pass the images in the folders' order).")
    return images
  return {(nm, s): (lambda nm=nm, s=s: thunk(nm, s)) for nm in names
          for s in corruptions_lib.SEVERITIES}


def _quantised(x):
  """round(255 x) / 255: the levels of a stored (uint8) -C set."""
  return jnp.round(x * 255.0) / 255.0


@dataclasses.dataclass(frozen=True)
class _Corrupt:
  """The on-device transform of a generated -C set (hashable: one compilation per set)."""
  name: str
  severity: int
  params: str

  def __call__(self, x, keys):
    return _quantised(corruptions_lib.corrupt(x, self.name, self.severity, keys,
                                              params=self.params))


def _num_rows(rows) -> int:
  return rows.num_examples if isinstance(rows, data_lib.Source) else int(rows.shape[0])


def _source_labels(source, n: int) -> np.ndarray:
  """The labels of the first `n` examples of a `Source`, read in chunks."""
  out = []
  for start in range(0, n, 1024):
    out.append(np.asarray(source.get(np.arange(start, min(start + 1024, n)))[1]))
  return np.concatenate(out).astype(np.int64)


def _source_images(source, n: int) -> jax.Array:
  """The first `n` images of a `Source` as float32 [0, 1] (for the attack sections)."""
  out = []
  for start in range(0, n, 1024):
    out.append(np.asarray(source.get(np.arange(start, min(start + 1024, n)))[0]))
  return jnp.asarray(np.concatenate(out), jnp.float32) / 255.0


# --------------------------------------------------------------------------- sections


def _corruption_section(logits_fn, rows, y, corruptions, *, clean_accuracy, mesh,
                        batch_size, seed, params, baseline, progress) -> dict:
  """Accuracy per corruption and severity and their summary; `rows` are the clean
  images (an array or a `data.Source`; None when every set is given), `y` (N,) labels."""
  names = _corruption_names(corruptions)
  n = int(y.shape[0])
  image_shape = None if rows is None else (
      tuple(rows.image_shape) if isinstance(rows, data_lib.Source) else tuple(rows.shape[1:]))
  if names is not None:  # generated on device
    if rows is None:
      raise ValueError("generated corruptions need the clean images.")
    source = "generated"
    params = params or ("cifar10" if max(image_shape[:2]) <= 64 else "imagenet")
    checks.check_choice(params, corruptions_lib.PARAM_TABLES, "corruption_params")
    work = [(nm, s) for nm in names for s in corruptions_lib.SEVERITIES]
  else:
    source = "published"
    params = None
    if isinstance(corruptions, str):
      if rows is None:
        raise ValueError("a published directory needs the clean images.")
      sets = _published(corruptions, image_shape[0], y)  # loaded one set at a time
    elif isinstance(corruptions, Mapping):
      sets = {k: (v if isinstance(v, data_lib.Source) else (lambda v=v: v))
              for k, v in corruptions.items()}
    else:
      raise ValueError(f"corruptions={corruptions!r} is not a known form (see `evaluate`).")
    work = sorted(sets)
    for nm, s in work:
      if nm not in corruptions_lib.ALL_CORRUPTIONS or s not in corruptions_lib.SEVERITIES:
        raise ValueError(f"corruptions: unknown set ({nm!r}, {s!r}); names from "
                         f"{corruptions_lib.ALL_CORRUPTIONS}, severities 1..5.")
    names = list(dict.fromkeys(nm for nm, _ in work))
    for nm in names:
      if sorted(s for m, s in work if m == nm) != list(corruptions_lib.SEVERITIES):
        raise ValueError(f"corruptions: {nm!r} needs every severity 1..5.")
  accuracy = {nm: [0.0] * len(corruptions_lib.SEVERITIES) for nm in names}
  bar = tqdm.tqdm(work, desc="corruptions", file=sys.stdout, disable=not progress)
  for nm, s in bar:
    bar.set_postfix_str(f"{nm} {s}")
    where = f"corruptions[({nm!r}, {s})]"
    if source == "generated":
      keys = corrupted_lib.example_keys(seed, nm, s, np.arange(n))
      logits, _ = clean_lib.logits_of(logits_fn, rows, batch_size=batch_size, mesh=mesh,
                                      transform=_Corrupt(nm, s, params), keys=keys)
    elif isinstance(sets[(nm, s)], data_lib.Source):
      src = sets[(nm, s)]
      if src.num_examples < n or (image_shape and tuple(src.image_shape) != image_shape):
        raise ValueError(f"{where} has {src.num_examples} images of shape "
                         f"{tuple(src.image_shape)}; {n} of shape {image_shape} are needed.")
      logits, set_labels = clean_lib.logits_of(logits_fn, data_lib.first_n(src, n),
                                               batch_size=batch_size, mesh=mesh)
      if not np.array_equal(set_labels, np.asarray(y)):
        raise ValueError(f"{where}: its labels differ from the clean labels (the sets must "
                         "hold the same test images, in order).")
    else:
      xc = _as_images(sets[(nm, s)](), where)
      if xc.shape[0] != n or (image_shape and tuple(xc.shape[1:]) != image_shape):
        raise ValueError(f"{where} has shape {xc.shape}; ({n}, *{image_shape}) is needed.")
      logits, _ = clean_lib.logits_of(logits_fn, xc, batch_size=batch_size, mesh=mesh)
    _check_finite_logits(logits, f"the {nm} images at severity {s}")
    accuracy[nm][s - 1] = float(np.mean(np.argmax(logits, -1) == np.asarray(y)))
  return {"source": source, "params": params, "accuracy": accuracy,
          **corruption_summary(accuracy, clean_accuracy=clean_accuracy, baseline=baseline)}


def corruption_summary(accuracy: Mapping[str, Sequence[float]], *,
                       clean_accuracy: float | None = None, baseline=None) -> dict:
  """Mean accuracy and mCE of per-corruption accuracies ({name: [severity 1..5]}).

  Returns:
    'mean_accuracy' (over the benchmark corruptions present and their severities; None
    without any), 'mce' (in %, None unless all 15 benchmark corruptions are present:
    CIFAR style (unnormalised) without a baseline, ImageNet style (normalised by the
    baseline's errors) with one), 'mce_baseline' (what mCE is relative to) and
    'relative_mce' (None without a baseline). `baseline`: as `_baseline` returns.
  """
  bench = [nm for nm in corruptions_lib.BENCHMARK_CORRUPTIONS if nm in accuracy]
  complete = len(bench) == len(corruptions_lib.BENCHMARK_CORRUPTIONS)
  errors = {nm: [1.0 - a for a in accuracy[nm]] for nm in bench}
  mce = relative = None
  if baseline is None:
    label = "unnormalised, CIFAR style"
    if complete:
      mce = float(metrics.mce(errors, style="cifar"))
  else:
    label = f"relative to {baseline['name']}"
    if complete:
      base_err = {nm: [1.0 - a for a in baseline["accuracy"][nm]] for nm in bench}
      mce = float(metrics.mce(errors, style="imagenet", alexnet_errors=base_err))
      if clean_accuracy is not None:
        relative = float(metrics.relative_mce(errors, 1.0 - clean_accuracy, base_err,
                                              1.0 - baseline["clean_accuracy"]))
  return {"mean_accuracy": float(np.mean([accuracy[nm] for nm in bench])) if bench else None,
          "mce": mce, "mce_baseline": label, "relative_mce": relative}


def _baseline(baseline) -> dict | None:
  """{'name', 'clean_accuracy', 'accuracy'} from 'alexnet', a `Robustness`, or a dict."""
  if baseline is None:
    return None
  if isinstance(baseline, str):
    if baseline != "alexnet":
      raise ValueError(f"baseline={baseline!r}: 'alexnet' (ImageNet-C), a Robustness result "
                       "or {'name', 'clean_accuracy', 'accuracy'}.")
    return {"name": "AlexNet (Hendrycks & Dietterich 2019)",
            "clean_accuracy": 1.0 - metrics.ALEXNET_CLEAN_ERR,
            "accuracy": {nm: [1.0 - e] * 5 for nm, e in metrics.ALEXNET_ERR.items()}}
  if isinstance(baseline, Robustness):
    if baseline.corruptions is None:
      raise ValueError("baseline has no corruption section.")
    return {"name": "baseline", "clean_accuracy": baseline.clean_accuracy,
            "accuracy": baseline.corruptions["accuracy"]}
  if isinstance(baseline, Mapping) and {"clean_accuracy", "accuracy"} <= set(baseline):
    return {"name": str(baseline.get("name", "baseline")), **dict(baseline)}
  raise ValueError(f"baseline={baseline!r}: 'alexnet', a Robustness result or a dict with "
                   "'clean_accuracy' and 'accuracy' ({name: [5 accuracies]}).")


def _check_finite_logits(logits, where: str) -> None:
  bad = checks.nonfinite_summary(logits)
  if bad is not None:
    raise ValueError(f"logits_fn returned NaN or inf logits on {where} ({bad}).")


def _lpips_section(logits_fn, features_fn, x, y, key, *, bounds, attacks_, num_steps,
                   lambda_steps, mesh, batch_size, progress) -> dict:
  for a in attacks_:
    checks.check_choice(a, PERCEPTUAL_ATTACKS, "lpips_attacks")
  bounds = [parse_radius(b) for b in bounds]
  if not bounds or not all(np.isfinite(b) and b > 0 for b in bounds):
    raise ValueError(f"lpips_bounds={bounds!r} must be finite numbers > 0.")

  @jax.jit
  def run(xb, yb, kb, bound):
    oks = []
    for j, name in enumerate(attacks_):
      ks = jax.vmap(lambda k, j=j: jax.random.fold_in(k, j))(kb)
      fn = attacks.lpa if name == "LPA" else attacks.ppgd
      extra = {"lambda_steps": lambda_steps} if name == "LPA" else {}
      xa = fn(logits_fn, features_fn, xb, yb, ks, bound=bound, num_steps=num_steps, **extra)
      oks.append(jnp.argmax(logits_fn(xa), -1) == yb)
    return jnp.stack(oks, -1)

  n = x.shape[0]
  keys = jax.random.split(key, n)
  sharding = parallel.batch_sharding(mesh)
  clean_logits, _ = clean_lib.logits_of(logits_fn, x, batch_size=batch_size, mesh=mesh)
  clean_ok = np.argmax(clean_logits, -1) == np.asarray(y)
  acc, per = [], {a: [] for a in attacks_}
  bar = tqdm.tqdm(total=len(bounds) * len(list(_batches(n, batch_size, mesh))),
                  desc="+".join(attacks_), file=sys.stdout, disable=not progress)
  for bound in bounds:
    ok = np.zeros((n, len(attacks_)), bool)
    for start, stop, size in _batches(n, batch_size, mesh):
      batch = jax.device_put(tuple(_padded(a[start:stop], size) for a in (x, y, keys)),
                             sharding)
      ok[start:stop] = np.asarray(run(*batch, jnp.float32(bound)))[:stop - start]
      bar.update()
    acc.append(float(np.mean(clean_ok & ok.all(-1))))
    for j, a in enumerate(attacks_):
      per[a].append(float(np.mean(clean_ok & ok[:, j])))
  bar.close()
  return {"bounds": bounds, "attacks": list(attacks_), "steps": num_steps,
          "lambda_steps": lambda_steps, "accuracy": acc, "per_attack": per}


# --------------------------------------------------------------------------- evaluate


def evaluate(logits_fn: Callable[[jax.Array], jax.Array], images, labels=None, *, key=None,
             threat_models=DEFAULT_THREAT_MODELS, autoattack: str = "standard",
             aa_components: Sequence[str] | None = None, aa_steps: int = 100,
             aa_queries: int = 5000, aa_targets: int = NUM_TARGETS,
             corruptions=None, corruption_params: str | None = None, corruption_seed: int = 0,
             baseline=None, calibration: bool = True,
             lpips_features: Callable | None = None, lpips_bounds: Sequence = ("0.5",),
             lpips_attacks: Sequence[str] = PERCEPTUAL_ATTACKS, lpips_steps: int = 40,
             lpips_lambda_steps: int = 5,
             batch_size: int = 256, mesh=None, progress: bool = True,
             log: Callable[[str], None] | None = print) -> Robustness:
  """Clean, corruption, AutoAttack and perceptual robustness of any JAX model, one call.

  Args:
    logits_fn: x (B, H, W, C) float32 in [0, 1] -> logits (B, K); the model in
      evaluation mode, batched, jittable (its parameters closed over or bound).
    images: (N, H, W, C) float in [0, 1] (or uint8 0-255), N >= 1; or a `data.Source`
      (read batch by batch for the clean and corruption sections, so a test set larger
      than memory works; loaded whole for the attack sections).
    labels: (N,) int in [0, K); None when `images` is a `Source` (its labels).
    key: a PRNG key: AutoAttack's and LPA's randomness (per example); needed only when
      an attack section runs.
    threat_models: {norm: [radius, ...]} or [(norm, radius), ...]; norm 'linf' or 'l2', a
      radius a number or text such as '8/255'; default l_inf 8/255. None or {}: skip.
      A radius must be finite and > 0; an l_inf radius > 1 (0-255 units) is an error.
    autoattack: 'standard' (APGD-CE, APGD-T, FAB-T, Square: the RobustBench number),
      'fast' (APGD-CE + APGD-T), 'custom' (`aa_components`) or 'none'. (A randomised
      model's 'rand' version: `attacks.autoattack` directly.)
    aa_steps, aa_queries, aa_targets: APGD/FAB iterations (100), Square's queries
      (5000), APGD-T/FAB-T targets (9). Anything less is labelled with its budget.
    corruptions: None (skip); 'benchmark' (the 15 of the mCE) or 'all' (19) or a list of
      names, generated in memory on device (`adacorr.corruptions`, keys per example as
      `data.corrupted`, quantised to 256 levels as a stored set); a published directory:
      CIFAR-10-C's (`load_cifar10c`: `images` must be the first N test images, in
      order) or ImageNet-C's folders (`load_imagenet_c`, read one set at a time:
      `images` the first N in the folders' order, WordNet ids then files sorted); or a
      mapping {(name, severity): images (N, H, W, C)}.
    corruption_params: the generated corruptions' table, 'cifar10' or 'imagenet'
      (default by image size: 'cifar10' up to 64 pixels).
    corruption_seed: the generated corruptions' seed.
    baseline: mCE normalisation: None (CIFAR style, unnormalised), 'alexnet' (ImageNet-C:
      AlexNet's published errors), or another model's `Robustness` (or {'name',
      'clean_accuracy', 'accuracy'}); with a baseline, relative mCE too.
    calibration: compute the ECE section.
    lpips_features: a feature network x -> [feature maps] for LPIPS (e.g.
      `perceptual.model_features_fn(...)`); None skips LPA/PPGD.
    lpips_bounds, lpips_attacks, lpips_steps, lpips_lambda_steps: the perceptual section.
    batch_size: examples per batch (rounded up to a multiple of the device count).
    mesh: the devices (default `parallel.make_mesh()`: every device of every process).
      Several processes (`jax.distributed`) run the clean and corruption sections, each
      process passing the same images and reading its rows of every batch; the attack
      sections need one process.
    progress: tqdm bars on stdout for the long sections.
    log: one line per section and AutoAttack component (None: quiet).

  Returns:
    a `Robustness` (`to_dict`, `to_json`, `to_markdown`, `save`).

  Raises:
    ValueError: naming the argument, for bad images, labels, radii, options, or NaN/inf
      logits.
  """
  is_source = isinstance(images, data_lib.Source)
  if is_source:
    if labels is not None:
      raise ValueError("labels must be None when images is a data.Source (its labels are "
                       "used).")
    rows, x, y = images, None, None
    n = int(images.num_examples)
    if n < 1:
      raise ValueError("images is an empty Source: nothing to evaluate.")
  else:
    x = _as_images(images)
    rows, n = x, int(x.shape[0])
    y = jnp.asarray(labels)
    checks.check_labels(y, n)
  checks.check_choice(autoattack, AUTOATTACK_VERSIONS, "autoattack")
  checks.check_steps(batch_size, "batch_size", minimum=1)
  tms = (_threat_models(threat_models, tuple(images.image_shape) if is_source else x.shape)
         if autoattack != "none" else [])
  if autoattack == "custom" and not aa_components:
    raise ValueError("autoattack='custom' needs aa_components=[...] from "
                     f"{attacks.COMPONENTS}.")
  if tms or lpips_features is not None:
    checks.check_key(key, reason="the attacks' randomness")
    if jax.process_count() > 1:
      raise ValueError("evaluate's attack sections (AutoAttack, LPA) run in one process "
                       "(every local device); with several processes evaluate the clean "
                       "and corruption sections only (threat_models=None, "
                       "lpips_features=None).")
  if log is not None and not callable(log):
    raise ValueError(f"log={log!r} must be a callable such as print, or None.")
  base = _baseline(baseline)
  mesh = parallel.make_mesh() if mesh is None else mesh
  say = log or (lambda _: None)
  seconds = {}

  tic = time.time()
  logits, source_labels = clean_lib.logits_of(logits_fn, rows, batch_size=batch_size,
                                              mesh=mesh)
  _check_finite_logits(logits, "the clean images")
  if logits.ndim != 2:
    raise ValueError(f"logits_fn must return (B, K) logits, got shape {logits.shape}.")
  if is_source:
    y = jnp.asarray(source_labels)
  checks.check_labels(y, n, num_classes=logits.shape[-1])
  clean_acc = float(np.mean(np.argmax(logits, -1) == np.asarray(y)))
  cal = clean_lib.calibration(logits, np.asarray(y)) if calibration and n >= 2 else None
  seconds["clean"] = time.time() - tic
  say(f"clean accuracy {100 * clean_acc:.2f}% on {n} examples")
  result = Robustness(num_examples=n, clean_accuracy=clean_acc, calibration=cal,
                      seconds=seconds)

  if corruptions is not None:
    tic = time.time()
    result.corruptions = _corruption_section(
        logits_fn, rows, y, corruptions, clean_accuracy=clean_acc, mesh=mesh,
        batch_size=batch_size, seed=corruption_seed, params=corruption_params,
        baseline=base, progress=progress)
    seconds["corruptions"] = time.time() - tic
    say(f"corruptions: mean accuracy {100 * (result.corruptions['mean_accuracy'] or 0):.2f}%")

  if x is None and (tms or lpips_features is not None):
    x = _source_images(images, n)  # the attacks take arrays
  for i, (norm, text, eps) in enumerate(tms):
    tic = time.time()
    version = autoattack
    aa = attacks.autoattack(
        logits_fn, x, y, jax.random.fold_in(key, i), norm=norm, eps=eps, version=version,
        attacks=aa_components if version == "custom" else None, batch_size=batch_size,
        num_steps=aa_steps, num_queries=aa_queries, num_targets=aa_targets, mesh=mesh,
        log=say)
    result.autoattack.append({
        "threat_model": f"{norm} {text}", "norm": norm, "eps": text, "eps_value": eps,
        "attack": aa["label"], "version": version, "robust_accuracy": aa["robust_accuracy"],
        "per_component": aa["per_attack"], "num_attacked": aa["num_attacked"],
        "seconds": time.time() - tic})
  if tms:
    seconds["autoattack"] = sum(r["seconds"] for r in result.autoattack)

  if lpips_features is not None:
    tic = time.time()
    result.lpips = _lpips_section(
        logits_fn, lpips_features, x, y, jax.random.fold_in(key, 10_000),
        bounds=lpips_bounds, attacks_=tuple(lpips_attacks), num_steps=lpips_steps,
        lambda_steps=lpips_lambda_steps, mesh=mesh, batch_size=batch_size, progress=progress)
    seconds["lpips"] = time.time() - tic
  return result


# --------------------------------------------------------------------------- evaluators
# The registry's evaluators of a flax model (`model.apply(variables, x, train=False)`) on
# `data.Source`s: `evaluate`'s sections, the variables traced (one compilation per
# architecture).


def _model_logits_fn(model, variables):
  return attacks.traced_logits_fn(clean_lib.eval_apply(model), variables)


def evaluate_clean(model, variables, source, *, batch_size: int = 500, mesh=None,
                   with_calibration: bool = True) -> dict[str, Any]:
  """Clean accuracy (and calibration) of `model` on every example of `source`
  (`evaluate`'s clean section).

  Returns:
    dict with 'num_examples', 'accuracy' (in [0, 1]) and, if `with_calibration`,
    'calibration' (see `clean.calibration`; None for one example).
  """
  r = evaluate(_model_logits_fn(model, variables), source, None, key=None,
               threat_models=None, autoattack="none", calibration=with_calibration,
               batch_size=batch_size, mesh=mesh, progress=False, log=None)
  out = {"num_examples": r.num_examples, "accuracy": r.clean_accuracy}
  if with_calibration:
    out["calibration"] = r.calibration
  return out


def evaluate_corruptions(model, variables, sources, *, batch_size: int = 500, mesh=None,
                         num_examples: int = 0) -> dict[str, Any]:
  """Accuracy of `model` on every corrupted test set of `sources` (`evaluate`'s
  corruption section).

  Args:
    model, variables: a flax model and its variables.
    sources: `{(name, severity): Source}` with every severity 1..5 of each name (e.g.
      from `corruptions.corrupted_sources`), the same test images in the same order.
    batch_size, mesh: as for `clean.logits_of`.
    num_examples: evaluate on the first `num_examples` of each set (0: all).

  Returns:
    dict with 'accuracy' ({name: [accuracy at severity 1..5]}), 'mean_accuracy' (over
    the benchmark corruptions evaluated; None without any), 'mce' (CIFAR style, in %;
    None unless all 15 benchmark corruptions were evaluated), and 'source', 'params',
    'mce_baseline', 'relative_mce' as in `Robustness.corruptions`.

  Raises:
    ValueError: if a name lacks a severity, a name is unknown, or `sources` is empty.
  """
  if not sources:
    raise ValueError("sources is empty: give at least one (name, severity) set.")
  checks.check_steps(num_examples, "num_examples")
  first = next(iter(sources.values()))
  n = min(s.num_examples for s in sources.values())
  n = min(n, num_examples) if num_examples > 0 else n
  y = jnp.asarray(_source_labels(first, n))
  rows = data_lib.first_n(first, n)
  return _corruption_section(_model_logits_fn(model, variables), rows, y, dict(sources),
                             clean_accuracy=None, mesh=mesh, batch_size=batch_size, seed=0,
                             params=None, baseline=None, progress=True)
