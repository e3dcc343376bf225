"""Test helper: model variables from ONE flat uniform draw (a per-leaf `model.init` costs
seconds of XLA compilation on CPU, one threefry kernel per parameter shape)."""

import jax
import jax.numpy as jnp
import numpy as np


def uniform(seed, shape, minval=0.0, maxval=1.0):
  """One flat `jax.random.uniform` draw reshaped to `shape` (drawn at a padded length,
  so that few draw sizes need compiling)."""
  n = int(np.prod(shape))
  size = max(4096, 1 << (n - 1).bit_length())
  u = jax.random.uniform(jax.random.key(seed), (size,), minval=minval, maxval=maxval)
  return u[:n].reshape(shape)


def flat_init(model, shape, seed, bn_bias=0.0):
  """Variables of `model` for inputs of `shape`: kernels He-uniform, BatchNorm scales and
  running variances ~1, biases and running means small; `bn_bias` is added to the
  BatchNorm biases (keeps tiny ReLU nets' features alive)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct(shape, jnp.float32))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  sizes = [int(np.prod(s.shape)) for _, s in leaves]
  u = np.asarray(uniform(seed, (sum(sizes),), -1.0, 1.0))
  out, off = [], 0
  for (path, s), n in zip(leaves, sizes):
    v = u[off:off + n].reshape(s.shape)
    off += n
    name = path[-1].key
    if name == "kernel":
      v = v * np.sqrt(6.0 / np.prod(s.shape[:-1]))
    elif name in ("scale", "var"):
      v = 1.0 + 0.3 * v
    else:  # bias, mean
      v = 0.1 * v
      if name == "bias" and path[1].key.startswith("BatchNorm"):
        v = v + bn_bias
    out.append(jnp.asarray(v, jnp.float32))
  return jax.tree_util.tree_unflatten(treedef, out)
