"""A small trained classifier for attack tests: an MLP trained for 80 full-batch SGD steps
on the 'synthetic' set (memoised per process, so modules share one)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from adacorr.data import load_split
from adacorr.data.datasets import DATASETS
from adacorr.models import normalize


class MLP(nn.Module):
  """Normalise, flatten, dense 64, ReLU, dense 10 (fast to compile on CPU)."""
  mean: tuple
  std: tuple

  @nn.compact
  def __call__(self, x):
    x = normalize(x, self.mean, self.std)
    x = nn.relu(nn.Dense(64)(x.reshape(x.shape[0], -1)))
    return nn.Dense(10)(x)


@functools.lru_cache(maxsize=None)
def trained_mlp(num_test: int = 64):
  """(logits_fn, x_test (num_test, 16, 16, 3) in [0, 1], y_test (num_test,)); the model
  reaches > 0.6 test accuracy (asserted) and is robust at l_inf 8/255, not at 16/255."""
  info = DATASETS["synthetic"]
  train = load_split("synthetic", "train")
  test = load_split("synthetic", "test")
  xtr, ytr = train.get(np.arange(train.num_examples))
  xte, yte = test.get(np.arange(num_test))
  xtr = jnp.asarray(xtr, jnp.float32) / 255.0
  xte = jnp.asarray(xte, jnp.float32) / 255.0
  ytr, yte = jnp.asarray(ytr, jnp.int32), jnp.asarray(yte, jnp.int32)

  model = MLP(mean=tuple(info.mean), std=tuple(info.std))
  params = model.init(jax.random.key(0), xtr[:2])
  tx = optax.sgd(0.05, momentum=0.9)

  @jax.jit
  def train_all(params):
    def step(carry, _):
      params, opt = carry
      g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
          model.apply(p, xtr), ytr).mean())(params)
      updates, opt = tx.update(g, opt, params)
      return (optax.apply_updates(params, updates), opt), None
    return jax.lax.scan(step, (params, tx.init(params)), None, length=80)[0][0]

  params = train_all(params)
  logits_fn = lambda x: model.apply(params, x)
  acc = float(jnp.mean(jnp.argmax(logits_fn(xte), -1) == yte))
  assert acc > 0.6, f"tiny model did not train (test acc {acc})"
  return logits_fn, xte, yte


def accuracy(logits_fn, x, y) -> float:
  """Top-1 accuracy of `logits_fn` on (x, y)."""
  return float(jnp.mean(jnp.argmax(logits_fn(x), -1) == y))


def perturbation_norms(d, norm: str) -> np.ndarray:
  """Per-example l_inf or l2 norms (B,) of perturbations `d` (B, ...)."""
  d = np.asarray(d).reshape(d.shape[0], -1)
  return np.abs(d).max(1) if norm == "linf" else np.sqrt((d ** 2).sum(1))
