"""The training engine's loop: data-parallel, checkpointed, resumable, logged.

`run(task, config, workdir, ...)` is the one loop: a `Task` says what is trained (a
classifier with a training method, `train_and_evaluate`; a corruption net,
`adacorr.train.corruption_nets.pretrain`) and the loop does the rest. It resumes from
the latest checkpoint in `workdir/checkpoints` if there is one. The batch of step `s`
and the PRNG key of step `s` depend only on the seed and `s`, so a run killed at any
point and resumed ends with the same parameters as an unbroken run.

A method may be a `StatefulLoss` (e.g. ANT): its state is part of the checkpointed
`TrainState`, and before the first step of every epoch, the first included, the loop runs
its `epoch_start` hook, then `epoch_start_step` on `epoch_start_steps` extra batches:
those of global steps `e * steps_per_epoch + i`, a pure function of the seed and e.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from adacorr import data as data_lib
from adacorr import methods
from adacorr import models
from adacorr import parallel
from adacorr.core.types import StatefulLoss
from adacorr.data import augment as augment_lib
from adacorr.data import deepaugment as deepaugment_data
from adacorr.train import config_checks
from adacorr.train import optim
from adacorr.train import preemption
from adacorr.train import step as step_lib
from adacorr.train.checkpoint import Checkpointer, latest_checkpoint_step
from adacorr.train.metric_writer import MetricWriter
from adacorr.train.state import TrainState, create_train_state

MakeLossFn = Callable[[Any, ml_collections.ConfigDict], step_lib.LossFn | StatefulLoss]
Hook = Callable[[int, TrainState, dict], None]


Preempted = preemption.Preempted


class NonFiniteLossError(FloatingPointError):
  """The loss or a gradient became NaN/inf; the run stopped and kept its last good checkpoint."""


def build_model(config: ml_collections.ConfigDict, info: data_lib.DatasetInfo):
  """The classifier of `config.model`, with the dataset's classes and statistics."""
  return models.get_model(
      config.model, num_classes=info.num_classes, mean=tuple(info.mean), std=tuple(info.std),
      dtype=jnp.dtype(config.get("compute_dtype", "float32")),
      **config.get("model_kwargs", {}))


def num_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  if config.get("num_steps", -1) > 0:
    return int(config.num_steps)
  return max(1, int(math.ceil(config.num_epochs * steps_per_epoch)))


@dataclasses.dataclass(frozen=True)
class Task:
  """What the engine trains: a classifier with a method, or a corruption net.

  `run` holds the scaffolding every run shares (workdir, checkpoints and exact resume,
  deterministic batches, windowed metrics, the non-finite stop, periodic evaluation,
  progress output, the summary); a task supplies what differs.

  Attributes:
    name: the progress bar's label (e.g. 'train', 'edsr').
    title: the start banner's first words, e.g. "Training preact_resnet18 on cifar10
      (50000 examples) with method=rlat"; `run` adds the steps, batch and devices.
    init_state: `init_state() -> TrainState`, the state of step 0 (also traced with
      `jax.eval_shape` to restore a checkpoint without running the initialisers).
    loss_fn: a `LossFn` or `StatefulLoss`; its `batch_stats` argument is the state's
      non-parameter model state (`TrainState.batch_stats`).
    tx, schedule: the optimizer and its learning-rate schedule (logged).
    eval_step: `eval_step(variables, batch, key) -> sums`, sums over the real (mask=1)
      examples including 'count'; the evaluation reports each sum / count. Batch `b`'s
      key is `fold_in(PRNGKey(eval_seed), b)`, the same in every evaluation.
    variables: `variables(state) -> variables` for `eval_step`.
    describe_eval: `describe_eval(metrics) -> str`, e.g. "test accuracy 0.91, loss 0.3".
    summarize: `summarize(stats, test_metrics) -> summary` from the run's statistics
      (devices, steps, throughput, last train metrics, ...) and the final evaluation.
    format_summary: the summary as text, printed at the end.
    augment_fn: standard augmentation `(images, key) -> images`, inside the step.
    eval_seed: see `eval_step`.
    structural_fields: config fields a resumed run may not change (a checkpoint of
      another net or dataset cannot continue, even with `config.force_resume`).
    tensorboard: default of `config.tensorboard`.
  """
  name: str
  title: str
  init_state: Callable[[], TrainState]
  loss_fn: step_lib.LossFn | StatefulLoss
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  eval_step: Callable[[Any, dict, jax.Array], dict[str, jax.Array]]
  variables: Callable[[TrainState], Any]
  describe_eval: Callable[[dict[str, float]], str]
  summarize: Callable[[dict[str, Any], dict[str, float]], dict[str, Any]]
  format_summary: Callable[[dict[str, Any]], str]
  augment_fn: step_lib.AugmentFn | None = None
  eval_seed: int = 0
  structural_fields: tuple[str, ...] = ()
  tensorboard: bool = True


def evaluate(eval_step: Callable, variables: Any, batches: Iterable[dict], *,
             seed: int = 0) -> dict[str, float]:
  """Means over `batches` of `eval_step(variables, batch, key)`'s sums (divided by the
  summed 'count'), plus 'num_examples'; batch `b`'s key is `fold_in(PRNGKey(seed), b)`."""
  totals = None
  base_key = jax.random.PRNGKey(seed)
  for b, batch in enumerate(batches):
    sums = eval_step(variables, batch, jax.random.fold_in(base_key, b))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals.pop("count"))
  return {**{k: float(v) / count for k, v in totals.items()}, "num_examples": count}


def run(task: Task, config: ml_collections.ConfigDict, workdir: str, *,
        train_source: data_lib.Source, test_source: data_lib.Source,
        hooks: Sequence[Hook] = ()) -> dict[str, Any]:
  """Trains `task` on `train_source`, evaluates on `test_source`; returns the summary.

  Resumes from the latest checkpoint in `workdir/checkpoints`. Writes
  `workdir/config.json` (at the start), `workdir/metrics.jsonl` (+ TensorBoard events)
  and `workdir/summary.json` (at the end; its presence marks a finished run). The
  config fields read here: global_batch_size, num_epochs / num_steps, seed, prefetch,
  log_every_steps (50), eval_every_steps / eval_every_epochs, eval_batch_size,
  checkpoint_every_steps, keep_checkpoints (3), tensorboard.

  SIGTERM (preemption) saves a checkpoint at the next step boundary, in every process at
  the same step, and raises `preemption.Preempted`: rerunning resumes from it exactly.

  Raises:
    ValueError: for a batch size the devices or the data cannot take, or a workdir
      holding a checkpointed run whose config differs (other than `BOOKKEEPING_FIELDS`;
      `config.force_resume=True` accepts it, except for `task.structural_fields`).
    NonFiniteLossError: if the loss or gradients become NaN/inf.
    preemption.Preempted: after SIGTERM, once the checkpoint is saved.
  """
  is_main = jax.process_index() == 0
  mesh = parallel.make_mesh()
  batch_size = config.global_batch_size
  eval_batch_size = config.get("eval_batch_size", -1)
  eval_batch_size = eval_batch_size if eval_batch_size > 0 else batch_size
  parallel.local_batch_size(batch_size, mesh)  # validates divisibility
  parallel.local_batch_size(eval_batch_size, mesh)
  steps_per_epoch = data_lib.steps_per_epoch(train_source, batch_size)
  if steps_per_epoch < 1:
    raise ValueError(f"global_batch_size={batch_size} is larger than the training set "
                     f"({train_source.num_examples} examples).")
  num_steps = num_train_steps(config, steps_per_epoch)

  os.makedirs(workdir, exist_ok=True)
  checkpoint_dir = os.path.join(workdir, "checkpoints")
  _record_config(config, workdir, structural=task.structural_fields,
                 force=bool(config.get("force_resume", False)))
  summary_path = os.path.join(workdir, "summary.json")
  if is_main and os.path.exists(summary_path):
    os.remove(summary_path)  # rewritten when this run finishes

  replicated = parallel.replicated_sharding(mesh)
  checkpointer = Checkpointer(checkpoint_dir, max_to_keep=config.get("keep_checkpoints", 3))
  if checkpointer.latest_step() is None:
    state = parallel.replicate(task.init_state(), mesh)
  else:  # restore into the abstract state: no need to run the initialisers
    abstract = jax.eval_shape(task.init_state)
    state = checkpointer.restore(jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract))
    logging.info("Resumed from step %d in %s.", int(state.step), checkpointer.directory)
    if is_main:
      print(f"Resuming from checkpoint at step {int(state.step)} in {checkpointer.directory}",
            flush=True)
  start_step = int(state.step)

  stateful = task.loss_fn if isinstance(task.loss_fn, StatefulLoss) else None
  train_step = jax.jit(
      step_lib.make_train_step(task.loss_fn, task.tx, augment_fn=task.augment_fn,
                               schedule=task.schedule),
      out_shardings=(replicated, replicated), donate_argnums=(0,))
  epoch_begin = epoch_step = None
  if stateful is not None and stateful.has_epoch_start:
    begin, extra_step = step_lib.make_epoch_start(stateful, augment_fn=task.augment_fn)
    epoch_begin = jax.jit(begin, out_shardings=replicated, donate_argnums=(0,))
    epoch_step = jax.jit(extra_step, out_shardings=(replicated, replicated),
                         donate_argnums=(0,))
  eval_step = jax.jit(task.eval_step, out_shardings=replicated)

  def run_epoch_start(state: TrainState, epoch: int) -> TrainState:
    """The stateful method's epoch-start hook, then its extra batches (see above)."""
    t0 = time.perf_counter()
    state = epoch_begin(state, np.int32(epoch))
    num_extra = stateful.epoch_start_steps
    if num_extra > 0:
      extra = data_lib.train_batches(train_source, global_batch_size=batch_size,
                                     seed=config.seed, mesh=mesh,
                                     start_step=epoch * steps_per_epoch,
                                     prefetch=config.get("prefetch", 2))
      window = []
      try:
        for i in range(num_extra):
          state, m = epoch_step(state, next(extra), np.int32(epoch), np.int32(i))
          window.append(m)
      finally:
        extra.close()
      window = jax.device_get(window)
      means = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
      means.update({f"last_{k}": float(v) for k, v in window[-1].items()})
      writer.write(epoch * steps_per_epoch, "epoch_start", means)
    jax.block_until_ready(state.step)
    if is_main:
      progress.write(f"epoch {epoch} start: method hook and {num_extra} extra batches "
                     f"in {time.perf_counter() - t0:.1f}s")
    return state

  def run_eval() -> dict[str, float]:
    return evaluate(eval_step, task.variables(state),
                    data_lib.eval_batches(test_source, global_batch_size=eval_batch_size,
                                          mesh=mesh), seed=task.eval_seed)

  writer = MetricWriter(workdir, tensorboard=config.get("tensorboard", task.tensorboard))
  log_every = max(1, config.get("log_every_steps", 50))
  eval_every = _eval_every(config, steps_per_epoch)
  ckpt_every = config.get("checkpoint_every_steps", -1)
  if is_main:
    print(f"{task.title}: {num_steps} steps of {batch_size} "
          f"({num_steps / steps_per_epoch:.2f} epochs) on {mesh.devices.size} device(s) "
          f"[{jax.devices()[0].platform}]", flush=True)

  pending: list[dict] = []   # per-step metrics on device since the last flush
  last_train: dict[str, float] = {}

  def flush(step: int) -> None:
    """Fetches pending metrics, stops on a non-finite loss, logs means."""
    nonlocal last_train
    if not pending:
      return
    window = jax.device_get(pending)
    pending.clear()
    finite = np.array([m["finite"] for m in window])
    if not finite.all():
      i = int(np.argmin(finite))
      checkpointer.wait_until_finished()
      raise NonFiniteLossError(
          f"The loss or its gradient became NaN/inf at step {step - len(window) + i + 1} "
          f"(loss={float(window[i]['loss'])}); training stopped. That update was not "
          f"applied. The last good checkpoint is step {checkpointer.latest_step()} in "
          f"{checkpointer.directory}; lower the learning rate or check the data, then "
          "rerun to resume from it.")
    last_train = {k: float(np.mean([m[k] for m in window])) for k in window[0] if k != "finite"}
    writer.write(step, "train", last_train)
    postfix = {"loss": f"{last_train['loss']:.4f}"}
    if "accuracy" in last_train:
      postfix["acc"] = f"{last_train['accuracy']:.3f}"
    progress.set_postfix(refresh=False, **postfix)

  progress = tqdm.tqdm(total=num_steps, initial=start_step, unit="step", desc=task.name,
                       disable=not is_main, dynamic_ncols=True, file=sys.stdout,
                       mininterval=1.0 if sys.stdout.isatty() else 15.0)
  wall_start = time.perf_counter()
  timing_start, timing_step = None, start_step
  batches = None
  watch = preemption.PreemptionWatch()
  try:
    batches = data_lib.train_batches(train_source, global_batch_size=batch_size,
                                     seed=config.seed, mesh=mesh, start_step=start_step,
                                     prefetch=config.get("prefetch", 2))
    for step in range(start_step + 1, num_steps + 1):
      if epoch_begin is not None and (step - 1) % steps_per_epoch == 0:
        state = run_epoch_start(state, (step - 1) // steps_per_epoch)
      state, metrics = train_step(state, next(batches))
      pending.append(metrics)
      for hook in hooks:
        hook(step, state, metrics)
      if timing_start is None:  # exclude compilation from the throughput
        jax.block_until_ready(state.step)
        timing_start, timing_step = time.perf_counter(), step
      progress.update(1)
      if step % log_every == 0 or step == num_steps:
        flush(step)
      if ckpt_every > 0 and step % ckpt_every == 0 and step != num_steps:
        flush(step)
        checkpointer.save(step, state)
      if eval_every and step % eval_every == 0 and step != num_steps:
        test_metrics = run_eval()
        writer.write(step, "test", test_metrics)
        progress.write(f"step {step} (epoch {step / steps_per_epoch:.2f}): "
                       f"{task.describe_eval(test_metrics)}")
      if step != num_steps and watch.reached(step):  # SIGTERM: save, stop (every process)
        flush(step)
        if checkpointer.latest_step() != step:
          checkpointer.save(step, state)
        checkpointer.wait_until_finished()
        writer.close()
        if is_main:
          progress.write(f"SIGTERM: saved a checkpoint at step {step}; stopping.")
        raise preemption.Preempted(step, checkpointer.directory)
    flush(num_steps)
    jax.block_until_ready(state.step)
    train_seconds = time.perf_counter() - timing_start if timing_start else 0.0
    if checkpointer.latest_step() != num_steps:
      checkpointer.save(num_steps, state)
    checkpointer.wait_until_finished()
  finally:
    watch.close()
    if batches is not None:
      batches.close()  # stops the prefetch thread
    progress.close()
    checkpointer.close()

  test_metrics = run_eval()
  writer.write(num_steps, "test", test_metrics)
  writer.close()
  timed_steps = num_steps - timing_step
  stats = {
      "devices": int(mesh.devices.size), "platform": jax.devices()[0].platform,
      "global_batch_size": batch_size, "steps": num_steps,
      "epochs": num_steps / steps_per_epoch, "resumed_from_step": start_step,
      "wall_seconds": time.perf_counter() - wall_start,
      "train_steps_per_second": timed_steps / train_seconds if train_seconds > 0 else None,
      "train_images_per_second": (timed_steps * batch_size / train_seconds
                                  if train_seconds > 0 else None),
      "train_loss": last_train.get("loss"), "train_accuracy": last_train.get("accuracy"),
  }
  summary = task.summarize(stats, test_metrics)
  if is_main:
    with open(summary_path, "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2)
    print(task.format_summary(summary), flush=True)
  return summary


def _eval_every(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """Steps between evaluations (0: only at the end): `eval_every_steps` if > 0, else
  `eval_every_epochs` where the config has it (<= 0: only at the end), else one epoch."""
  if config.get("eval_every_steps", -1) > 0:
    return int(config.eval_every_steps)
  if "eval_every_epochs" in config:
    epochs = config.eval_every_epochs
    return max(1, int(round(epochs * steps_per_epoch))) if epochs > 0 else 0
  return steps_per_epoch


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       make_loss_fn: MakeLossFn | None = None,
                       hooks: Sequence[Hook] = ()) -> dict[str, Any]:
  """Trains and evaluates a classifier; returns (and writes to `workdir/summary.json`)
  the summary.

  Args:
    config: an experiment config (see `experiments/configs/`).
    workdir: where checkpoints, metrics (JSONL, TensorBoard) and the summary go.
    make_loss_fn: `make_loss_fn(model, config) -> LossFn | StatefulLoss`; default:
      nominal training, for `config.method == 'nominal'` only (the other methods are
      resolved from the config by the run layer: `adacorr.run.train_and_evaluate`).
    hooks: called as `hook(step, state, metrics)` after every step (metrics on device).

  Raises:
    ValueError: for a bad config value (`config_checks.check_classifier_config`: an
      unknown dataset, model or method, a non-positive learning rate, ...; before any
      data is read), or a method without `make_loss_fn`.
    NonFiniteLossError: if the loss or gradients become NaN/inf.
  """
  config_checks.check_classifier_config(config)
  if make_loss_fn is None:
    if config.method != "nominal":
      raise ValueError(
          f"config.method={config.method!r}: pass make_loss_fn, or train with "
          "adacorr.run.train_and_evaluate(config, workdir), which builds the method from "
          "the config.")
    make_loss_fn = lambda model, config: methods.make_nominal(model)  # noqa: E731
  info, (train_source, test_source) = data_lib.load_dataset(config)
  # DeepAugment: the clean set plus its stored distorted copies (config.deepaugment_dirs).
  train_source = deepaugment_data.load_train_source(config, info, train_source)
  steps_per_epoch = data_lib.steps_per_epoch(train_source, config.global_batch_size)
  num_steps = num_train_steps(config, max(1, steps_per_epoch))

  model = build_model(config, info)
  schedule = optim.make_schedule(config, steps_per_epoch=steps_per_epoch, num_steps=num_steps)
  tx = optim.make_optimizer(config, schedule)
  loss_fn = make_loss_fn(model, config)
  stateful = loss_fn if isinstance(loss_fn, StatefulLoss) else None
  image_shape = tuple(info.image_shape)

  def init_state() -> TrainState:
    state = create_train_state(model, tx, jax.random.PRNGKey(config.seed), image_shape)
    if stateful is not None:
      init = jax.jit(lambda key: stateful.init(key, image_shape))
      state = state.replace(method_state=init(step_lib.method_init_key(state.rng)))
    return state

  crop = config.get("eval_center_crop", 0)
  classify = step_lib.make_eval_step(
      model, preprocess=(lambda x: augment_lib.center_crop(x, size=crop)) if crop else None)

  def eval_step(variables, batch, key):
    del key
    sums = classify(variables, batch)
    return {"loss": sums["loss"], "accuracy": sums["correct"], "count": sums["count"]}

  def summarize(stats, test):
    return {
        "dataset": config.dataset, "model": config.model, "method": config.method,
        **{k: stats[k] for k in ("devices", "platform", "global_batch_size", "steps",
                                 "epochs", "resumed_from_step", "train_steps_per_second",
                                 "train_images_per_second", "train_loss",
                                 "train_accuracy")},
        "test_loss": test["loss"], "test_accuracy": test["accuracy"],
        "test_examples": int(test["num_examples"]),
    }

  task = Task(
      name="train",
      title=(f"Training {config.model} on {config.dataset} ({train_source.num_examples} "
             f"examples) with method={config.method}"),
      init_state=init_state, loss_fn=loss_fn, tx=tx, schedule=schedule,
      eval_step=eval_step, variables=lambda state: state.variables,
      describe_eval=lambda m: f"test accuracy {m['accuracy']:.4f}, loss {m['loss']:.4f}",
      summarize=summarize, format_summary=format_summary,
      augment_fn=augment_lib.get_augment(config.augment, **config.get("augment_kwargs", {})))
  return run(task, config, workdir, train_source=train_source, test_source=test_source,
             hooks=hooks)


def format_summary(summary: dict[str, Any]) -> str:
  """A two-column text table of the summary."""
  def fmt(v):
    if isinstance(v, float):
      return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}"
    return "-" if v is None else str(v)
  rows = [(k, fmt(v)) for k, v in summary.items()]
  width_k = max(len(k) for k, _ in rows)
  width_v = max(len(v) for _, v in rows)
  rule = f"+-{'-' * width_k}-+-{'-' * width_v}-+"
  lines = [rule, f"| {'summary'.ljust(width_k)} | {''.ljust(width_v)} |", rule]
  lines += [f"| {k.ljust(width_k)} | {v.rjust(width_v)} |" for k, v in rows]
  return "\n".join(lines + [rule])


def _record_config(config: ml_collections.ConfigDict, workdir: str, *,
                   structural: Sequence[str] = (), force: bool = False) -> None:
  """Writes `workdir/config.json`. A workdir with a checkpoint of a run whose recorded
  config differs is an error naming the fields (a resumed run would not equal an unbroken
  one of either config), unless `force` (not for the `structural` fields, whose
  checkpoint cannot continue at all). Every process checks; process 0 writes."""
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      previous = json.load(f)
    changed = config_differences(previous, current)
    different = [k for k in changed if k in structural] if force else changed
    checkpointed = bool(changed) and latest_checkpoint_step(
        os.path.join(workdir, "checkpoints")) is not None
    if different and checkpointed:
      fields = "; ".join(f"{k}: {previous.get(k)!r} there, {current.get(k)!r} now"
                         for k in different)
      raise ValueError(
          f"{workdir} holds a run with another {', '.join(different)} ({fields}). Use "
          "another --workdir, delete this one"
          + ("." if force or any(k in structural for k in different) else
             ", or set config.force_resume=True (--config.force_resume) to continue it "
             "with the new config."))
    if checkpointed:
      logging.warning("Continuing the run in %s with a config that differs in %s "
                      "(force_resume): it will not equal an unbroken run.", workdir, changed)
  if jax.process_index() != 0:
    return
  with open(path + ".tmp", "w", encoding="utf-8") as f:  # other processes read it
    json.dump(current, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)


# Config fields that do not change what a run computes (ignored when comparing configs).
BOOKKEEPING_FIELDS = ("name", "force_resume", "data_dir", "fashion_mnist_dir", "download",
                      "log_every_steps", "checkpoint_every_steps", "keep_checkpoints", "eval_every_epochs",
                      "eval_every_steps", "num_eval_examples", "eval_batch_size",
                      "tensorboard", "prefetch")


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
  """Fields (other than `BOOKKEEPING_FIELDS`) whose values differ between two configs."""
  a = {k: v for k, v in a.items() if k not in BOOKKEEPING_FIELDS}
  b = {k: v for k, v in b.items() if k not in BOOKKEEPING_FIELDS}
  return sorted(k for k in set(a) | set(b) if a.get(k, "<missing>") != b.get(k, "<missing>"))
