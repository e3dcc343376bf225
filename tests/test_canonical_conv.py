"""`core.canonical_conv.canonical_convs`: same values, every convolution HWIO, also the
input-gradient ones JAX emits with the kernel's I/O swapped (XLA:CPU runs those slowly
inside loops, `benchmarks/conv_in_loop.py`)."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adacorr.core.canonical_conv import canonical_convs


class Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    x = nn.relu(nn.Conv(16, (3, 3), strides=2)(x))
    x = nn.relu(nn.Conv(16, (1, 3), kernel_dilation=(1, 2))(x))
    return nn.Dense(5)(x.reshape(x.shape[0], -1))


def _setup():
  net = Net()
  x = jax.random.uniform(jax.random.key(0), (4, 12, 12, 3))
  params = net.init(jax.random.key(1), x)
  y = jnp.arange(4) % 5
  loss = lambda v: jnp.sum(jax.nn.log_softmax(net.apply(params, v))[jnp.arange(4), y])
  return net, params, x, loss


def _kernel_orders(fn, *args) -> list[str]:
  text = jax.jit(fn).lower(*args).compile().as_text()
  return re.findall(r"dim_labels=\w+_(\w+)->", text)


def _close(a, b):
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # float rounding only


def test_same_values_and_gradients():
  net, params, x, loss = _setup()
  g = jax.grad(loss)
  _close(canonical_convs(g)(x), g(x))
  _close(jax.jit(canonical_convs(g))(x), jax.jit(g)(x))
  f = lambda p, v: net.apply(p, v)
  _close(jax.jit(canonical_convs(f))(params, x), f(params, x))
  # pytrees in and out, and a jitted inner function
  h = jax.jit(lambda p, v: {"logits": net.apply(p, v), "g": jax.grad(loss)(v)})
  a, b = canonical_convs(h)(params, x), h(params, x)
  assert set(a) == {"logits", "g"}
  jax.tree.map(_close, a, b)


def test_gradient_in_a_loop_has_only_hwio_kernels():
  _, _, x, loss = _setup()
  g = jax.grad(loss)

  def loop(grad):
    return lambda v: jax.lax.fori_loop(0, 3, lambda i, u: u + 1e-3 * jnp.sign(grad(u)), v)

  plain, canon = _kernel_orders(loop(g), x), _kernel_orders(loop(canonical_convs(g)), x)
  # JAX's input gradients come with the kernel's I/O swapped; XLA:CPU keeps that order
  # inside the loop (the slow path); the rewrite leaves only canonical (01io) kernels.
  assert any(o != "01io" for o in plain), plain
  assert canon and all(o == "01io" for o in canon), canon
  _close(jax.jit(loop(canonical_convs(g)))(x), jax.jit(loop(g))(x))
