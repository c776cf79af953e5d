import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nres.tree import (
    SMALL_SELECTION,
    masked_vmap,
    selection_size,
    set_ranks,
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



# masked_vmap: n = 10 rows, at most M = 4 done selectively. Row i of the inputs is a key
# and a number; fn returns a [2, 3] block (rows on axis 1 of "a", like the member axis of
# particle states) and a number (rows on axis 0 of "b").
ROWS, M = 10, 4
INPUTS = (jax.random.split(jax.random.PRNGKey(0), ROWS), jnp.arange(ROWS, dtype=jnp.float32))
ON_FALSE = {"a": -jnp.ones((2, ROWS, 3)), "b": jnp.full((ROWS,), -1.0)}
OUT_AXES = {"a": 1, "b": 0}


def _row(row):
    key, x = row
    noise = jax.random.normal(key, (3,))
    return {"a": jnp.stack([noise, x * noise]), "b": 0.1 * x + 1.0}


def _masked(mask, inputs=INPUTS, on_false=ON_FALSE, size=M):
    return masked_vmap(_row, mask, inputs, on_false, size, out_axes=OUT_AXES)


def _full(mask, inputs, on_false):
    rows = jax.vmap(_row, out_axes=OUT_AXES)(inputs)
    return {"a": tree_where(mask, rows["a"], on_false["a"], axis=1), "b": tree_where(mask, rows["b"], on_false["b"])}


@pytest.fixture(scope="module")
def masked_and_full():
    """The compiled helper and the full computation (``fn`` on every row, then select).
    Inputs are arguments, not constants, which XLA would fold with other arithmetic."""
    return jax.jit(_masked), jax.jit(_full)


@pytest.mark.parametrize("selected", [[], [3], [0, 9], [1, 2, 5, 9], [0, 2, 4, 6, 7], list(range(ROWS))],
                         ids=["none", "one", "ends", "exactly_M", "more_than_M", "all"])
def test_masked_vmap_equals_the_full_computation(masked_and_full, selected):
    masked, full = masked_and_full
    mask = jnp.zeros(ROWS, bool).at[jnp.asarray(selected, jnp.int32)].set(True)
    got, want = masked(mask, INPUTS, ON_FALSE), full(mask, INPUTS, ON_FALSE)
    for leaf in ("a", "b"):
        np.testing.assert_array_equal(got[leaf], want[leaf])  # bit for bit


def test_masked_vmap_compiles_fn_for_m_rows_only_below_n():
    def batches(size):  # the row counts fn is vmapped over, from the jaxpr
        jaxpr = str(jax.make_jaxpr(lambda mask: _masked(mask, size=size))(jnp.zeros(ROWS, bool)))
        return sorted({int(b) for b in re.findall(r"f32\[(\d+),3\] = mul", jaxpr)})

    assert batches(M) == [M]  # M rows at a time, in a loop
    assert batches(ROWS) == [ROWS]  # all rows, then select


def test_masked_vmap_branches_only_where_skipping_the_rows_pays():
    """All rows at once with ``unbranched_if_small``: a small result is computed and
    selected in every case (no branch to compile); a large one, or any without the
    option, is skipped when no row is set (a ``cond``)."""
    def branches(on_false, unbranched=True):
        fn = lambda mask: masked_vmap(lambda x: x * 2.0, mask, on_false, on_false, ROWS, unbranched_if_small=unbranched)
        return str(jax.make_jaxpr(fn)(jnp.zeros(ROWS, bool))).count("cond[")

    small, large = jnp.ones((ROWS, 3)), jnp.ones((ROWS, SMALL_SELECTION // ROWS + 1))
    assert branches(small) == 0 and branches(large) == 1 and branches(small, unbranched=False) == 1
    for on_false in (small, large):
        got = jax.jit(lambda m, x: masked_vmap(lambda r: r * 2.0, m, x, x, ROWS, unbranched_if_small=True))(
            jnp.arange(ROWS) % 3 == 0, on_false)
        np.testing.assert_array_equal(got, np.where((np.arange(ROWS) % 3 == 0)[:, None], 2.0, 1.0) * np.ones(on_false.shape))


def test_masked_vmap_keeps_absent_leaves():
    eps, xi = masked_vmap(lambda row: (row * 2.0, None), jnp.array([True, False, False]), jnp.ones(3),
                          (jnp.zeros(3), None), 1)
    np.testing.assert_array_equal(eps, [2.0, 0.0, 0.0])
    assert xi is None


@pytest.mark.parametrize("n", [32, 70, 2100])  # up to 64 words and beyond
def test_set_ranks_count_the_set_entries_before_each(n):
    rng = np.random.default_rng(n)
    masks = rng.random((40, n)) < rng.choice([0.0, 0.05, 0.3, 1.0], (40, 1))  # 40 masks at once
    got = jax.jit(jax.vmap(set_ranks))(jnp.asarray(masks))
    np.testing.assert_array_equal(got, np.cumsum(masks, axis=1) - masks)


def test_selection_size_covers_the_expected_count_or_falls_back_to_all_rows():
    assert 10 + 4 * np.sqrt(10) < selection_size(200, 0.05) <= 100  # the default Lorenz NRES window
    assert selection_size(200, 1 / 2000) == 6
    assert selection_size(200, 0.5) == selection_size(200, 1.0) == 200
    assert selection_size(8, 0.0) == 4 and selection_size(7, 0.0) == 7


def test_selection_size_computes_every_row_when_all_rows_are_small():
    assert selection_size(200, 0.05, row_size=2) == 200  # Lorenz noise: 400 scalars in all
    assert selection_size(200, 0.05, row_size=SMALL_SELECTION // 200) == 200
    assert selection_size(200, 0.05, row_size=SMALL_SELECTION // 200 + 1) == selection_size(200, 0.05) < 100
