"""eps*_AN (Rusak et al. 2020, Table 2; issue 16, item 7): a noise generator trained afresh
against the final model, the median smallest l2 norm of its noise that flips the label, and
its place in the report (markdown line, JSON key, comparison row)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr.data.sources import ArraySource
from adacorr.evaluation import comparison
from adacorr.evaluation.noise import evaluate_noise
from adacorr.evaluation.report import markdown_report


class _MeanPixel(nn.Module):
  """2 classes; class 1 once the mean pixel exceeds 0.5 + 1/40. Zero-mean (Gaussian)
  noise of norm r moves the mean pixel by ~ r N(0, 1) / D, noise pushed one way by up to
  r / sqrt(D): a generator that learns an upward bias flips it at a far smaller norm."""

  @nn.compact
  def __call__(self, x, train=False):
    scale = self.param("scale", lambda key: jnp.asarray(40.0))
    score = scale * (jnp.mean(x, axis=(1, 2, 3)) - 0.5) - 1.0
    return jnp.stack([jnp.zeros_like(score), score], -1)


def _source(n, seed):
  rng = np.random.default_rng(seed)
  images = rng.uniform(0.3 * 255, 0.7 * 255, (n, 8, 8, 3)).round().astype(np.uint8)
  return ArraySource(images, np.zeros(n, np.int32), 2)


@pytest.fixture(scope="module")
def noise_report():
  model = _MeanPixel()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  test, train = _source(24, 0), _source(64, 1)
  return evaluate_noise(model, variables, test, batch_size=16, an_steps=30, an_lr=1e-2,
                        an_batch_size=16, an_generators=2, train_source=train)


def test_eps_star_an_finds_the_direction_gaussian_noise_misses(noise_report):
  result = noise_report
  an = result["an"]
  assert an["num_generators"] == 2 and an["train_examples"] == 64 and an["steps"] == 30
  # Each generator learned to raise the classifier's CE.
  assert all(last > first + 0.1 for first, last in zip(an["generator_loss_first"],
                                                        an["generator_loss_last"]))
  # The adversarial noise flips every example, at a small norm; Gaussian noise barely.
  assert math.isfinite(result["eps_star_an"]) and an["fraction_unflipped"] == 0.0
  assert result["eps_star_an"] < 0.25 * result["eps_star"]
  assert result["eps_star_an"] == pytest.approx(np.mean(an["eps_star_per_generator"]))
  # Its training eps: eps*_GN where finite, else the ANT configs' rule (pixels in
  # [0.3, 0.7] never clip at sigma 0.1: the Gaussian vector's norm, 0.1 sqrt(192)).
  if math.isfinite(result["eps_star"]):
    assert an["eps_source"] == "eps_star_gn" and an["eps"] == result["eps_star"]
  else:
    assert an["eps_source"] == "gaussian_noise_eps"
    assert an["eps"] == pytest.approx(0.1 * math.sqrt(192), rel=0.01)


def test_report_has_the_eps_star_an_line_and_key(noise_report):
  result = noise_report
  report = {"model": "m", "dataset": "d", "step": 1, "workdir": "w", "corruptions": "none",
            "num_examples": 24, "clean": {"accuracy": 1.0},
            "calibration": {"ece": 0.0, "temperature": 1.0,
                            "ece_before_temperature_same_half": 0.0,
                            "ece_after_temperature": 0.0},
            "noise": result}
  markdown = markdown_report(report)
  (line,) = [l for l in markdown.splitlines() if l.startswith("| eps*_AN")]
  assert line.endswith(f"| {result['eps_star_an']:.3f} |") and "30 Adam steps" in line
  assert comparison.comparison_row(report)["eps_star_an"] == result["eps_star_an"]
  report["noise"] = dict(result, eps_star_an=None, an=None)   # as with an_steps=0
  assert "eps*_AN" not in markdown_report(report)
  assert "eps_star_an" not in comparison.comparison_row(report)
