"""Run under 8 CPU devices (XLA_FLAGS): AdA and the AdA train step on a batch sharded over
the 'data' mesh equal the same computation on one device. Prints 'OK <max diff>'."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from adacorr import attacks, methods, parallel, run  # noqa: E402
from adacorr.models import SmallCNN  # noqa: E402
from adacorr.train import make_train_step  # noqa: E402
from adacorr.train.state import create_train_state  # noqa: E402


def main():
  assert jax.device_count() == 8, jax.devices()
  mesh = parallel.make_mesh()
  backbone = run.load_backbone(
      dict(net="edsr", init="random", net_kwargs=dict(num_blocks=1, features=4)),
      image_shape=(8, 8, 3))
  model = SmallCNN(num_classes=10, features=(4, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
  x = jax.random.uniform(jax.random.key(1), (16, 8, 8, 3))
  y = jnp.arange(16) % 10
  keys = jax.random.split(jax.random.PRNGKey(2), 16)  # raw (16, 2): numpy-shardable
  logits_fn = lambda imgs: model.apply(variables, imgs, train=False)
  diffs = []
  for chunk_size in (None, 8):
    attack = jax.jit(lambda x, y, k, cs=chunk_size: attacks.ada(
        backbone.apply, backbone.params, logits_fn, x, y, k, nu=0.1, num_steps=2,
        chunk_size=cs))
    single = attack(x, y, keys)
    sharded = attack(*parallel.shard_batch((x, y, keys), mesh))
    assert len(sharded.sharding.device_set) == 8, sharded.sharding
    diffs.append(float(jnp.max(jnp.abs(np.asarray(sharded) - np.asarray(single)))))

  # The whole AdA train step: data-parallel over 8 devices vs everything on one.
  loss_fn = methods.make_ada(model, nu=0.1, num_steps=2, backbones=[backbone])
  tx = optax.sgd(0.1)
  step = jax.jit(make_train_step(loss_fn, tx))
  state = create_train_state(model, tx, jax.random.PRNGKey(0), (8, 8, 3))
  batch = {"image": x, "label": y.astype(jnp.int32)}
  new_single, _ = step(state, batch)
  new_sharded, _ = step(parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh))
  for a, b in zip(jax.tree.leaves(new_single.params), jax.tree.leaves(new_sharded.params)):
    diffs.append(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))))
  print("OK", max(diffs))


if __name__ == "__main__":
  main()
