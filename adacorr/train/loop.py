"""The training loop: data-parallel, checkpointed, resumable, with logging and a summary.

`train_and_evaluate(config, workdir)` trains `config.model` on `config.dataset` with the
loss function of `config.method` (or one passed in), evaluating on the test split,
and resumes from the latest checkpoint in `workdir/checkpoints` if there is one. The
batch of step `s` and the PRNG key of step `s` depend only on the seed and `s`, so a
run killed at any point and resumed ends with the same parameters as an unbroken run.

A method may be a `step.StatefulLoss` (e.g. ANT): its state is part of the checkpointed
`TrainState`, and before the first step of every epoch e >= 1 the loop runs its
`epoch_start` hook, then `epoch_start_step` on `epoch_start_steps` extra batches: those
of global steps `e * steps_per_epoch + i`, a pure function of the seed and e.
"""

from __future__ import annotations

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
import tqdm

from adacorr import data as data_lib
from adacorr import methods
from adacorr.data import augment as augment_lib
from adacorr.data import deepaugment as deepaugment_data
from adacorr import models
from adacorr import parallel
from adacorr.train import optim
from adacorr.train import step as step_lib
from adacorr.train.checkpoint import Checkpointer
from adacorr.train.metric_writer import MetricWriter
from adacorr.train.state import TrainState, create_train_state

MakeLossFn = Callable[[Any, ml_collections.ConfigDict],
                      step_lib.LossFn | step_lib.StatefulLoss]
Hook = Callable[[int, TrainState, dict], None]

# Training methods by `config.method` (`config.method_kwargs` overrides their defaults).
LOSS_FACTORIES: dict[str, MakeLossFn] = {
    "nominal": lambda model, config: step_lib.cross_entropy_loss_fn(model),
    **methods.FACTORIES,
}


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


def evaluate(eval_step: Callable, variables: Any, batches: Iterable[dict]) -> dict[str, float]:
  """Mean loss and accuracy over `batches` (masked sums from `make_eval_step`)."""
  totals = None
  for batch in batches:
    sums = eval_step(variables, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  return {"loss": float(totals["loss"]) / count, "accuracy": float(totals["correct"]) / count,
          "num_examples": count}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       make_loss_fn: MakeLossFn | None = None,
                       hooks: Sequence[Hook] = ()) -> dict[str, Any]:
  """Trains and evaluates; returns (and writes to `workdir/summary.json`) the summary.

  Args:
    config: an experiment config (see `experiments/configs/`).
    workdir: where checkpoints, metrics (JSONL, TensorBoard) and the summary go.
    make_loss_fn: `make_loss_fn(model, config) -> LossFn | StatefulLoss`; default: by
      `config.method`.
    hooks: called as `hook(step, state, metrics)` after every step (metrics on device).

  Raises:
    NonFiniteLossError: if the loss or gradients become NaN/inf.
  """
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  _record_config(config, workdir)
  mesh = parallel.make_mesh()

  info = data_lib.DATASETS[config.dataset] if config.dataset in data_lib.DATASETS else None
  if info is None:
    raise ValueError(f"config.dataset={config.dataset!r} is not one of {sorted(data_lib.DATASETS)}.")
  load_kwargs = {"data_dir": config.get("data_dir")}
  if config.dataset == "fashion_mnist":
    load_kwargs["fashion_mnist_dir"] = config.get("fashion_mnist_dir")
  train_source = data_lib.load_split(config.dataset, info.train_split, **load_kwargs)
  # DeepAugment: the clean set plus its stored distorted copies (config.deepaugment_dirs).
  train_source = deepaugment_data.load_train_source(config, info, train_source)
  test_source = data_lib.load_split(config.dataset, info.test_split, **load_kwargs)
  batch_size = config.global_batch_size
  parallel.local_batch_size(batch_size, mesh)  # validates divisibility
  steps_per_epoch = data_lib.steps_per_epoch(train_source, batch_size)
  num_steps = num_train_steps(config, steps_per_epoch)

  model = build_model(config, info)
  schedule = optim.make_schedule(config, steps_per_epoch=steps_per_epoch, num_steps=num_steps)
  tx = optim.make_optimizer(config, schedule)
  if make_loss_fn is None:
    if config.method not in LOSS_FACTORIES:
      raise ValueError(f"config.method={config.method!r} is not one of {sorted(LOSS_FACTORIES)}.")
    make_loss_fn = LOSS_FACTORIES[config.method]
  loss_fn = make_loss_fn(model, config)
  stateful = loss_fn if isinstance(loss_fn, step_lib.StatefulLoss) else None
  state = create_train_state(model, tx, jax.random.PRNGKey(config.seed), info.image_shape)
  if stateful is not None:
    image_shape = tuple(info.image_shape)
    init = jax.jit(lambda key: stateful.init(key, image_shape))
    state = state.replace(method_state=init(step_lib.method_init_key(state.rng)))
  state = parallel.replicate(state, mesh)

  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    logging.info("Resumed from step %d in %s.", int(state.step), checkpointer.directory)
    if is_main:
      print(f"Resuming from checkpoint at step {int(state.step)} in {checkpointer.directory}",
            flush=True)
  start_step = int(state.step)

  augment_fn = augment_lib.get_augment(config.augment, **config.get("augment_kwargs", {}))
  replicated = parallel.replicated_sharding(mesh)
  train_step = jax.jit(
      step_lib.make_train_step(loss_fn, tx, augment_fn=augment_fn, schedule=schedule),
      out_shardings=(replicated, replicated), donate_argnums=(0,))
  epoch_begin = epoch_step = None
  if stateful is not None and stateful.has_epoch_start:
    begin, extra_step = step_lib.make_epoch_start(stateful, augment_fn=augment_fn)
    epoch_begin = jax.jit(begin, out_shardings=replicated, donate_argnums=(0,))
    epoch_step = jax.jit(extra_step, out_shardings=(replicated, replicated),
                         donate_argnums=(0,))
  crop = config.get("eval_center_crop", 0)
  eval_step = jax.jit(
      step_lib.make_eval_step(
          model, preprocess=(lambda x: augment_lib.center_crop(x, size=crop)) if crop else None),
      out_shardings=replicated)

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
    return evaluate(eval_step, state.variables,
                    data_lib.eval_batches(test_source, global_batch_size=batch_size, mesh=mesh))

  writer = MetricWriter(workdir, tensorboard=config.get("tensorboard", True))
  log_every = max(1, config.log_every_steps)
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  ckpt_every = config.checkpoint_every_steps
  if is_main:
    print(f"Training {config.model} on {config.dataset} ({train_source.num_examples} examples) "
          f"with method={config.method}: {num_steps} steps of {batch_size} "
          f"({num_steps / steps_per_epoch:.2f} epochs) on {mesh.devices.size} device(s) "
          f"[{jax.devices()[0].platform}]", flush=True)

  pending: list[dict] = []   # per-step metrics on device since the last flush
  last_train: dict[str, float] = {}
  test_metrics: dict[str, float] = {}

  def flush(step: int) -> None:
    """Fetches pending metrics, stops on a non-finite loss, logs means."""
    nonlocal last_train
    if not pending:
      return
    window = jax.device_get(pending)
    pending.clear()
    finite = np.array([m["finite"] for m in window])
    if not finite.all():
      bad = step - len(window) + int(np.argmin(finite)) + 1
      checkpointer.wait_until_finished()
      good = checkpointer.latest_step()
      raise NonFiniteLossError(
          f"The loss or its gradient became NaN/inf at step {bad} (loss="
          f"{float(window[int(np.argmin(finite))]['loss'])}); training stopped. That update was "
          f"not applied. The last good checkpoint is step {good} in {checkpointer.directory}; "
          "lower the learning rate or check the data, then rerun to resume from it.")
    last_train = {k: float(np.mean([m[k] for m in window])) for k in window[0] if k != "finite"}
    writer.write(step, "train", last_train)
    progress.set_postfix(loss=f"{last_train['loss']:.4f}",
                         acc=f"{last_train.get('accuracy', float('nan')):.3f}", refresh=False)

  progress = tqdm.tqdm(total=num_steps, initial=start_step, unit="step", desc="train",
                       disable=not is_main, dynamic_ncols=True, file=sys.stdout,
                       mininterval=1.0 if sys.stdout.isatty() else 15.0)
  timing_start, timing_step = None, start_step
  batches = None
  try:
    batches = data_lib.train_batches(train_source, global_batch_size=batch_size,
                                     seed=config.seed, mesh=mesh, start_step=start_step,
                                     prefetch=config.get("prefetch", 2))
    for step in range(start_step + 1, num_steps + 1):
      if epoch_begin is not None and step > 1 and (step - 1) % steps_per_epoch == 0:
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
      if step % eval_every == 0 and step != num_steps:
        test_metrics = run_eval()
        writer.write(step, "test", test_metrics)
        progress.write(f"step {step} (epoch {step / steps_per_epoch:.2f}): "
                       f"test accuracy {test_metrics['accuracy']:.4f}, "
                       f"loss {test_metrics['loss']:.4f}")
    flush(num_steps)
    jax.block_until_ready(state.step)
    train_seconds = time.perf_counter() - timing_start if timing_start else 0.0
    if checkpointer.latest_step() != num_steps:
      checkpointer.save(num_steps, state)
    checkpointer.wait_until_finished()
  finally:
    if batches is not None:
      batches.close()  # stops the prefetch thread
    progress.close()
    checkpointer.close()

  test_metrics = run_eval()
  writer.write(num_steps, "test", test_metrics)
  writer.close()
  timed_steps = num_steps - timing_step
  summary = {
      "dataset": config.dataset, "model": config.model, "method": config.method,
      "devices": int(mesh.devices.size), "platform": jax.devices()[0].platform,
      "global_batch_size": batch_size, "steps": num_steps,
      "epochs": num_steps / steps_per_epoch, "resumed_from_step": start_step,
      "train_steps_per_second": timed_steps / train_seconds if train_seconds > 0 else None,
      "train_images_per_second": (timed_steps * batch_size / train_seconds
                                  if train_seconds > 0 else None),
      "train_loss": last_train.get("loss"), "train_accuracy": last_train.get("accuracy"),
      "test_loss": test_metrics["loss"], "test_accuracy": test_metrics["accuracy"],
      "test_examples": int(test_metrics["num_examples"]),
  }
  if is_main:
    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2)
    print(format_summary(summary), flush=True)
  return summary


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


def _record_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `workdir/config.json`; warns if a resumed run's config differs."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      previous = json.load(f)
    changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
    if changed:
      logging.warning("The config differs from the one recorded in %s in %s; a resumed run "
                      "will not equal an unbroken one.", path, changed)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(current, f, indent=2, sort_keys=True)
