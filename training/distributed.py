"""The pipeline's per-partition steps as Dask jobs (`--cluster`), with the pandas functions.

A dataset is cut into partitions of whole deals (`features.partitions`): a partitioned
folder is read partition by partition, each by the task that uses it (`PartitionOnDisk`;
the workers need the folder at the same path: a shared or copied disk), so a worker holds
only the partitions it is working on; a single-file dataset is read here, split by the
same hash and scattered. Then, per partition and with the functions the pandas path calls:

- fit: `FeatureBuilder.partial` on each partition, then reductions as trees of tasks
  (`tree_reduce`): the category levels united, and each history table on its own
  (its rows coded per partition, concatenated in partition order, summed once), so no
  step handles all the history at once; the fitted builder stays on the cluster and
  every partition task reads that one copy, cut to the job's as-of dates
  (`FeatureBuilder.for_dates`: 1M deals' 398 MiB of history tables -> 22 MiB at four dates);
- features and labels: `build_training_set` on each partition, written by its task into
  a Parquet dataset (`write_features`: each task returns only its row count and bytes),
  or the training set brought to this process (`training.distributed_sample`, rows in the pandas order,
  each partition's rows released on the workers as soon as they are here);
- scores: `LeadScorePredictor.score` on each partition (`score_partitions`), the predictor
  sent once with its history cut to the scoring date (`predictor_at`);
- backtest: each origin one task over the data scattered once (`origin_mapper`).

Without a cluster nothing here runs: the pandas path is the one-partition case.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from features import history as hist
from features import history_cut
from features.build import FeatureBuilder, build_training_set
from features.dataset import dataset_partitions, read_partition, staged_dataset
from features.dates import as_of_timestamps
from features.partitions import split_data
from features.schema import CanonicalData

FAN_IN = 4  # inputs per task of a reduction tree
SAMPLE_HASH_KEY = "leadscore-sample"  # 16 characters: pandas' hash key for the deal sample



@dataclass(frozen=True)
class PartitionOnDisk:
    """Partition `i` of the partitioned dataset `folder`, read by the task that works on it."""

    folder: str
    i: int


def load(part: CanonicalData | PartitionOnDisk) -> CanonicalData:
    """A task's partition: read from disk, or the scattered tables themselves."""
    return read_partition(part.folder, part.i) if isinstance(part, PartitionOnDisk) else part


def partitions(client, data: CanonicalData | str | Path) -> list:
    """The partitions as the per-partition tasks take them: `PartitionOnDisk` for each
    partition of a partitioned folder (nothing is read here or held on the workers), else
    the data split here (one part per worker) and scattered (futures of CanonicalData)."""
    if isinstance(data, (str, Path)) and dataset_partitions(data) > 1:
        return [PartitionOnDisk(str(data), i) for i in range(dataset_partitions(data))]
    if isinstance(data, (str, Path)):
        data = read_partition(data, 0)
    n = max(1, len(client.scheduler_info()["workers"]))
    return client.scatter(split_data(data, n))


def fit_builder(client, parts: list, builder: FeatureBuilder | None = None, meta=None, fan_in: int = FAN_IN,
                as_of=None):
    """The fitted FeatureBuilder as a future, the same as `FeatureBuilder.fit` on all the
    data: `partial` per partition; the levels united and each history table's rows
    concatenated as trees of tasks (`fan_in` inputs each); each table summed in its own task.
    `as_of`: the builder of a job at those as-of dates only, `FeatureBuilder.fit(...).for_dates(as_of)`:
    each table's task keeps only the rows those dates read, so the full tables never meet."""
    builder = builder or FeatureBuilder()
    dates = None if as_of is None else history_cut.as_of_dates(as_of)
    meta = meta if meta is not None else client.submit(_meta, parts[0]).result()
    partials = client.map(_partial, parts, builder=builder)
    levels = tree_reduce(client, client.map(_levels, partials), hist.unite_levels, fan_in)
    if meta.static:
        return client.submit(builder.fit_history, levels, None, meta)
    columns = client.submit(hist.history_columns, builder.group_columns, levels).result()
    tables = {name: client.submit(_history_table, tree_reduce(
        client, client.map(_table_rows, partials, table=name, levels=levels), hist.concat_rows, fan_in), dates)
        for name in hist.history_tables(columns)}
    return client.submit(builder.fit_history, levels, client.submit(hist.history_of, tables, dates), meta)


def tree_reduce(client, futures: list, combine: Callable, fan_in: int = FAN_IN):
    """One future of `combine(*futures)` for an associative `combine`, as rounds of tasks
    of `fan_in` consecutive inputs each (order kept): no task receives all the inputs."""
    if fan_in < 2:
        raise ValueError(f"fan_in must be at least 2, got {fan_in}")
    while len(futures) > 1:
        futures = [group[0] if len(group) == 1 else client.submit(combine, *group)
                   for group in (futures[i:i + fan_in] for i in range(0, len(futures), fan_in))]
    return futures[0]


def _history_table(rows: hist.TableRows, dates: np.ndarray | None) -> hist.GroupTable:
    table = hist.cumulative_table(rows)
    return table if dates is None else history_cut.cut_table(table, dates)


def _meta(part: CanonicalData | PartitionOnDisk):
    return load(part).meta


def _partial(part: CanonicalData | PartitionOnDisk, builder: FeatureBuilder) -> hist.FitPartial:
    return builder.partial(load(part))


def _levels(partial: hist.FitPartial) -> dict[str, pd.Index]:
    return partial.levels


def _table_rows(partial: hist.FitPartial, table: str, levels: dict[str, pd.Index]) -> hist.TableRows:
    return hist.table_rows(partial.events, table, levels)


def features_labels(part: CanonicalData | PartitionOnDisk, builder: FeatureBuilder, as_of,
                     share: float = 1.0) -> pd.DataFrame:
    X, y, _ = build_training_set(sampled_data(load(part), share), as_of, builder)
    return pd.concat([X, y.drop(columns=["deal_id", "as_of"])], axis=1)


def _write_part(part: CanonicalData | PartitionOnDisk, i: int, builder: FeatureBuilder, as_of: pd.DatetimeIndex,
                folder: str, keep_empty: bool) -> dict[str, int]:
    """Partition i's feature rows + labels, one file per as-of date k (`part-KKKK-IIIII.parquet`,
    empty dates skipped unless `keep_empty`); only the counts come back."""
    rows = features_labels(part, builder, as_of)
    bounds = np.searchsorted(rows["as_of"].to_numpy(), as_of.to_numpy(), side="left").tolist() + [len(rows)]
    written = 0
    for k in range(len(as_of)):
        if bounds[k + 1] > bounds[k] or (keep_empty and k == 0):
            path = Path(folder) / f"part-{k:04d}-{i:05d}.parquet"
            rows.iloc[bounds[k]:bounds[k + 1]].to_parquet(path, index=False)
            written += path.stat().st_size
    return {"rows": len(rows), "bytes": written}


def write_features(client, data: CanonicalData | str | Path, as_of, out: str | Path) -> dict[str, int]:
    """What `leadscore features --cluster --out X.parquet` calls: `features.build.features`
    per partition, each task writing its rows into the Parquet dataset folder `out` (files
    named by as-of date, then partition: `pandas.read_parquet(out)` gives the pandas path's
    table row for row). Nothing is gathered here; returns the rows, files and bytes written.
    The folder replaces `out` once complete (a failure leaves `out` as it was)."""
    parts = partitions(client, data)
    return write_feature_parts(client, parts, fit_builder(client, parts, as_of=as_of), as_of, out)


def write_feature_parts(client, parts: list, builder, as_of, out: str | Path) -> dict[str, int]:
    """`write_features` for given partitions and builder (a future or a fitted builder)."""
    dates = as_of_timestamps(as_of)
    with staged_dataset(out, carry_over=False) as staging:  # replaces `out` once complete
        done = client.gather(client.map(_write_part, parts, range(len(parts)), builder=builder, as_of=dates,
                                        folder=str(staging), keep_empty=False))
        if not any(d["bytes"] for d in done):  # no rows at all: one empty file keeps the columns
            done[0] = client.submit(_write_part, parts[0], 0, builder, dates, str(staging), True).result()
        files = len(list(staging.glob("*.parquet")))
    return {"rows": sum(d["rows"] for d in done), "files": files, "bytes": sum(d["bytes"] for d in done)}


def features(client, data: CanonicalData | str | Path, as_of, scratch: str | Path) -> pd.DataFrame:
    """`write_features` into `scratch` (a folder the workers can write), read back here as
    one table, and `scratch` removed: for outputs that are one file (.csv, .json)."""
    write_features(client, data, as_of, scratch)
    try:
        return pd.read_parquet(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def gather_rows(client, frames: list) -> pd.DataFrame:
    """Partition frames brought here, in the order the pandas path gives: by as_of, then
    partition and row (`FeatureBuilder.transform` orders rows by as_of, stably)."""
    out = pd.concat(gathered_in_order(frames), ignore_index=True)
    order = np.argsort(out["as_of"].to_numpy(), kind="stable")
    return out.take(order).reset_index(drop=True)


def gathered_in_order(futures: list) -> list:
    """The futures' results, in their order, brought here as they finish; each released on
    its worker once here, so the workers never hold every partition's result at once."""
    from distributed import as_completed

    position = {future.key: i for i, future in enumerate(futures)}
    got: list = [None] * len(futures)
    for future, result in as_completed(futures, with_results=True):
        got[position[future.key]] = result
        future.release()
    return got


def sampled_deals(deal_id: pd.Series, share: float) -> np.ndarray:
    """Whether each deal is in the sample of `share` of the deals: a hash of its id (other
    than the partitions' hash), so the same deals in every process and run."""
    ids = np.asarray(deal_id.astype("str").to_numpy(), dtype=object)
    return pd.util.hash_array(ids, hash_key=SAMPLE_HASH_KEY) < np.uint64(share * 2.0**64)


def sampled_data(data: CanonicalData, share: float) -> CanonicalData:
    """The sampled deals with their events and activities (accounts and meta unchanged)."""
    if share >= 1:
        return data
    keep = data.deals["deal_id"][sampled_deals(data.deals["deal_id"], share)]
    tables = {name: getattr(data, name) for name in ("stage_events", "activities")}
    return replace(data, deals=data.deals[data.deals["deal_id"].isin(keep)].reset_index(drop=True),
                   **{name: None if t is None else t[t["deal_id"].isin(keep)].reset_index(drop=True)
                      for name, t in tables.items()})


def _score(part: CanonicalData | PartitionOnDisk, predictor, as_of, explain, finish) -> pd.DataFrame:
    data = load(part)
    scored = predictor.score(data, as_of, explain=explain)
    return scored if finish is None else finish(scored, data)


def score_partitions(client, data: CanonicalData | str | Path, predictor, as_of, explain: bool | str,
                     finish: Callable[[pd.DataFrame, CanonicalData], pd.DataFrame] | None = None) -> pd.DataFrame:
    """`LeadScorePredictor.score` per partition (the predictor sent once), each partition's
    scores passed through `finish(scored, partition)` there (e.g. the score file's deal
    context), concatenated in partition order."""
    parts = partitions(client, data)
    [shared] = client.scatter([predictor_at(predictor, as_of)], broadcast=True)
    frames = client.map(_score, parts, predictor=shared, as_of=as_of, explain=explain, finish=finish)
    return pd.concat(gathered_in_order(frames), ignore_index=True)


def predictor_at(predictor, as_of):
    """The predictor as the workers need it to score at `as_of`: its builder's history cut to
    that date (`FeatureBuilder.for_dates`; a model trained on 10M deals carries ~3.75 GiB of
    history tables, sent to every worker). Static predictors (no history) as they are."""
    if predictor.static or as_of is None:
        return predictor
    return replace(predictor, builder=predictor.builder.for_dates([as_of]))


def origin_mapper(client, data: CanonicalData) -> Callable[[Callable, Iterable], list]:
    """A `map` for the backtest's origins: the data scattered to every worker once, each
    origin one task (`fn(data, origin=o)`), results in origin order."""
    [shared] = client.scatter([data], broadcast=True)

    def run(fn: Callable, origins: Iterable) -> list:
        return client.gather([client.submit(fn, shared, origin=origin, pure=False) for origin in origins])

    return run
