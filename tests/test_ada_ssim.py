"""The AdA SSIM statistics behind the paper's Figure 2 (`adacorr.evaluation.ada_ssim`) and
the figure itself."""

import jax
import jax.numpy as jnp
import numpy as np

from adacorr import methods
from adacorr.evaluation import ada_ssim, plots


def _darkening_backbone():
  """images * a + b: near the identity at (a, b) = (1, 0); weight noise darkens/brightens."""
  return methods.Backbone("affine", lambda p, x: jnp.clip(x * p["a"] + p["b"], 0.0, 1.0),
                          {"a": jnp.float32(1.0), "b": jnp.float32(0.0)})


def test_ssim_falls_with_nu_and_the_unperturbed_identity_is_one(tmp_path):
  x = jax.image.resize(jax.random.uniform(jax.random.key(0), (8, 4, 4, 3)), (8, 16, 16, 3),
                       "bilinear")
  y = jnp.arange(8) % 3
  logits_fn = lambda imgs: jnp.stack([imgs.mean((1, 2, 3)), -imgs.mean((1, 2, 3)),
                                      imgs.std((1, 2, 3))], -1)
  backbone = _darkening_backbone()
  kw = dict(num_steps=3, batch_size=3)  # 3 batches, the last one short
  s0 = ada_ssim.ssim_samples(backbone, logits_fn, x, y, jax.random.key(1), nu=0.0, **kw)
  np.testing.assert_allclose(s0, 1.0, atol=1e-5)  # the identity map
  means = [ada_ssim.ssim_samples(backbone, logits_fn, x, y, jax.random.key(1), nu=nu,
                                 **kw).mean() for nu in (0.1, 0.4, 0.8)]
  assert means[0] > means[1] > means[2], means
  stats = ada_ssim.summarize(np.asarray([0.1, 0.5, 0.9]))
  assert stats["count"] == 3 and stats["median"] == 0.5 and stats["min"] == 0.1
  path = str(tmp_path / "fig2.png")
  plots.save_ssim_densities({"affine": {0.0: s0, 0.4: np.linspace(0.2, 0.9, 8)}}, path, 0.3)
  assert (tmp_path / "fig2.png").stat().st_size > 0
