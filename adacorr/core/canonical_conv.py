"""`canonical_convs(fn)`: the same function, with every convolution's kernel in HWIO order.

Why: JAX's gradient of a convolution with respect to its input is a convolution whose
kernel has its input and output dimensions swapped (`dim_labels=..._01oi->...`).
Compiled on its own, XLA:CPU's `convolution-canonicalization` pass rewrites such a
convolution into a kernel transpose plus a canonical one; inside a `while` body (every
`lax.fori_loop` / `scan`: APGD, FAB, PGD, AdA's ascent) it leaves them as they are, and
they take a slow path: measured 2.6x the time per signed-gradient step of a 3-layer conv
net (`benchmarks/conv_in_loop.py`, `benchmarks/RESULTS.md`). `canonical_convs` re-traces
`fn` and binds each such convolution as an explicit `transpose` of the kernel to HWIO
order followed by a convolution with canonical dimension numbers: the same arithmetic
(equal up to float rounding: the summation order may differ), which XLA:CPU then runs on
its fast path.

It rewrites convolutions at the top level of `fn`'s jaxpr and inside nested `jit`s; other
higher-order primitives (loops, conds, custom derivatives) are bound unchanged. Use it on
the function evaluated INSIDE a loop body, e.g. the gradient:
`grad = canonical_convs(jax.grad(loss))`. Pure and jittable.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax import lax
from jax.extend import core as jex_core
import jax.numpy as jnp

_JIT_PRIMITIVES = ("pjit", "jit")


def _canonical_conv(eqn, lhs, rhs):
  """`eqn` (a conv_general_dilated) with its kernel transposed to (spatial..., I, O)."""
  dn = eqn.params["dimension_numbers"]
  out_dim, in_dim, *spatial = dn.rhs_spec
  if list(spatial) == sorted(spatial) and (in_dim, out_dim) == (len(spatial), len(spatial) + 1):
    return eqn.primitive.bind(lhs, rhs, **eqn.params)  # already HWIO
  rhs = jnp.transpose(rhs, tuple(spatial) + (in_dim, out_dim))
  n = len(spatial)
  canonical = lax.ConvDimensionNumbers(dn.lhs_spec, (n + 1, n) + tuple(range(n)), dn.out_spec)
  return eqn.primitive.bind(lhs, rhs, **dict(eqn.params, dimension_numbers=canonical))


def _eval(jaxpr, consts, args) -> list[Any]:
  env = {}

  def read(v):
    return v.val if isinstance(v, jex_core.Literal) else env[v]

  for v, c in zip(jaxpr.constvars, consts):
    env[v] = c
  for v, a in zip(jaxpr.invars, args):
    env[v] = a
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      outs = [_canonical_conv(eqn, *invals)]
    elif name in _JIT_PRIMITIVES:
      inner = eqn.params["jaxpr"]
      outs = _eval(inner.jaxpr, inner.consts, invals)
    else:
      outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      if not eqn.primitive.multiple_results:
        outs = [outs]
    for v, o in zip(eqn.outvars, outs):
      env[v] = o
  return [read(v) for v in jaxpr.outvars]


def canonical_convs(fn: Callable) -> Callable:
  """`fn` with every convolution bound with an HWIO kernel (see the module docstring):
  same inputs, same outputs (pytrees), same values."""

  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    outs = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

  return wrapped
