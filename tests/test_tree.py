import jax.numpy as jnp
import numpy as np
import pytest

from nres.tree import (
    tree_add,
    tree_all_finite,
    tree_broadcast,
    tree_norm,
    tree_scale,
    tree_size,
    tree_weighted_sum,
    tree_where,
    tree_zeros_like,
)

TREE = {"a": jnp.arange(6.0).reshape(3, 2), "b": jnp.ones((3,))}


def test_arithmetic_leaf_by_leaf():
    doubled = tree_add(TREE, TREE)
    np.testing.assert_array_equal(doubled["a"], 2 * TREE["a"])
    np.testing.assert_array_equal(tree_scale(TREE, 3.0)["b"], 3 * np.ones(3))
    assert float(jnp.sum(tree_zeros_like(TREE)["a"])) == 0.0
    assert tree_size(TREE) == 9
    assert float(tree_norm(TREE)) == pytest.approx(np.sqrt(np.sum(np.arange(6.0) ** 2) + 3))


def test_where_and_weighted_sum_over_the_leading_axis():
    picked = tree_where(jnp.array([True, False, True]), TREE, tree_zeros_like(TREE))
    np.testing.assert_array_equal(picked["a"][1], [0.0, 0.0])
    np.testing.assert_array_equal(picked["a"][2], [4.0, 5.0])
    stacked = {"x": jnp.ones((2, 3, 4))}
    on_axis_1 = tree_where(jnp.array([True, False, True]), stacked, tree_zeros_like(stacked), axis=1)
    assert float(jnp.sum(on_axis_1["x"][:, 1])) == 0.0 and float(jnp.sum(on_axis_1["x"][:, 0])) == 8.0
    summed = tree_weighted_sum(jnp.array([1.0, 0.0, -1.0]), TREE)
    np.testing.assert_array_equal(summed["a"], [-4.0, -4.0])


def test_broadcast_and_finiteness():
    assert tree_broadcast(TREE, 4)["a"].shape == (4, 3, 2)
    assert bool(tree_all_finite(TREE))
    assert not bool(tree_all_finite({"a": jnp.array([1.0, jnp.nan])}))
