"""AutoAttack parity with the authors' implementation (issue 26), CI-sized.

A small torch CNN with fixed seeded weights and the same network in flax (same weights,
logits checked to agree), 32 images of 8x8 RGB noise labelled with the torch model's
predictions (a few labels changed, so clean accuracy is below 100%); both AutoAttacks
('standard' components and order) with reduced but IDENTICAL budgets: APGD-CE and
APGD-T 10 iterations (the reference's checkpoint schedule recomputed for 10), 3 target
classes for APGD-T and FAB-T, FAB 10 iterations, Square 100 queries. Ours must not be
weaker than the reference by more than one image. Needs torch and pyautoattack
(`make test` installs both).
"""

from __future__ import annotations

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pyautoattack = pytest.importorskip("pyautoattack")

from adacorr import attacks  # noqa: E402

N, SIZE, CLASSES = 32, 8, 10
STEPS, TARGETS, QUERIES = 10, 3, 100
# Radii at which the reference leaves some images robust and fools others (checked
# below, so the comparison is not vacuous).
EPS = {"linf": 2 / 255, "l2": 0.1}


class TorchCNN(torch.nn.Module):
  """conv3x3(3->8)-ReLU, conv3x3 stride 2 (8->16)-ReLU, flatten (C, H, W order), linear."""

  def __init__(self):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
    self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
    self.linear = torch.nn.Linear(16 * (SIZE // 2) ** 2, CLASSES)

  def forward(self, x):
    x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
    return self.linear(x.flatten(1))


class FlaxCNN(nn.Module):
  """The same network on NHWC inputs (flattened in torch's C, H, W order)."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), padding=((1, 1), (1, 1)), name="conv1")(x))
    x = nn.relu(nn.Conv(16, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                        name="conv2")(x))
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    return nn.Dense(CLASSES, name="linear")(x)


def _params_from_torch(model):
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  conv = lambda k: {"kernel": jnp.asarray(np.transpose(sd[k + ".weight"], (2, 3, 1, 0))),
                    "bias": jnp.asarray(sd[k + ".bias"])}
  return {"params": {"conv1": conv("conv1"), "conv2": conv("conv2"),
                     "linear": {"kernel": jnp.asarray(sd["linear.weight"].T),
                                "bias": jnp.asarray(sd["linear.bias"])}}}


@pytest.fixture(scope="module")
def setup():
  torch.manual_seed(0)
  model = TorchCNN().eval()
  with torch.no_grad():  # larger weights: logits of a few units, margins of all sizes
    for p in model.parameters():
      p.mul_(3.0)
  variables = _params_from_torch(model)
  logits_fn = jax.jit(lambda v: FlaxCNN().apply(variables, v))
  rng = np.random.default_rng(0)
  x = rng.uniform(0.0, 1.0, (N, SIZE, SIZE, 3)).astype(np.float32)
  xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
  with torch.no_grad():
    logits_t = model(xt).numpy()
  y = logits_t.argmax(1)
  y[:3] = (y[:3] + 1) % CLASSES  # three misclassified images
  return model, logits_fn, x, y, logits_t


def _reference(model, x, y, norm, eps):
  from pyautoattack import AutoAttack  # pylint: disable=g-import-not-at-top
  logging.getLogger("auto-attack").setLevel(logging.WARNING)
  adv = AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps,
                   version="standard", device="cpu", seed=0)
  adv.verbose = False
  for a in (adv.apgd, adv.apgd_targeted):  # the checkpoint schedule is set in __init__
    a.n_iter = a.n_iter_orig = STEPS
    a.n_iter_2 = max(int(0.22 * STEPS), 1)
    a.n_iter_min = max(int(0.06 * STEPS), 1)
    a.size_decr = max(int(0.03 * STEPS), 1)
  adv.apgd_targeted.n_target_classes = TARGETS
  adv.fab.n_iter = STEPS
  adv.fab.n_target_classes = TARGETS
  adv.square.n_queries = QUERIES
  xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
  yt = torch.from_numpy(y.astype(np.int64))
  x_adv, _ = adv.run_standard_evaluation(xt, yt, batch_size=N)
  with torch.no_grad():
    clean = (model(xt).argmax(1) == yt).numpy()
    robust = (model(x_adv).argmax(1) == yt).numpy()
  delta = (x_adv - xt).reshape(N, -1)
  dist = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
  assert float(dist.max()) <= eps * (1 + 1e-5) + 1e-7
  return clean, robust


def test_flax_port_matches_torch_logits(setup):
  _, logits_fn, x, _, logits_t = setup
  logits_j = np.asarray(logits_fn(jnp.asarray(x)))
  np.testing.assert_allclose(logits_j, logits_t, atol=1e-4, rtol=1e-4)
  np.testing.assert_array_equal(logits_j.argmax(1), logits_t.argmax(1))
  assert np.ptp(logits_t, axis=1).min() > 0.5  # not a degenerate model
  assert len(np.unique(logits_t.argmax(1))) >= 3


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_ours_not_weaker_than_reference(setup, norm):
  model, logits_fn, x, y, _ = setup
  eps = EPS[norm]
  clean_ref, robust_ref = _reference(model, x, y, norm, eps)
  ours = attacks.autoattack(logits_fn, jnp.asarray(x), jnp.asarray(y, jnp.int32),
                            jax.random.PRNGKey(0), norm=norm, eps=eps, version="standard",
                            num_steps=STEPS, num_queries=QUERIES, num_targets=TARGETS)
  # Both see the same clean accuracy (29 of 32: three labels were changed).
  assert ours["clean_accuracy"] == pytest.approx(clean_ref.mean())
  assert ours["clean_accuracy"] == pytest.approx((N - 3) / N)
  # The reference fools some images and not others at this radius: a real comparison.
  assert 0 < robust_ref.sum() < clean_ref.sum()
  # Ours is at most one image weaker than the reference.
  assert ours["robust_accuracy"] <= robust_ref.mean() + 1.0 / N + 1e-9, (
      ours["per_attack"], robust_ref.mean())
  # The examples we count as robust are still classified correctly at our returned
  # points (there x_adv = x); the others are misclassified clean or were fooled.
  robust = ours["robust"]
  pred = np.asarray(jnp.argmax(logits_fn(jnp.asarray(ours["x_adv"])), -1))
  np.testing.assert_array_equal(pred[robust], y[robust])
  np.testing.assert_array_equal(ours["x_adv"][robust], x[robust])
