"""The pipeline on a real `LocalCluster` (2 worker processes): features, scores and the
backtest's origins equal the pandas path; `lightgbm.dask` close to the single-machine model;
empty and label-sorted partitions. Slow: starting the cluster and importing on the workers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.build import FeatureBuilder, build_training_set, features
from features.dataset import read_dataset, write_dataset
from features.partitions import dask_table
from training import distributed, distributed_sample, tracking
from training.cluster import ClusterError, cluster_client, parse_cluster
from training.distributed_fit import DaskBoosterTrainer, dask_booster
from training.forget import training_ids
from training.models import CloseProbabilityModel
from training.train import TrainConfig, history_needed_from

pytestmark = pytest.mark.slow

AS_OF = ["2023-09-04", "2024-01-01", "2024-06-03", "2024-10-07"]


@pytest.fixture(scope="module")
def client():
    with cluster_client("local:2") as c:
        yield c


@pytest.fixture(scope="module")
def data():
    from features.synthetic import generate_data

    return generate_data(3000, seed=21)[0]


@pytest.fixture(scope="module")
def folder(data, tmp_path_factory):
    return write_dataset(data, tmp_path_factory.mktemp("dask") / "p", partitions=4)


def test_two_worker_processes(client):
    workers = client.scheduler_info()["workers"]
    assert len(workers) == 2 and all(w["nthreads"] == 1 for w in workers.values())
    assert len({w["pid"] if "pid" in w else w["id"] for w in workers.values()}) == 2


def test_features_written_by_the_workers_read_back_equal_pandas_row_for_row(client, folder, tmp_path):
    """Each partition's task writes its rows (one file per as-of date): the folder read back
    with pandas is the pandas table, in its order; only counts came back to this process."""
    out = tmp_path / "rows.parquet"
    out.write_bytes(b"an older single-file output")  # replaced
    written = distributed.write_features(client, folder, AS_OF, out)
    local = features(read_dataset(folder), AS_OF)
    assert len(local) > 300 and written["rows"] == len(local)
    assert written["files"] == len(list(out.glob("part-*.parquet"))) > 4
    assert written["bytes"] == sum(p.stat().st_size for p in out.glob("*.parquet"))
    assert [p.name for p in tmp_path.iterdir()] == ["rows.parquet"]  # no staging folder left
    pd.testing.assert_frame_equal(pd.read_parquet(out), _as_read_back(local, tmp_path), check_exact=True)


def _as_read_back(frame: pd.DataFrame, tmp_path) -> pd.DataFrame:
    """The pandas path's table as its own .parquet output reads back (Parquet keeps a
    categorical's values, not pandas' dtype of its categories)."""
    frame.to_parquet(tmp_path / "local.parquet", index=False)
    return pd.read_parquet(tmp_path / "local.parquet")


def test_features_with_no_rows_keep_the_columns(client, folder, tmp_path):
    """No deal open at the as-of date: an empty table with the pandas path's columns."""
    early = ["2000-01-03"]
    written = distributed.write_features(client, folder, early, tmp_path / "none.parquet")
    local = features(read_dataset(folder), early)
    assert written["rows"] == len(local) == 0 and written["files"] == 1
    assert list(pd.read_parquet(tmp_path / "none.parquet").columns) == list(local.columns)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_the_features_command_on_a_cluster_writes_what_pandas_writes(folder, tmp_path, suffix):
    """`leadscore features --cluster local:1`: .parquet a dataset folder written by the
    workers, .csv one file; either reads back as the pandas command's output."""
    from typer.testing import CliRunner

    from serving.cli import app

    def run(out, *cluster):
        result = CliRunner().invoke(app, ["features", "--data", str(folder), "--as-of", ",".join(AS_OF),
                                          "--out", str(out), *cluster])
        assert result.exit_code == 0, result.output

    run(tmp_path / f"local{suffix}")
    run(tmp_path / f"cluster{suffix}", "--cluster", "local:1")
    read = pd.read_parquet if suffix == ".parquet" else pd.read_csv
    assert (tmp_path / f"cluster{suffix}").is_dir() == (suffix == ".parquet")
    pd.testing.assert_frame_equal(read(tmp_path / f"cluster{suffix}"), read(tmp_path / f"local{suffix}"),
                                  check_exact=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"cluster{suffix}", f"local{suffix}"]


def test_a_training_set_over_the_row_budget_is_a_sample_of_whole_deals(client, folder, caplog):
    """Over `max_rows`, a hash-chosen share of the deals, each with every row the pandas set
    has for it (the builder fitted on every deal), and the rows kept near the budget; the
    sampled deals' tables come here, the whole data's fingerprint and ids computed per
    partition; within the budget, the whole set."""
    full = read_dataset(folder)
    X_all, y_all, whole = build_training_set(full, AS_OF)
    budget = len(X_all) // 3
    sample = distributed_sample.deal_sample(client, folder, lambda _outline: pd.DatetimeIndex(AS_OF), budget)
    assert sample.rows == len(X_all) and sample.deals == len(full.deals) == 3000
    assert sample.share == pytest.approx(budget / len(X_all)) and "sample of the deals" in caplog.text
    expected = distributed.sampled_data(full, sample.share)
    for name in ("deals", "stage_events", "activities"):
        pd.testing.assert_frame_equal(getattr(sample.data, name), getattr(expected, name), check_exact=True)
    pd.testing.assert_frame_equal(sample.data.accounts, full.accounts)
    assert sample.fingerprint == tracking.data_fingerprint(
        {"deals": full.deals, "stage_events": full.stage_events, "activities": full.activities})
    np.testing.assert_array_equal(sample.ids, training_ids(full))
    config = TrainConfig()
    X, y, builder = distributed_sample.training_set(client, folder, config, sample.share)(sample.data, AS_OF)
    # the model's builder comes here cut on its worker from the earliest date the run reads with
    # it, never whole: the full builder's tables cut from that date (the tasks used it cut to AS_OF)
    start = history_needed_from(sample.data, config)
    assert builder.history_.answers_from == start and builder.history_.as_of is None
    assert _table_rows(builder) < _table_rows(whole) and _same_tables(builder, whole.from_date(start))
    # row for row the pandas training set of the same deal sample, with the builder of every deal
    X_p, y_p, _ = build_training_set(sample.data, AS_OF, whole)
    pd.testing.assert_frame_equal(X, X_p, check_exact=True)
    pd.testing.assert_frame_equal(y, y_p, check_exact=True)
    keep = distributed.sampled_deals(X_all["deal_id"], sample.share)
    pd.testing.assert_frame_equal(X, X_all[keep].reset_index(drop=True), check_exact=True)
    assert len(X) == sample.sampled_rows and 0.8 * budget < len(X) < 1.2 * budget
    assert 0.25 < len(set(X["deal_id"])) / X_all["deal_id"].nunique() < 0.42
    assert f"trained on {len(X):,} of {len(X_all):,} snapshot rows" in sample.note(budget)
    everything = distributed_sample.deal_sample(client, folder, lambda _outline: pd.DatetimeIndex(AS_OF), len(X_all))
    assert everything.share == 1 and everything.note(len(X_all)) == ""
    X_whole, _, _ = distributed_sample.training_set(client, folder, config)(everything.data, AS_OF)
    pd.testing.assert_frame_equal(X_whole, X_all, check_exact=True)


def _tables(builder: FeatureBuilder) -> list:
    history = builder.history_
    return [t for t in (history.outcomes, history.dwell, history.open_load, *history.groups.values()) if t is not None]


def _table_rows(builder: FeatureBuilder) -> int:
    return sum(len(t.table) for t in _tables(builder))


def _same_tables(builder: FeatureBuilder, expected: FeatureBuilder) -> bool:
    """Every history table of `builder` equal to `expected`'s, with their levels (raises if not)."""
    assert list(builder.history_.groups) == list(expected.history_.groups)
    for got, want in zip(_tables(builder), _tables(expected), strict=True):
        pd.testing.assert_frame_equal(got.table, want.table, check_exact=True)
        pd.testing.assert_index_equal(got.levels, want.levels, exact=True)
    return builder.history_.answers_from == expected.history_.answers_from


def test_a_partitioned_folder_is_read_by_the_tasks_not_held_on_the_workers(client, folder):
    parts = distributed.partitions(client, folder)
    assert parts == [distributed.PartitionOnDisk(str(folder), i) for i in range(4)]
    assert not any(client.run(lambda dask_worker: len(dask_worker.data)).values())


def test_features_of_a_single_file_dataset_split_on_the_cluster(client, data, tmp_path):
    """Split here by hash (other row order than the tables): the same rows, keyed alike."""
    on_cluster = distributed.features(client, data, AS_OF, tmp_path / "scratch")
    assert not (tmp_path / "scratch").exists()
    local = _as_read_back(features(data, AS_OF), tmp_path)
    key = ["as_of", "deal_id"]
    pd.testing.assert_frame_equal(on_cluster.sort_values(key).reset_index(drop=True),
                                  local.sort_values(key).reset_index(drop=True), check_exact=True)


@pytest.mark.parametrize("fan_in, as_of", [(2, None), (3, None), (2, AS_OF)])
def test_the_fit_reduced_as_a_tree_equals_the_pandas_fit(client, folder, fan_in, as_of):
    """4 partitions: rounds of 2 (4 -> 2 -> 1) or 3 (4 -> 2, a lone input passed on -> 1);
    with `as_of`, each table cut to those dates in its task: the pandas fit's `for_dates`."""
    builder = distributed.fit_builder(client, distributed.partitions(client, folder), fan_in=fan_in,
                                      as_of=as_of).result()
    local = FeatureBuilder().fit(read_dataset(folder))
    local = local if as_of is None else local.for_dates(as_of)
    assert (builder.history_.as_of is None) == (as_of is None)
    assert builder.feature_names_ == local.feature_names_ and builder.group_columns_ == local.group_columns_
    for name in ("outcomes", "dwell", "open_load"):
        pd.testing.assert_frame_equal(getattr(builder.history_, name).table, getattr(local.history_, name).table,
                                      check_exact=True)
    for col, table in local.history_.groups.items():
        pd.testing.assert_frame_equal(builder.history_.groups[col].table, table.table, check_exact=True)


def _sum_and_widest(*inputs: tuple[int, int]) -> tuple[int, int]:
    return sum(i[0] for i in inputs), max(len(inputs), *(i[1] for i in inputs))


def _as_list(*inputs: list) -> list:
    return [x for i in inputs for x in i]


def test_tree_reduce_keeps_the_order_and_no_task_gets_more_than_fan_in_inputs(client):
    leaves = client.scatter([(i, 1) for i in range(11)])
    assert distributed.tree_reduce(client, leaves, _sum_and_widest, fan_in=3).result() == (55, 3)
    ordered = distributed.tree_reduce(client, client.scatter([[i] for i in range(11)]), _as_list, fan_in=2)
    assert ordered.result() == list(range(11))
    with pytest.raises(ValueError, match="fan_in must be at least 2"):
        distributed.tree_reduce(client, leaves, _sum_and_widest, fan_in=1)


def test_dask_dataframe_has_one_partition_per_hash_partition(folder):
    deals = dask_table(folder, "deals")
    assert deals.npartitions == 4
    assert len(deals) == len(read_dataset(folder).deals)


def test_batch_scores_equal_pandas(client, folder, small_predictor):
    data = read_dataset(folder)
    local = small_predictor.score(data, pd.Timestamp("2024-06-03"), explain=True)
    on_cluster = distributed.score_partitions(client, folder, small_predictor, pd.Timestamp("2024-06-03"), True)
    assert len(local) > 100
    pd.testing.assert_frame_equal(on_cluster, local, check_exact=True)
    sent = distributed.predictor_at(small_predictor, pd.Timestamp("2024-06-03"))  # what the workers got
    assert list(sent.builder.history_.as_of) == [pd.Timestamp("2024-06-03")]
    assert small_predictor.builder.history_.as_of is None  # the caller's predictor is left whole


def test_backtest_origins_as_tasks_equal_the_serial_loop(client, small_data, small_predictor):
    from training.forecast.backtest import backtest
    from training.forecast.config import ForecastConfig

    data, _ = small_data
    config = ForecastConfig(n_sims=200, seed=1)
    serial = backtest(data, "quarter", 2, predictor=small_predictor, config=config)
    tasks = backtest(data, "quarter", 2, predictor=small_predictor, config=config,
                     map_origins=distributed.origin_mapper(client, data))
    pd.testing.assert_frame_equal(pd.DataFrame(tasks["rows"]), pd.DataFrame(serial["rows"]), check_exact=True)
    assert len(tasks["rows"]) == 2 and tasks["summary"].keys() == serial["summary"].keys()


@pytest.fixture(scope="module")
def training_rows(data):
    """Train / valid / test rows of one training set, cut by time."""
    X, y, builder = build_training_set(data, pd.date_range("2023-03-06", "2024-12-30", freq="2W-MON"))
    known = y["won"].notna().to_numpy()
    X, y = X[known].reset_index(drop=True), y.loc[known, "won"].to_numpy()
    at = X["as_of"]
    cut = [pd.Timestamp("2024-03-01"), pd.Timestamp("2024-06-01"), pd.Timestamp("2024-09-01")]
    masks = [at < cut[0], (at >= cut[0]) & (at < cut[1]), (at >= cut[1]) & (at < cut[2]), at >= cut[2]]
    return [(X.loc[m, builder.feature_names_], y[m.to_numpy()]) for m in masks]


def test_lightgbm_dask_model_within_0005_auc_of_the_single_machine_model(client, training_rows):
    (X, y), (Xv, yv), (Xc, yc), (Xt, yt) = training_rows
    params = {"learning_rate": 0.08}
    single = CloseProbabilityModel(**params).fit(X, y, Xv, yv, Xc, yc)
    dask = CloseProbabilityModel(booster_trainer=DaskBoosterTrainer(rounds=400), **params).fit(X, y, Xv, yv, Xc, yc)
    auc_single = roc_auc_score(yt, single.predict_proba(Xt))
    auc_dask = roc_auc_score(yt, dask.predict_proba(Xt))
    assert auc_single > 0.7
    assert abs(auc_dask - auc_single) < 0.005, (auc_single, auc_dask)
    assert type(dask.booster_).__module__ == "lightgbm.basic"  # a plain booster: the service needs no Dask
    assert 1 <= dask.best_iteration_ <= 400


def _placed_booster(client, frames: list[pd.DataFrame], names: list[str]):
    """`dask_booster` on partitions held by chosen workers: frame i on worker i."""
    workers = sorted(client.scheduler_info()["workers"])
    parts = [client.scatter(frame, workers=[worker]) for frame, worker in zip(frames, workers)]
    params = {"objective": "binary", "learning_rate": 0.08, "num_leaves": 31, "min_data_in_leaf": 200, "seed": 0}
    return dask_booster(client, parts, "label", names, params, rounds=150)


@pytest.fixture(scope="module")
def mixed_auc(client, training_rows) -> float:
    (X, y), _, _, (Xt, yt) = training_rows
    rows = X.assign(label=y.astype("int64"))
    return roc_auc_score(yt, _placed_booster(client, [rows.iloc[::2], rows.iloc[1::2]], list(X.columns)).predict(Xt))


def test_label_sorted_partitions_train_as_well_as_mixed_ones(client, training_rows, mixed_auc):
    """Won rows on one worker, lost rows on the other: unshuffled, `lightgbm.dask` learns
    nothing (AUC 0.500 here, as in LightGBM#5025); shuffled first, as well as mixed partitions."""
    (X, y), _, _, (Xt, yt) = training_rows
    rows = X.assign(label=y.astype("int64"))
    booster = _placed_booster(client, [rows[rows["label"] == 1], rows[rows["label"] == 0]], list(X.columns))
    auc = roc_auc_score(yt, booster.predict(Xt))
    assert mixed_auc > 0.7
    assert abs(auc - mixed_auc) < 0.02, (auc, mixed_auc)  # 1,300 test rows: AUC noise ~0.01


def test_an_empty_partition_alone_on_a_worker(client, training_rows, mixed_auc):
    """All rows on one worker, an empty partition on the other: unshuffled, that worker's
    LightGBM refuses its empty data and the fit fails (LightGBM#3882); handled, it trains."""
    (X, y), _, _, (Xt, yt) = training_rows
    rows = X.assign(label=y.astype("int64"))
    booster = _placed_booster(client, [rows, rows.iloc[:0]], list(X.columns))
    assert abs(roc_auc_score(yt, booster.predict(Xt)) - mixed_auc) < 0.02


def test_an_unreachable_scheduler_is_one_clear_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"):
        with cluster_client(f"tcp://127.0.0.1:{port}", timeout_s=2):
            pass


def test_cluster_specs():
    assert parse_cluster("local:3").workers == 3
    assert parse_cluster("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert parse_cluster(None) is None
    for bad in ["local:0", "local:x", "10.0.0.5:8786", "tcp://host", "http://h:1"]:
        with pytest.raises(ClusterError):
            parse_cluster(bad)


def test_train_on_the_cluster_never_reads_the_whole_dataset_here(client, folder, tmp_path, monkeypatch,
                                                                 local_mlflow_uri):
    """`train --cluster` brings only the sampled deals here: the whole-dataset reader is never
    called in the command's process (it raises here; the workers read their partitions), and
    the run says how much of the data trained."""
    import json

    from typer.testing import CliRunner

    import features.dataset
    from features.dataset import read_partition
    from features.history_cut import HistoryCutError
    from serving.cli import app
    from training import registry
    from training.forecast.calibration import out_of_sample_from
    from training.forecast.core import forecast
    from training.run import champion_score

    def whole_dataset(*_args, **_kwargs):
        raise AssertionError("read_dataset called in the command's process under --cluster")

    read_dataset = features.dataset.read_dataset
    monkeypatch.setattr(features.dataset, "read_dataset", whole_dataset)
    out = CliRunner().invoke(app, ["train", "--data", str(folder), "--cluster", client.scheduler.address,
                                   "--max-training-rows", "4000", "--metrics-out", str(tmp_path / "m.json")])
    assert out.exit_code == 0, out.output
    note = next(m for m in json.loads((tmp_path / "m.json").read_text())["messages"] if m.startswith("trained on"))
    assert "a hash sample of" in note and "of 3,000; --max-training-rows 4,000" in note
    # the registered model: plain (no Dask), its history cut to serve from its out-of-sample
    # start on (scores at the data end, and the forecast's calibration on the past periods since)
    predictor, _version = registry.load_predictor("leadscore", None)
    end = read_partition(folder, 0).data_end
    start = out_of_sample_from(predictor)
    assert start < end and predictor.info["history_from"] == start.isoformat()
    assert predictor.builder.history_.answers_from == start
    # table for table what cutting the full builder in the command's process made (before the
    # cut moved to the worker): the pandas fit of every deal, cut from the same start
    assert _same_tables(predictor.builder, FeatureBuilder().fit(read_dataset(folder)).from_date(start))
    part = read_partition(folder, 1)
    assert len(predictor.score(part, end)) == part.deals["closed_at"].isna().sum() > 0
    with pytest.raises(HistoryCutError, match="is before"):
        predictor.score(part, start - pd.Timedelta(days=30))
    whole = read_dataset(folder)
    made = forecast(predictor, whole, end, periods=2)
    assert made.shock["periods_used"] > 0 and made.table["p50"].sum() > 0
    # as a champion, it is left out of the promotion comparison on test rows it cannot score
    t, deals = start - pd.Timedelta(days=30), whole.deals
    open_then = deals[(deals["created_at"] <= t) & ~(deals["closed_at"] <= t)]
    early = pd.DataFrame({"deal_id": open_then["deal_id"].head(5), "as_of": t, "won": False})
    assert len(early) == 5
    assert champion_score("leadscore", None, whole, early) is None
