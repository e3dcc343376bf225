"""The training methods take radii in the forms every entry point accepts ('8/255', 0.03,
'0.03'; `core.radius.as_radius`), and name a bad one."""

import jax
import jax.numpy as jnp
import pytest

from adacorr import methods, models


@pytest.fixture(scope="module")
def model():
  return models.get_model("preact_resnet", num_classes=10, mean=(0.5,), std=(0.5,), width=8,
                          stage_sizes=(1, 1, 1, 1))


@pytest.mark.parametrize("name,kw", [
    ("linf_at", {"eps": "8/255"}),
    ("l2_at", {"eps": "0.5"}),
    ("rlat", {"eps": "0.08"}),
    ("robust_augmix", {"eps": "1"}),
    ("ant", {"eps": "2.3"}),
])
def test_text_radius_is_accepted(model, name, kw):
  assert methods.FACTORIES[name](model, **kw) is not None


def test_text_radius_builds_the_same_program_as_the_number(model):
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
  batch = {"image": x, "label": jnp.arange(4) % 10}
  variables = model.init(jax.random.key(1), x, train=False)
  programs = [str(jax.make_jaxpr(methods.FACTORIES["linf_at"](model, eps=eps, num_steps=2))(
      variables["params"], variables["batch_stats"], batch, jax.random.key(2)))
              for eps in ("8/255", 8 / 255, 4 / 255)]
  assert programs[0] == programs[1] != programs[2]


@pytest.mark.parametrize("name,eps,match", [
    ("linf_at", "8/0", "not a number"),
    ("rlat", "eight", "not a number"),
    ("robust_augmix", True, "bool"),
    ("ant", "-1", "eps"),
    ("l2_at", "nan", "eps"),
])
def test_bad_radius_is_named(model, name, eps, match):
  with pytest.raises(ValueError, match=match):
    methods.FACTORIES[name](model, eps=eps)
