"""Inner models (MLP, CNN) and the outer losses."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nres.tasks.lopt.inner_models import CLIP_CE, OUTER_LOSSES, _avg_pool, cnn, cross_entropy, mlp
from nres.tree import tree_size


def test_default_mlp_shape_and_size():
    model = mlp((8, 8, 1))
    params = model.init(jax.random.PRNGKey(0))
    assert tree_size(params) == (64 * 32 + 32) + 2 * (32 * 32 + 32) + (32 * 10 + 10)  # 4522
    logits = model.apply(params, jnp.ones((5, 8, 8, 1)))
    assert logits.shape == (5, 10) and bool(jnp.all(jnp.isfinite(logits)))
    assert model.name == "mlp32-32-32-gelu"


@pytest.mark.parametrize("size, flat", [(8, 1), (32, 4)])
def test_cnn_shape_and_size(size, flat):
    model = cnn((size, size, 3))
    params = model.init(jax.random.PRNGKey(0))
    convs = (27 * 32 + 32) + 3 * (9 * 32 * 32 + 32)
    assert tree_size(params) == convs + flat * 32 * 10 + 10
    assert model.apply(params, jnp.ones((2, size, size, 3))).shape == (2, 10)


def test_avg_pool_keeps_a_constant_map_constant():
    x = jnp.full((1, 3, 3, 2), 4.0)  # odd size: SAME padding must not dilute the border
    np.testing.assert_allclose(_avg_pool(x), jnp.full((1, 2, 2, 2), 4.0))


def test_bad_model_options():
    with pytest.raises(ValueError, match="activation 'elu'"):
        mlp((8, 8, 1), activation="elu")
    with pytest.raises(ValueError, match="hidden sizes"):
        mlp((8, 8, 1), hidden_sizes=(0,))


def test_outer_losses():
    logits = jnp.asarray([[100.0, 0.0] + [0.0] * 8, [0.0] * 10])
    labels = jnp.asarray([1, 3])
    ce = cross_entropy(logits, labels)
    np.testing.assert_allclose(ce, [100.0, math.log(10)], rtol=1e-5)
    assert float(OUTER_LOSSES["ce"](logits, labels)) == pytest.approx((100 + math.log(10)) / 2, rel=1e-5)
    assert float(OUTER_LOSSES["clipped_ce"](logits, labels)) == pytest.approx((CLIP_CE + math.log(10)) / 2, rel=1e-5)
    # error rate: example 0 is wrong (argmax 0, label 1); example 1 predicts 0 (ties) and is wrong too
    assert float(OUTER_LOSSES["accuracy"](logits, labels)) == 1.0
    assert float(OUTER_LOSSES["accuracy"](logits, jnp.asarray([0, 0]))) == 0.0
