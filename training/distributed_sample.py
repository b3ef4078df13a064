"""`train --cluster`: the deals to train on and their training set, without the whole dataset here.

`deal_sample` decides, before any feature work, which deals train (all, or a hash sample
when the as-of grid holds more than `--max-training-rows` snapshot rows) and brings only
those deals' tables to the command's process, with what the run logs of the whole data (its
fingerprint and hashed ids) computed per partition. `training_set` fits the FeatureBuilder
on every deal on the cluster (`training.distributed.fit_builder`) and builds the sampled
deals' rows per partition (`build_training_set` there); the fitted builder comes here cut on
its worker from the earliest as-of date the run reads (never the full history tables, 3.75 GiB
at 10M deals). Everything else `fit_predictor` does (leak guard, fold labels, stale rule,
evaluation) runs here on the sample.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import FeatureBuilder
from features.dataset import read_partition
from features.errors import NotEnoughData
from features.schema import CanonicalData
from features.snapshots import snapshot_positions
from training.cluster import TRAINING_ROWS_MAX
from training.distributed import (
    PartitionOnDisk,
    features_labels,
    fit_builder,
    gather_rows,
    gathered_in_order,
    load,
    partitions,
    sampled_data,
)
from training.forget import training_ids
from training.tracking import fingerprint_of, table_facts
from training.train import TrainConfig, history_needed_from, training_grid

ROW_BYTES = 470  # a training row in memory: ~55 feature columns + labels (measured on generated deals)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DealSample:
    """What `train --cluster` brings to its process instead of the dataset (`deal_sample`)."""

    data: CanonicalData  # the sampled deals with their events and activities; meta: the whole data's end
    share: float  # of the deals (1: every deal)
    deals: int  # in the whole data
    rows: int  # snapshot rows of the whole data at the training grid
    sampled_rows: int  # of them, the sampled deals' rows (the training set)
    first_created: pd.Timestamp  # the whole data's first creation (where its grid starts)
    fingerprint: dict  # `training.tracking.data_fingerprint` of the whole data
    ids: np.ndarray  # `training.forget.training_ids` of the whole data

    def note(self, max_rows: int | None) -> str:
        """The run's message about the sample ('' when every deal trains)."""
        if self.share >= 1:
            return ""
        return (f"trained on {self.sampled_rows:,} of {self.rows:,} snapshot rows, a hash sample of "
                f"{100 * self.share:.1f} % of the deals ({len(self.data.deals):,} of {self.deals:,}; "
                f"--max-training-rows {max_rows:,}); the history aggregates (win rates, dwell norms) are "
                f"fitted on every deal")


def deal_sample(client, data: CanonicalData | str | Path, grid_of: Callable[[CanonicalData], pd.DatetimeIndex],
                max_rows: int | None = TRAINING_ROWS_MAX) -> DealSample:
    """The deals to train on, decided before any feature work and brought here with their
    events and activities: every deal, or a hash sample (`sampled_deals`) of the share that
    keeps the snapshot rows of the training grid near `max_rows`. The grid is `grid_of` the
    whole data's outline (each partition's first deal and the data end); each partition's
    rows are counted, sampled, hashed for the fingerprint and the ids where it is read, so no
    process holds the whole dataset."""
    parts = partitions(client, data)
    spans = client.gather(client.map(_span, parts))
    meta = replace(spans[0][0].meta, data_end=max(s[0].data_end for s in spans))
    outline = CanonicalData(deals=pd.concat([s[0].deals for s in spans], ignore_index=True), meta=meta)
    grid = _grid_or_none(grid_of, outline)
    rows = 0 if grid is None else sum(client.gather(client.map(_grid_rows, parts, as_of=grid)))
    share = sample_share(rows, max_rows)
    pieces = gathered_in_order(client.map(_sample_facts, parts, share=share, as_of=grid))
    tables = {name: [p[1][name] for p in pieces if name in p[1]] for name in pieces[0][1]}
    sample = CanonicalData(meta=meta, accounts=client.submit(_accounts, parts[0]).result(),
                           **{name: _concat([p[0][name] for p in pieces]) for name in pieces[0][0]})
    return DealSample(sample, share, sum(s[1] for s in spans), rows, sum(p[3] for p in pieces),
                      outline.deals["created_at"].min(), fingerprint_of(tables),
                      np.unique(np.concatenate([p[2] for p in pieces])))


def _grid_or_none(grid_of: Callable, outline: CanonicalData) -> pd.DatetimeIndex | None:
    try:
        return grid_of(outline)
    except NotEnoughData:  # too short for time folds: training falls back on its own, on every deal
        return None


def _span(part: CanonicalData | PartitionOnDisk) -> tuple[CanonicalData, int]:
    """The partition's first deal (as a one-row deals table, with the partition's data end in
    its meta) and its deal count; only the deals are read when the end is declared."""
    data = _deals_only(part)
    if data.meta.data_end is None:
        data = load(part)
    first = data.deals.nsmallest(1, "created_at")[["created_at"]]
    return CanonicalData(deals=first, meta=replace(data.meta, data_end=data.data_end)), len(data.deals)


def _deals_only(part: CanonicalData | PartitionOnDisk) -> CanonicalData:
    if isinstance(part, PartitionOnDisk):
        return read_partition(part.folder, part.i, deals_only=True)
    return CanonicalData(deals=part.deals, meta=part.meta)


def _grid_rows(part: CanonicalData | PartitionOnDisk, as_of: pd.DatetimeIndex) -> int:
    return len(snapshot_positions(_deals_only(part).deals, as_of)[0])


def _sample_facts(part: CanonicalData | PartitionOnDisk, share: float, as_of: pd.DatetimeIndex | None
                  ) -> tuple[dict, dict, np.ndarray, int]:
    """The partition's sampled tables, its `table_facts` per table, its hashed ids and the
    sampled deals' snapshot rows at `as_of`."""
    data = load(part)
    names = ("deals", "stage_events", "activities")
    facts = {name: table_facts(getattr(data, name)) for name in names if getattr(data, name) is not None}
    sample = sampled_data(data, share)
    rows = 0 if as_of is None else len(snapshot_positions(sample.deals, as_of)[0])
    return {name: getattr(sample, name) for name in names}, facts, training_ids(data), rows


def _accounts(part: CanonicalData | PartitionOnDisk) -> pd.DataFrame | None:
    return read_partition(part.folder, part.i).accounts if isinstance(part, PartitionOnDisk) else part.accounts


def _concat(frames: list[pd.DataFrame | None]) -> pd.DataFrame | None:
    return None if frames[0] is None else pd.concat(frames, ignore_index=True)


def training_set(client, data: CanonicalData | str | Path, config: TrainConfig, share: float = 1.0) -> Callable:
    """A `build_training_set` for `training.train.fit_predictor` that builds the set on the
    cluster and brings it here: (features, labels, fitted builder). The builder is fitted on
    every deal of `data`; the rows are those of the `share` of the deals `sampled_deals`
    picks (`deal_sample` decides it), each partition building its sampled deals' rows. The
    builder comes here cut on its worker from the earliest as-of date the training run reads
    with it (`history_needed_from` the sample with `config`), never whole (3.75 GiB at 10M deals)."""
    parts = partitions(client, data)

    def build(sample: CanonicalData, as_of) -> tuple[pd.DataFrame, pd.DataFrame, FeatureBuilder]:
        builder = fit_builder(client, parts, meta=sample.meta)
        cut = client.submit(FeatureBuilder.for_dates, builder, list(as_of))  # what each worker holds
        rows = gather_rows(client, client.map(features_labels, parts, builder=cut, as_of=list(as_of),
                                              share=share))
        fitted = client.submit(FeatureBuilder.from_date, builder, history_needed_from(sample, config)).result()
        keys = ["deal_id", "as_of"]
        X = rows[keys + fitted.feature_names_]
        return X, rows[keys + [c for c in rows.columns if c not in X.columns]], fitted

    return build


def sample_share(rows: int, max_rows: int | None) -> float:
    """The share of the deals to featurise so that about `max_rows` of `rows` come here (1: all)."""
    if max_rows is None or rows <= max_rows:
        return 1.0
    share = max_rows / rows
    logger.warning("the training set would hold %s snapshot rows (~%.1f GiB here): training on a %.1f %% "
                   "sample of the deals (~%s rows, every row of a sampled deal)",
                   f"{rows:,}", rows * ROW_BYTES / 2**30, 100 * share, f"{max_rows:,}")
    return share


def cluster_inputs(client, data: str | Path, config: TrainConfig, max_rows: int | None = TRAINING_ROWS_MAX,
                   distributed_fit: bool = False) -> tuple[CanonicalData, pd.DataFrame | None, dict]:
    """What `leadscore train --cluster` hands `training.run.train` instead of the dataset:
    (the sampled deals' tables, their generator truth if any, the whole data's fingerprint
    and ids with `cut_for_serving`); `config` set to build the rows on the cluster (the grid
    of the whole data, the sample's note; `distributed_fit`: the booster on `lightgbm.dask`)."""
    from features.dataset import read_truth
    from training.distributed_fit import DaskBoosterTrainer

    sample = deal_sample(client, data, lambda outline: training_grid(outline, config), max_rows)
    truth = read_truth(data)
    truth = None if truth is None else truth[truth["deal_id"].isin(sample.data.deals["deal_id"])]
    config.first_created, config.notes = sample.first_created, tuple(filter(None, [sample.note(max_rows)]))
    config.training_set = training_set(client, data, config, sample.share)  # features on the cluster
    if distributed_fit:
        config.close_params["booster_trainer"] = DaskBoosterTrainer()
    return sample.data, truth, {"fingerprint": sample.fingerprint, "training_ids": sample.ids, "cut_for_serving": True}
