"""The close-probability booster trained data-parallel with `lightgbm.dask` (`--distributed-fit`).

What LightGBM's own tracker reports, and what is done about it:

- fixed ports: no `local_listen_port` is passed (LightGBM refuses one when a machine runs
  several workers, as a `LocalCluster` does); LightGBM asks each worker for a free port;
- empty partitions (a worker with no rows stalls or kills the training, LightGBM#3882,
  and its test re-enabled only after timeouts, #5537): partitions without rows are dropped
  before the fit;
- partitions sorted by label: LightGBM#5025 (open) reports a distributed model at chance
  (0.5 vs 0.68 accuracy) on label-sorted partitions, and the maintainers' answer is that
  every partition is expected to see every class; each worker bins a share of the features
  from its own rows only (#5798), so one-class partitions also distort the bins. The rows
  are shuffled across partitions first, by a seeded random key;
- two fits at once on one cluster collide on the workers' sockets: every fit holds the
  cluster-wide `distributed.Lock(training.cluster.FIT_LOCK)`;
- no early stopping in the Dask interface (it hangs, LightGBM#6351, #7009): a fixed
  number of rounds is trained, then the best iteration is chosen here on the validation
  rows from the per-iteration log loss (what early stopping would have picked, given
  enough patience).

The result is `to_local()`'s plain `lightgbm.Booster`, so the registered model and the
service need no Dask. `DaskBoosterTrainer` plugs this into
`training.models.CloseProbabilityModel` (its `booster_trainer`), so calibration, the
no-signal guard and the time-to-close models stay as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.attribution import PathAttribution
from training.cluster import FIT_LOCK

DISTRIBUTED_ROUNDS = 1000  # rounds trained on the cluster; the best iteration is chosen afterwards

def _shuffled(frame: pd.DataFrame, buckets: int, seed: int) -> list[pd.DataFrame]:
    """One partition's rows dealt at random into `buckets` pieces."""
    key = np.random.default_rng(seed).integers(0, buckets, len(frame))
    return [frame.loc[key == b] for b in range(buckets)]


def _bucket(pieces: list[list[pd.DataFrame]], b: int) -> pd.DataFrame:
    return pd.concat([p[b] for p in pieces], ignore_index=True)


def shuffle_partitions(client, parts: list, seed: int = 0) -> list:
    """Futures of the rows of `parts` (frames or futures of frames) shuffled across as many
    partitions, empty ones dropped: no partition holds one label only because its input did."""
    n = len(parts)
    pieces = client.map(_shuffled, parts, buckets=n, seed=[seed * 100_003 + i for i in range(n)], pure=False)
    shuffled = [client.submit(_bucket, pieces, b, pure=False) for b in range(n)]
    sizes = client.gather(client.map(len, shuffled))
    return [f for f, size in zip(shuffled, sizes) if size > 0]


def dask_booster(client, parts: list, label: str, features: list[str], params: dict, rounds: int,
                 seed: int = 0) -> lgb.Booster:
    """A binary LightGBM booster trained data-parallel on the cluster from partitions of
    rows (frames or futures holding `features` and the 0/1 column `label`)."""
    import dask.dataframe as dd
    from distributed import Lock
    from lightgbm.dask import DaskLGBMClassifier

    parts = shuffle_partitions(client, parts, seed)
    if not parts:
        raise ValueError("no training rows in any partition")
    frame = dd.from_delayed(parts, meta=client.submit(lambda f: f.iloc[:0], parts[0]).result(), verify_meta=False)
    params = {k: v for k, v in params.items() if k not in ("num_threads", "metric", "verbosity")}
    model = DaskLGBMClassifier(client=client, n_estimators=rounds, verbosity=-1, **params)
    with Lock(FIT_LOCK):  # the current client's scheduler
        model.fit(frame[features], frame[label].astype("int64"))
    return model.to_local().booster_


def best_iteration(booster: lgb.Booster, X_valid: pd.DataFrame, y_valid: np.ndarray, chunk: int = 20_000) -> int:
    """The iteration with the lowest validation log loss (1-based), from the leaves reached
    (one walk of the trees for all iterations, in chunks of rows)."""
    table = PathAttribution().fit(booster)
    loss = np.zeros(booster.num_trees())
    for start in range(0, len(X_valid), chunk):
        leaves = booster.predict(X_valid.iloc[start:start + chunk], pred_leaf=True)
        raw = table.leaf_values_[(np.atleast_2d(leaves) + table.tree_offsets_).T].cumsum(axis=0)
        y = np.asarray(y_valid[start:start + chunk], dtype="float64")
        loss += (np.logaddexp(0.0, raw) - y * raw).sum(axis=1)  # -log likelihood of a logistic model
    return int(np.argmin(loss)) + 1


@dataclass(frozen=True)
class DaskBoosterTrainer:
    """`CloseProbabilityModel(booster_trainer=...)`: trains on the current Dask client
    (`distributed.default_client()`, the one `--cluster` opened). Holds no client, so the
    fitted model pickles as usual."""

    rounds: int = DISTRIBUTED_ROUNDS
    partitions: int | None = None  # default: one per worker

    def __call__(self, params: dict, X: pd.DataFrame, y: np.ndarray, X_valid: pd.DataFrame,
                 y_valid: np.ndarray) -> lgb.Booster:
        from distributed import default_client

        client = default_client()
        n = self.partitions or max(1, len(client.scheduler_info()["workers"]))
        rows = X.assign(_label=np.asarray(y, dtype="int64"))
        futures = client.scatter([rows.iloc[idx] for idx in np.array_split(np.arange(len(rows)), n)])
        booster = dask_booster(client, futures, "_label", list(X.columns), params, self.rounds,
                               seed=int(params.get("seed", 0)))
        booster.best_iteration = best_iteration(booster, X_valid, y_valid)
        return booster
