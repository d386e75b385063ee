"""Compiled row loop of :mod:`training.treeshap` (numba; imported only when contributions are asked for).

Per row: every internal node's split decision (LightGBM's rules), then per leaf the bit pattern of the
path features the row follows and one table lookup. Rows run in parallel; each row writes only its own
output row, so the result does not depend on the number of threads.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def _goes_left(x, threshold, decision, cat_begin, cat_end, cat_words, zero_threshold):  # noqa: ANN001, ANN202
    if decision & 1:  # categorical: NaN and negative codes go right, else the category bitset decides
        if math.isnan(x):
            return False
        code = int(x)
        if code < 0:
            return False
        word = code // 32
        if word >= cat_end - cat_begin:
            return False
        return ((cat_words[cat_begin + word] >> (code % 32)) & 1) == 1
    missing = (decision >> 2) & 3  # 0 none, 1 zero, 2 NaN
    if math.isnan(x) and missing != 2:
        x = 0.0
    if (missing == 1 and -zero_threshold <= x <= zero_threshold) or (missing == 2 and math.isnan(x)):
        return (decision & 2) != 0  # the default direction
    return x <= threshold


@numba.njit(cache=True, nogil=True)
def leaf_tables(values, zero_start, zeros, table_start, tables):  # noqa: ANN001, ANN201
    """Fill every leaf's 2^d × d table (see :func:`training.treeshap.leaf_table`, its reference)."""
    for leaf in range(values.shape[0]):
        first = zero_start[leaf]
        d = zero_start[leaf + 1] - first
        weights = np.empty(d)
        for s in range(d):
            weights[s] = math.exp(math.lgamma(s + 1) + math.lgamma(d - s) - math.lgamma(d + 1))
        e = np.empty(d)
        for pattern in range(1 << d):
            for i in range(d):
                e[:] = 0.0
                e[0] = 1.0
                off_path = 1.0
                followed = 0
                for j in range(d):
                    if j == i:
                        continue
                    z = zeros[first + j]
                    if (pattern >> j) & 1:
                        followed += 1
                        for k in range(followed, 0, -1):
                            e[k] += e[k - 1] * z
                    else:
                        off_path *= z
                total = 0.0
                for k in range(followed + 1):
                    total += weights[followed - k] * e[k]
                o = float((pattern >> i) & 1)
                tables[table_start[leaf] + pattern * d + i] = (
                    values[leaf] * (o - zeros[first + i]) * off_path * total
                )


#: Rows explained together: one tree's tables stay in cache while the block's rows look them up.
BLOCK_ROWS = 256


@numba.njit(cache=True, nogil=True, parallel=True)
def contributions(  # noqa: ANN201, PLR0913
    X,  # noqa: ANN001
    node_feature,  # noqa: ANN001
    node_threshold,  # noqa: ANN001
    node_decision,  # noqa: ANN001
    node_cat_begin,  # noqa: ANN001
    node_cat_end,  # noqa: ANN001
    cat_words,  # noqa: ANN001
    tree_node_start,  # noqa: ANN001
    tree_leaf_start,  # noqa: ANN001
    leaf_path_start,  # noqa: ANN001
    path_node,  # noqa: ANN001
    path_left,  # noqa: ANN001
    path_slot,  # noqa: ANN001
    leaf_feature_start,  # noqa: ANN001
    leaf_features,  # noqa: ANN001
    leaf_table_start,  # noqa: ANN001
    tables,  # noqa: ANN001
    zero_threshold,  # noqa: ANN001
):
    n, n_features = X.shape
    out = np.zeros((n, n_features))
    n_trees = tree_node_start.shape[0] - 1
    max_nodes = 1
    for t in range(n_trees):
        max_nodes = max(max_nodes, tree_node_start[t + 1] - tree_node_start[t])
    n_blocks = (n + BLOCK_ROWS - 1) // BLOCK_ROWS
    for b in numba.prange(n_blocks):
        r0 = b * BLOCK_ROWS
        r1 = min(n, r0 + BLOCK_ROWS)
        left = np.empty((r1 - r0, max_nodes), dtype=np.bool_)
        # Trees in order, leaves in order: each row's sums run in the same order whatever the blocks.
        for t in range(n_trees):
            start = tree_node_start[t]
            for r in range(r0, r1):
                for node in range(start, tree_node_start[t + 1]):
                    left[r - r0, node - start] = _goes_left(
                        X[r, node_feature[node]],
                        node_threshold[node],
                        node_decision[node],
                        node_cat_begin[node],
                        node_cat_end[node],
                        cat_words,
                        zero_threshold,
                    )
            for leaf in range(tree_leaf_start[t], tree_leaf_start[t + 1]):
                first = leaf_feature_start[leaf]
                d = leaf_feature_start[leaf + 1] - first
                full = (1 << d) - 1
                for r in range(r0, r1):
                    missed = 0  # bit s: the row leaves the path at a node on the leaf's s-th feature
                    for k in range(leaf_path_start[leaf], leaf_path_start[leaf + 1]):
                        if left[r - r0, path_node[k] - start] != path_left[k]:
                            missed |= 1 << path_slot[k]
                    base = leaf_table_start[leaf] + (full & ~missed) * d
                    for s in range(d):
                        out[r, leaf_features[first + s]] += tables[base + s]
    return out
