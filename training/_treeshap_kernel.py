"""Compiled row loop of :mod:`training.treeshap` (numba; imported only when contributions are asked for).

Rows are taken in blocks (in parallel), each block copied feature-major so that every inner loop runs
over the block's rows on contiguous memory: per tree, every internal node's split decision (LightGBM's
rules, the node's rule chosen once); per leaf, the bit pattern of the path features each row follows,
then one table lookup per row and path feature. A row's sums run in tree and leaf order whatever the
block or thread, so its contributions do not depend on the rows scored with it.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def _category_left(x, cat_begin, cat_end, cat_words):  # noqa: ANN001, ANN202
    """LightGBM's CategoricalDecision: NaN and negative codes go right, else the category bitset decides."""
    if math.isnan(x):
        return False
    code = int(x)
    if code < 0:
        return False
    word = code // 32
    if word >= cat_end - cat_begin:
        return False
    return ((cat_words[cat_begin + word] >> (code % 32)) & 1) == 1


@numba.njit(cache=True, nogil=True)
def _decide(values, threshold, decision, cat_begin, cat_end, cat_words, zero_threshold, out):  # noqa: ANN001, ANN202
    """``out[r]``: whether row r goes left at one node (the rule chosen once, then a tight loop)."""
    m = values.shape[0]
    if decision & 1:
        for r in range(m):
            out[r] = _category_left(values[r], cat_begin, cat_end, cat_words)
        return
    missing = (decision >> 2) & 3
    default_left = (decision & 2) != 0
    if missing == 2:  # NaN is missing: the default direction
        for r in range(m):
            v = values[r]
            out[r] = default_left if math.isnan(v) else v <= threshold
    elif missing == 1:  # zero (and NaN, read as zero) is missing
        for r in range(m):
            v = values[r]
            if math.isnan(v):
                v = 0.0
            out[r] = default_left if -zero_threshold <= v <= zero_threshold else v <= threshold
    else:  # no missing values in training: NaN reads as zero
        for r in range(m):
            v = values[r]
            out[r] = (0.0 if math.isnan(v) else v) <= threshold


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
        m = min(n, r0 + BLOCK_ROWS) - r0
        # Feature-major copies of the block, so that the loops over its rows run on contiguous memory.
        xb = np.empty((n_features, m))
        for r in range(m):
            for j in range(n_features):
                xb[j, r] = X[r0 + r, j]
        ob = np.zeros((n_features, m))
        left = np.empty((max_nodes, m), dtype=np.bool_)
        missed = np.empty(m, dtype=np.int64)  # bit s: the row leaves the path on the leaf's s-th feature
        entry = np.empty(m, dtype=np.int64)
        # Trees in order, leaves in order: each row's sums run in the same order whatever the blocks.
        for t in range(n_trees):
            start = tree_node_start[t]
            for node in range(start, tree_node_start[t + 1]):
                _decide(
                    xb[node_feature[node]],
                    node_threshold[node],
                    node_decision[node],
                    node_cat_begin[node],
                    node_cat_end[node],
                    cat_words,
                    zero_threshold,
                    left[node - start],
                )
            for leaf in range(tree_leaf_start[t], tree_leaf_start[t + 1]):
                first = leaf_feature_start[leaf]
                d = leaf_feature_start[leaf + 1] - first
                missed[:] = 0
                for k in range(leaf_path_start[leaf], leaf_path_start[leaf + 1]):
                    went = left[path_node[k] - start]
                    want = path_left[k]
                    bit = np.int64(1) << path_slot[k]
                    for r in range(m):
                        if went[r] != want:
                            missed[r] |= bit
                full = (np.int64(1) << d) - 1
                table = leaf_table_start[leaf]
                for r in range(m):
                    entry[r] = table + (full & ~missed[r]) * d  # the row's pattern in the leaf's table
                for s in range(d):
                    dst = ob[leaf_features[first + s]]
                    for r in range(m):
                        dst[r] += tables[entry[r] + s]
        for r in range(m):
            for j in range(n_features):
                out[r0 + r, j] = ob[j, r]
    return out
