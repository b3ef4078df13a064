"""The pipeline's per-partition steps as Dask jobs (`--cluster`), with the pandas functions.

A dataset is cut into partitions of whole deals (`features.partitions`): a partitioned
folder is read partition by partition on the workers (they need the folder at the same
path: a shared or copied disk); a single-file dataset is read here and split by the same
hash. Then, per partition and with the functions the pandas path calls:

- fit: `FeatureBuilder.partial` on each partition, then reductions as trees of tasks
  (`tree_reduce`): the category levels united, and each history table on its own
  (its rows coded per partition, concatenated in partition order, summed once), so no
  step handles all the history at once; the fitted builder stays on the cluster and
  every partition task reads that one copy;
- features and labels: `transform` + `make_labels` on each partition (`feature_frames`),
  or the training set brought to this process (`training_set`, rows in the pandas order);
- scores: `LeadScorePredictor.score` on each partition (`score_partitions`);
- backtest: each origin one task over the data scattered once (`origin_mapper`).

Without a cluster nothing here runs: the pandas path is the one-partition case.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from features import history as hist
from features.build import FeatureBuilder, build_training_set
from features.dataset import dataset_partitions, read_partition
from features.partitions import split_data
from features.schema import CanonicalData

FAN_IN = 4  # inputs per task of a reduction tree


def partitions(client, data: CanonicalData | str | Path) -> list:
    """Futures of the partitions (CanonicalData each), held in the workers' memory: read
    on the workers from a partitioned folder, or split here (one per worker) and scattered."""
    if isinstance(data, (str, Path)) and dataset_partitions(data) > 1:
        n = dataset_partitions(data)
        return client.map(read_partition, [str(data)] * n, range(n), pure=False)
    if isinstance(data, (str, Path)):
        data = read_partition(data, 0)
    n = max(1, len(client.scheduler_info()["workers"]))
    return client.scatter(split_data(data, n))


def fit_builder(client, parts: list, builder: FeatureBuilder | None = None, meta=None, fan_in: int = FAN_IN):
    """The fitted FeatureBuilder as a future, the same as `FeatureBuilder.fit` on all the
    data: `partial` per partition; the levels united and each history table's rows
    concatenated as trees of tasks (`fan_in` inputs each); each table summed in its own task."""
    builder = builder or FeatureBuilder()
    meta = meta if meta is not None else client.submit(_meta, parts[0]).result()
    partials = client.map(builder.partial, parts)
    levels = tree_reduce(client, client.map(_levels, partials), hist.unite_levels, fan_in)
    if meta.static:
        return client.submit(builder.fit_history, levels, None, meta)
    columns = client.submit(hist.history_columns, builder.group_columns, levels).result()
    tables = {name: client.submit(hist.cumulative_table, tree_reduce(
        client, client.map(_table_rows, partials, table=name, levels=levels), hist.concat_rows, fan_in))
        for name in hist.history_tables(columns)}
    return client.submit(builder.fit_history, levels, client.submit(hist.history_of, tables), meta)


def tree_reduce(client, futures: list, combine: Callable, fan_in: int = FAN_IN):
    """One future of `combine(*futures)` for an associative `combine`, as rounds of tasks
    of `fan_in` consecutive inputs each (order kept): no task receives all the inputs."""
    if fan_in < 2:
        raise ValueError(f"fan_in must be at least 2, got {fan_in}")
    while len(futures) > 1:
        futures = [group[0] if len(group) == 1 else client.submit(combine, *group)
                   for group in (futures[i:i + fan_in] for i in range(0, len(futures), fan_in))]
    return futures[0]


def _meta(data: CanonicalData):
    return data.meta


def _levels(partial: hist.FitPartial) -> dict[str, pd.Index]:
    return partial.levels


def _table_rows(partial: hist.FitPartial, table: str, levels: dict[str, pd.Index]) -> hist.TableRows:
    return hist.table_rows(partial.events, table, levels)


def _features_labels(data: CanonicalData, builder: FeatureBuilder, as_of) -> pd.DataFrame:
    X, y, _ = build_training_set(data, as_of, builder)
    return pd.concat([X, y.drop(columns=["deal_id", "as_of"])], axis=1)


def feature_frames(client, parts: list, builder, as_of) -> list:
    """Futures of each partition's feature rows with labels (`features.build.features` per partition)."""
    return client.map(_features_labels, parts, builder=builder, as_of=list(as_of))


def gather_rows(client, frames: list) -> pd.DataFrame:
    """Partition frames brought here, in the order the pandas path gives: by as_of, then
    partition and row (`FeatureBuilder.transform` orders rows by as_of, stably)."""
    out = pd.concat(client.gather(frames), ignore_index=True)
    order = np.argsort(out["as_of"].to_numpy(), kind="stable")
    return out.take(order).reset_index(drop=True)


def features(client, data: CanonicalData | str | Path, as_of) -> pd.DataFrame:
    """What `leadscore features --cluster` calls: `features.build.features` per partition."""
    parts = partitions(client, data)
    return gather_rows(client, feature_frames(client, parts, fit_builder(client, parts), as_of))


def training_set(client, data: CanonicalData | str | Path) -> Callable:
    """A `build_training_set` for `training.train.fit_predictor` that builds the set on the
    cluster and brings it here: (features, labels, fitted builder)."""
    parts = partitions(client, data)

    def build(full: CanonicalData, as_of) -> tuple[pd.DataFrame, pd.DataFrame, FeatureBuilder]:
        builder = fit_builder(client, parts, meta=full.meta)
        rows = gather_rows(client, feature_frames(client, parts, builder, as_of))
        fitted = builder.result()
        keys = ["deal_id", "as_of"]
        X = rows[keys + fitted.feature_names_]
        return X, rows[keys + [c for c in rows.columns if c not in X.columns]], fitted

    return build


def _score(data: CanonicalData, predictor, as_of, explain, finish) -> pd.DataFrame:
    scored = predictor.score(data, as_of, explain=explain)
    return scored if finish is None else finish(scored, data)


def score_partitions(client, data: CanonicalData | str | Path, predictor, as_of, explain: bool | str,
                     finish: Callable[[pd.DataFrame, CanonicalData], pd.DataFrame] | None = None) -> pd.DataFrame:
    """`LeadScorePredictor.score` per partition (the predictor sent once), each partition's
    scores passed through `finish(scored, partition)` there (e.g. the score file's deal
    context), concatenated in partition order."""
    parts = partitions(client, data)
    [shared] = client.scatter([predictor], broadcast=True)
    frames = client.gather(client.map(_score, parts, predictor=shared, as_of=as_of, explain=explain, finish=finish))
    return pd.concat(frames, ignore_index=True)


def origin_mapper(client, data: CanonicalData) -> Callable[[Callable, Iterable], list]:
    """A `map` for the backtest's origins: the data scattered to every worker once, each
    origin one task (`fn(data, origin=o)`), results in origin order."""
    [shared] = client.scatter([data], broadcast=True)

    def run(fn: Callable, origins: Iterable) -> list:
        return client.gather([client.submit(fn, shared, origin=origin, pure=False) for origin in origins])

    return run
