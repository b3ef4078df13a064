"""Partitioned datasets (hash of deal_id), chunked generation and the fit as a reduction."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.build import FeatureBuilder, features
from features.dataset import dataset_partitions, read_dataset, read_partition, read_truth, write_dataset
from features.partitions import partition_of, split_data
from features.synthetic import generate_data
from features.synthetic.chunked import generate_partitioned
from features.synthetic.generator import generate_raw, make_params

AS_OF = ["2023-09-04", "2024-03-04", "2024-09-02"]


@pytest.fixture(scope="module")
def small():
    return generate_data(1500, seed=11)[0]


def _by_id(frame: pd.DataFrame, keys=("deal_id",)) -> pd.DataFrame:
    return frame.sort_values(list(keys), kind="stable").reset_index(drop=True)


def test_partition_of_is_stable_and_spreads():
    ids = pd.Series([f"D{i:07d}" for i in range(4000)])
    part = partition_of(ids, 4)
    assert np.array_equal(part, partition_of(ids.astype(object), 4))  # the dtype does not change the hash
    assert part[:5].tolist() == partition_of(ids[:5], 4).tolist()  # a row's partition does not depend on others
    assert set(np.bincount(part, minlength=4)) and np.bincount(part).min() > 800


def test_partitioned_write_reads_back_the_same_tables(small, tmp_path):
    write_dataset(small, tmp_path / "p", partitions=3)
    back = read_dataset(tmp_path / "p")
    assert dataset_partitions(tmp_path / "p") == 3
    pd.testing.assert_frame_equal(_by_id(back.deals), _by_id(small.deals))
    pd.testing.assert_frame_equal(_by_id(back.stage_events, ["deal_id", "entered_at"]),
                                  _by_id(small.stage_events, ["deal_id", "entered_at"]))
    pd.testing.assert_frame_equal(back.accounts, small.accounts)
    assert back.meta == small.meta
    for i in range(3):  # a deal's events and activities are in its partition
        part = read_partition(tmp_path / "p", i)
        assert set(part.stage_events["deal_id"]) <= set(part.deals["deal_id"])
        assert set(part.activities["deal_id"]) <= set(part.deals["deal_id"])
        assert (partition_of(part.deals["deal_id"], 3) == i).all()
    with pytest.raises(ValueError, match="no partition 3"):
        read_partition(tmp_path / "p", 3)


def test_fit_from_partials_equals_fit_on_the_whole(small):
    """The reduction: per-partition partials combined once give the builder of the whole
    (in partition order), bit for bit, so features match row for row."""
    parts = split_data(small, 4)
    whole = pd.concat([p.deals for p in parts], ignore_index=True)
    events = pd.concat([p.stage_events for p in parts], ignore_index=True)
    acts = pd.concat([p.activities for p in parts], ignore_index=True)
    from dataclasses import replace
    concatenated = replace(small, deals=whole, stage_events=events, activities=acts, meta=parts[0].meta)
    local = FeatureBuilder().fit(concatenated)
    reduced = FeatureBuilder().fit_partials([FeatureBuilder().partial(p) for p in parts], parts[0].meta)
    assert reduced.feature_names_ == local.feature_names_
    for name, group in local.history_.groups.items():
        pd.testing.assert_frame_equal(reduced.history_.groups[name].table, group.table, check_exact=True)
    pd.testing.assert_frame_equal(reduced.history_.dwell.table, local.history_.dwell.table, check_exact=True)
    rows = pd.concat([reduced.transform(p, AS_OF) for p in parts], ignore_index=True)
    rows = rows.take(np.argsort(rows["as_of"].to_numpy(), kind="stable")).reset_index(drop=True)
    pd.testing.assert_frame_equal(rows, local.transform(concatenated, AS_OF), check_exact=True)


@pytest.mark.parametrize("grouping", [[[0, 1], [2, 3], [4]], [[0], [1, 2, 3], [4]], [[0, 1, 2, 3, 4]]])
def test_history_tables_reduced_in_any_tree_equal_the_flat_reduction(small, grouping):
    """What `training.distributed.fit_builder` does per history table: rows coded per
    partition, concatenated in groups of consecutive partitions (a tree), summed once: the
    tables of the flat reduction bit for bit, whatever the grouping."""
    from features import history as hist

    parts = [FeatureBuilder().partial(p) for p in split_data(small, 5)]
    levels = hist.unite_levels(*(hist.unite_levels(*(parts[i].levels for i in g)) for g in grouping))
    assert levels.keys() == hist.unite_levels(*(p.levels for p in parts)).keys()
    for col, values in hist.unite_levels(*(p.levels for p in parts)).items():
        assert levels[col].equals(values)
    flat = FeatureBuilder().fit_partials(parts, small.meta).history_
    tables = {}
    for name in hist.history_tables(hist.history_columns(FeatureBuilder().group_columns, levels)):
        rows = [hist.table_rows(p.events, name, levels) for p in parts]
        tables[name] = hist.cumulative_table(hist.concat_rows(*(hist.concat_rows(*(rows[i] for i in g))
                                                                for g in grouping)))
    tree = hist.history_of(tables)
    pairs = [(tree.outcomes, flat.outcomes), (tree.dwell, flat.dwell), (tree.open_load, flat.open_load),
             *((tree.groups[c], flat.groups[c]) for c in flat.groups)]
    assert list(tree.groups) == list(flat.groups) and len(flat.groups) == 7
    for got, want in pairs:
        assert got.levels.equals(want.levels)
        pd.testing.assert_frame_equal(got.table, want.table, check_exact=True)
    assert len(flat.dwell.levels) == len(small.meta.stages)  # every open stage has spells


def test_an_empty_partition_contributes_nothing(small):
    parts = split_data(small, 3)
    empty = replace_tables(parts[0], 0)
    reduced = FeatureBuilder().fit_partials([FeatureBuilder().partial(p) for p in [*parts, empty]], parts[0].meta)
    plain = FeatureBuilder().fit_partials([FeatureBuilder().partial(p) for p in parts], parts[0].meta)
    pd.testing.assert_frame_equal(reduced.history_.outcomes.table, plain.history_.outcomes.table)
    assert len(reduced.transform(empty, AS_OF)) == 0


def replace_tables(data, n: int):
    from dataclasses import replace

    return replace(data, deals=data.deals.iloc[:n], stage_events=data.stage_events.iloc[:n],
                   activities=data.activities.iloc[:n])


def test_generate_partitioned_streams_chunks_into_partitions(tmp_path):
    summary = generate_partitioned(tmp_path / "g", 1200, partitions=3, seed=5, chunk_deals=500)
    assert summary["chunks"] == 3 and summary["deals"] == 1200
    data = read_dataset(tmp_path / "g")
    assert data.deals["deal_id"].is_unique and len(data.deals) == 1200
    assert sorted(data.deals["deal_id"])[0] == "D0000001" and sorted(data.deals["deal_id"])[-1] == "D0001200"
    assert len(data.stage_events) == summary["events"] and len(data.activities) == summary["activities"]
    truth = read_truth(tmp_path / "g")
    assert sorted(truth["deal_id"]) == sorted(data.deals["deal_id"])
    assert truth.attrs["params"]["n_deals"] == 1200 and truth.attrs["params"]["seed"] == 5
    assert data.accounts["account_id"].is_unique and data.meta.data_end is not None
    # a folder written before the truth's Parquet kept the parameters: read from truth/params.json
    # (what the oracle metrics of `leadscore train` need)
    truth.attrs.clear()
    truth.to_parquet(tmp_path / "g" / "truth" / "truth.parquet", index=False)
    assert pd.read_parquet(tmp_path / "g" / "truth" / "truth.parquet").attrs == {}
    assert read_truth(tmp_path / "g").attrs["params"]["n_deals"] == 1200
    again = generate_partitioned(tmp_path / "h", 1200, partitions=3, seed=5, chunk_deals=500)
    assert again == summary
    pd.testing.assert_frame_equal(read_dataset(tmp_path / "h").deals, data.deals)  # same seed, same data
    assert len(features(data, AS_OF)) > 0


def test_chunks_have_their_own_seeds_and_the_single_run_is_untouched():
    p = make_params(300, seed=2)
    single, _ = generate_raw(p)
    again, _ = generate_raw(p)
    pd.testing.assert_frame_equal(single["deals"], again["deals"])
    from features.synthetic.generator import DealChunk
    from features.synthetic.population import make_population

    pop = make_population(p)
    a, _ = generate_raw(p, chunk=DealChunk(index=0, first=0, n=150, population=pop))
    b, _ = generate_raw(p, chunk=DealChunk(index=1, first=150, n=150, population=pop))
    assert a["deals"]["deal_id"].iloc[-1] == "D0000150" and b["deals"]["deal_id"].iloc[0] == "D0000151"
    assert not np.array_equal(a["deals"]["amount"].to_numpy(), b["deals"]["amount"].to_numpy())
    assert a["accounts"] is None and single["accounts"] is not None
