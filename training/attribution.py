"""Path attribution ("Saabas", tree interpreter) for a LightGBM booster: per-feature
log-odds contributions at the cost of a `pred_leaf` predict.

Each tree's output is decomposed along the path root -> leaf: the change in the node's
expected value at each split is credited to the split's feature, and the root's expected
value goes to the bias. The decomposition is exact (bias + sum of contributions == raw
score, LightGBM's `boost_from_average` init score included, since it sits in the first
tree's values); unlike TreeSHAP it depends on the order of the splits, so it is an
approximation of the Shapley values, not a replacement for them where they are needed.

Every leaf's contributions are known once the booster is trained, so they are tabulated
once as a sparse matrix (total leaves x (n_features + 1)); per request, LightGBM's own
`pred_leaf` finds the leaves (categorical splits and missing-value directions stay
LightGBM's) and one sparse product sums their rows.
"""
from __future__ import annotations

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from training.lightgbm_fast import SINGLE_THREAD_ROWS

# A leaf table up to this size is also kept dense: sparse indicator @ dense table is ~2x
# quicker than sparse @ sparse (2.3 MB for 170 trees of 31 leaves and 53 features).
DENSE_BYTES = 64 * 2**20
# Up to this many rows the leaves' rows of the dense table are summed directly: building the
# sparse indicator costs more (~0.1 ms) than the sum for a few deals
FEW_ROWS = 16


class PathAttribution(BaseEstimator):
    """Path attribution of a single-output LightGBM booster (binary, regression, quantile...).

    Node expected values are the leaf values weighted by their training counts, as in
    LightGBM's own TreeSHAP, so the bias column equals `pred_contrib`'s bias column (the
    dump's `internal_value` is the regularised node output, printed to 6 digits).
    """

    def fit(self, booster: lgb.Booster, num_iteration: int | None = None) -> "PathAttribution":
        """Tabulate the contributions of every leaf of the first `num_iteration` trees
        (None or <= 0: LightGBM's default, the best iteration if there is one, else all)."""
        dump = booster.dump_model(num_iteration=num_iteration)
        if dump.get("num_tree_per_iteration", 1) != 1:
            raise ValueError(f"path attribution needs a single-output booster; this one has "
                             f"{dump['num_tree_per_iteration']} trees per iteration (multiclass)")
        n_features = dump["max_feature_idx"] + 1
        trees = dump["tree_info"]
        scale = 1.0 / len(trees) if dump.get("average_output") and trees else 1.0  # random-forest mode
        offsets, rows, cols, vals, leaf_values, total = [], [], [], [], [], 0
        for tree in trees:
            r, c, v, n_leaves = _tree_entries(tree["tree_structure"], n_features)
            leaf_values.append(_leaf_values(tree["tree_structure"], n_leaves))
            offsets.append(total)
            rows.append(r + total)
            cols.append(c)
            vals.append(v * scale)
            total += n_leaves
        cat = (lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype))
        coo = sp.coo_matrix((cat(vals, float), (cat(rows, np.int64), cat(cols, np.int64))),
                            shape=(total, n_features + 1))
        self.leaf_matrix_ = coo.tocsr()  # duplicates (a feature split twice on a path) are summed
        self.leaf_matrix_.sum_duplicates()
        small = total * (n_features + 1) * 8 <= DENSE_BYTES
        self.dense_leaf_matrix_ = self.leaf_matrix_.toarray() if small else None
        self.tree_offsets_ = np.asarray(offsets, dtype=np.int64)
        self.leaf_values_ = cat(leaf_values, float)
        # LightGBM's raw score is the leaves' values added tree by tree in double: `raw_from_leaves`
        # repeats that exactly, except where the booster averages its trees (random-forest mode)
        self.sums_like_predict_ = not dump.get("average_output", False)
        self.num_iteration_ = len(trees)
        self.n_features_in_ = n_features
        self.feature_names_in_ = list(dump.get("feature_names", []))
        self.booster_ = booster
        return self

    def contributions(self, X, num_threads: int | None = None) -> np.ndarray:
        """(n, n_features + 1) contributions of the rows of X (anything `booster.predict`
        takes: an `lgb_matrix`, a frame...), last column the bias, like `pred_contrib`.
        num_threads None: one thread up to SINGLE_THREAD_ROWS rows, LightGBM's default above."""
        check_is_fitted(self, "leaf_matrix_")
        if X.shape[0] == 0:  # LightGBM's predict fails on no rows
            return np.zeros((0, self.n_features_in_ + 1))
        if num_threads is None and X.shape[0] <= SINGLE_THREAD_ROWS:
            num_threads = 1
        kwargs = {} if num_threads is None else {"num_threads": num_threads}
        leaves = self.booster_.predict(X, pred_leaf=True, num_iteration=self.num_iteration_, **kwargs)
        return self.from_leaves(leaves)

    def from_leaves(self, leaves: np.ndarray) -> np.ndarray:
        """Contributions from `pred_leaf` output of the same booster and num_iteration:
        (n, n_trees) leaf index within each tree."""
        check_is_fitted(self, "leaf_matrix_")
        leaves = np.atleast_2d(leaves)
        n, n_trees = leaves.shape
        if n_trees != len(self.tree_offsets_):
            raise ValueError(f"leaf indexes of {n_trees} trees for a table of {len(self.tree_offsets_)}: "
                             f"predict with num_iteration={self.num_iteration_}")
        ids = (leaves + self.tree_offsets_).ravel()
        if self.dense_leaf_matrix_ is not None and n <= FEW_ROWS:
            # tree by tree, as the sparse product adds them (bitwise equal, tested); + 0.0: the
            # product starts from +0.0, so a sum of -0.0 only is +0.0 there too
            return self.dense_leaf_matrix_[ids].reshape(n, n_trees, -1).cumsum(axis=1)[:, -1] + 0.0
        indicator = sp.csr_matrix((np.ones(ids.size), ids, np.arange(0, ids.size + 1, n_trees)),
                                  shape=(n, self.leaf_matrix_.shape[0]))
        if self.dense_leaf_matrix_ is not None:
            return indicator @ self.dense_leaf_matrix_
        return (indicator @ self.leaf_matrix_).toarray()

    def raw_from_leaves(self, leaves: np.ndarray) -> np.ndarray:
        """The raw score from `pred_leaf` output, summed as LightGBM's predict sums it (tree by
        tree, in double), so a caller that needs both leaves and scores walks the trees once.
        Bitwise equal to `predict(raw_score=True)` when `sums_like_predict_` (tested)."""
        check_is_fitted(self, "leaf_matrix_")
        leaves = np.atleast_2d(leaves)
        # a running sum over trees, in tree order, rounds exactly as LightGBM's loop does (a plain
        # sum may add pairwise, which rounds differently)
        return self.leaf_values_[(leaves + self.tree_offsets_).T].cumsum(axis=0)[-1]


def _tree_entries(root: dict, n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(leaf index, column, value) entries of one dumped tree's leaf matrix, and its leaf count."""
    nodes, parents = _preorder(root)
    value, _ = _expected_values(nodes)
    rows, cols, vals = [], [], []
    for pos, node in enumerate(nodes):
        if not _is_leaf(node):
            continue
        leaf = node.get("leaf_index", 0)  # a one-leaf tree dumps only its leaf_value
        entries = [(n_features, value[0])]  # the bias: the root's expected value
        child, parent = pos, parents[pos]
        while parent >= 0:  # up to the root: each split's change in expected value
            entries.append((nodes[parent]["split_feature"], value[child] - value[parent]))
            child, parent = parent, parents[parent]
        rows.extend([leaf] * len(entries))
        cols.extend(c for c, _ in entries)
        vals.extend(v for _, v in entries)
    n_leaves = sum(_is_leaf(node) for node in nodes)
    return np.asarray(rows), np.asarray(cols), np.asarray(vals, dtype=float), n_leaves


def _leaf_values(root: dict, n_leaves: int) -> np.ndarray:
    """Leaf values of one dumped tree by leaf index."""
    out = np.zeros(n_leaves)
    for node in _preorder(root)[0]:
        if _is_leaf(node):
            out[node.get("leaf_index", 0)] = node["leaf_value"]
    return out


def _preorder(root: dict) -> tuple[list[dict], list[int]]:
    """The nodes of a tree, each after its parent, with the parent's position (-1: root).
    Iterative: a deep (chain-like) tree must not hit Python's recursion limit."""
    nodes, parents, stack = [], [], [(root, -1)]
    while stack:
        node, parent = stack.pop()
        nodes.append(node)
        parents.append(parent)
        if not _is_leaf(node):
            stack.append((node["right_child"], len(nodes) - 1))
            stack.append((node["left_child"], len(nodes) - 1))
    return nodes, parents


def _expected_values(nodes: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Each node's expected output (its leaves' values weighted by training counts) and count;
    children come after parents in `nodes`, so one reverse pass fills both."""
    position = {id(node): pos for pos, node in enumerate(nodes)}
    value, weight = np.zeros(len(nodes)), np.zeros(len(nodes))
    for pos in range(len(nodes) - 1, -1, -1):
        node = nodes[pos]
        if _is_leaf(node):
            if "leaf_coeff" in node:
                raise ValueError("path attribution does not support linear trees (linear_tree=True)")
            value[pos], weight[pos] = node["leaf_value"], node.get("leaf_count", 0)
            continue
        left, right = position[id(node["left_child"])], position[id(node["right_child"])]
        weight[pos] = weight[left] + weight[right]
        share = weight[left] / weight[pos] if weight[pos] > 0 else 0.5  # no counts (e.g. a refit model)
        value[pos] = share * value[left] + (1 - share) * value[right]
    return value, weight


def _is_leaf(node: dict) -> bool:
    return "split_feature" not in node
