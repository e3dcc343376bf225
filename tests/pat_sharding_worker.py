"""Run under 8 CPU devices (XLA_FLAGS): Fast-LPA, LPA (self-bounded) and the PAT train step
on a batch sharded over the 'data' mesh equal the same computation on one device.
Prints 'OK <max diff>'."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from adacorr import attacks, methods, parallel, perceptual  # noqa: E402
from adacorr.models import SmallCNN  # noqa: E402
from adacorr.train import make_train_step  # noqa: E402
from adacorr.train.state import create_train_state  # noqa: E402


def main():
  assert jax.device_count() == 8, jax.devices()
  mesh = parallel.make_mesh()
  model = SmallCNN(num_classes=10, features=(4,), dense=8, mean=(0.5,), std=(0.25,))
  tx = optax.sgd(0.1)
  state = create_train_state(model, tx, jax.random.PRNGKey(0), (8, 8, 1))
  x = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1))
  y = (jnp.arange(16) % 10).astype(jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(2), 16)  # raw (16, 2): numpy-shardable
  both = perceptual.features_and_logits_fn(model, state.variables)
  diffs = []
  for attack in (
      lambda a, b, k: attacks.fast_lpa(both, None, a, b, k, bound=0.5, num_steps=2),
      lambda a, b, k: attacks.lpa(both, None, a, b, k, bound=0.1, num_steps=2,
                                  lambda_steps=2)):
    run = jax.jit(attack)
    single = run(x, y, keys)
    sharded = run(*parallel.shard_batch((x, y, keys), mesh))
    assert len(sharded.sharding.device_set) == 8, sharded.sharding
    diffs.append(float(jnp.max(jnp.abs(np.asarray(sharded) - np.asarray(single)))))

  # The PAT train step: data-parallel over 8 devices vs everything on one.
  step = jax.jit(make_train_step(methods.make_pat(model, bound=0.5, num_steps=2), tx))
  batch = {"image": x, "label": y}
  new_single, _ = step(state, batch)
  new_sharded, _ = step(parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh))
  for a, b in zip(jax.tree.leaves(new_single.params), jax.tree.leaves(new_sharded.params)):
    diffs.append(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))))
  print("OK", max(diffs))


if __name__ == "__main__":
  main()
