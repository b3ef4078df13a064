"""The service's score log writer: rows reach the store off the request path; an outage
is counted (one log line per outage), never raised; the queue is bounded."""
from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
from processes import free_port

from training.store.connection import open_store
from training.store.score_log import ScoreLog, factor_names
from training.store.scores import scores

FACTORS = {"positive": [{"feature": "stage", "value": "proposal", "impact": 0.4, "sentence": "s"}],
           "negative": [{"feature": "days_in_stage", "value": 40, "impact": -0.2, "sentence": "s"}]}


def scored(ids: list[str], p: float = 0.3) -> dict:
    n = len(ids)
    return {"deal_id": np.array(ids, dtype=object), "as_of": np.full(n, np.datetime64("2024-03-01T00:00")),
            "close_probability": np.full(n, p), "score": np.full(n, round(p * 100)),
            "tier": np.array(["warm"] * n, dtype=object), "top_factors": [FACTORS] * n}


def test_submitted_scores_are_written_in_batches(store_url):
    score_log = ScoreLog(store_url)
    score_log.submit(scored(["d1", "d2"]), "leadscore", 3)
    score_log.submit({**scored(["d3"], 0.8), "top_factors": None}, "leadscore", 3)
    assert score_log.flush()
    assert score_log.status() == {"written": 3, "failed": 0, "dropped": 0, "outages": 0, "pending": 0,
                                  "store_down": False}
    score_log.close()
    store = open_store(store_url)
    rows = scores(store).set_index("deal_id")
    store.close()
    assert sorted(rows.index) == ["d1", "d2", "d3"]
    assert rows.loc["d1", "top_factors"] == ["stage", "days_in_stage"] and rows.loc["d3", "top_factors"] == []
    assert rows.loc["d3", "probability"] == 0.8 and rows.loc["d3", "score"] == 80
    assert rows.loc["d1", "model_version"] == "3" and str(rows.loc["d1", "as_of"]) == "2024-03-01 00:00:00"


def test_an_outage_is_counted_and_logged_once(caplog):
    url = f"postgresql+psycopg://leadscore@127.0.0.1:{free_port()}/leadscore"  # nothing listens there
    score_log = ScoreLog(url)
    with caplog.at_level(logging.INFO, logger="training.store.score_log"):
        for k in range(3):
            score_log.submit(scored([f"secret-{k}a", f"secret-{k}b"]), "leadscore", 3)
            assert score_log.flush()
    status = score_log.status()
    score_log.close()
    assert status["failed"] == 6 and status["written"] == 0 and status["outages"] == 1 and status["store_down"]
    assert len(caplog.records) == 1 and "store unavailable" in caplog.text
    assert "secret" not in caplog.text


def test_the_store_coming_back_ends_the_outage(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    blocked = tmp_path / "store.db"
    blocked.mkdir()  # a folder where the database file should be: SQLite cannot open it
    score_log = ScoreLog(url)
    with caplog.at_level(logging.INFO, logger="training.store.score_log"):
        score_log.submit(scored(["a"]), "leadscore", 1)
        assert score_log.flush()
        blocked.rmdir()
        score_log.submit(scored(["b"]), "leadscore", 1)
        assert score_log.flush()
    status = score_log.status()
    score_log.close()
    assert (status["failed"], status["written"], status["outages"], status["store_down"]) == (1, 1, 1, False)
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]


def test_a_full_queue_drops_and_counts(tmp_path):
    score_log = ScoreLog(f"sqlite:///{tmp_path / 'store.db'}", max_pending_rows=3, interval_s=60, batch_rows=10**6)
    score_log.submit(scored(["a", "b"]), "leadscore", 1)
    score_log.submit(scored(["c", "d"]), "leadscore", 1)  # would exceed 3 waiting rows
    assert score_log.status()["dropped"] == 2
    assert score_log.flush()
    assert score_log.status()["written"] == 2
    score_log.close()


def test_factor_names_keep_names_only():
    assert factor_names(FACTORS) == ["stage", "days_in_stage"]
    assert factor_names(None) == [] and factor_names({}) == []


def test_a_static_model_score_is_logged_at_the_time_it_was_made(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    score_log = ScoreLog(url)
    score_log.submit({**scored(["lead-1"]), "as_of": np.array([np.datetime64("NaT")])}, "xed", 1)
    assert score_log.flush() and score_log.status()["written"] == 1
    score_log.close()
    store = open_store(url)
    row = scores(store).iloc[0]
    store.close()
    assert pd.Timedelta(0) <= row["created_at"] - row["as_of"] < pd.Timedelta(seconds=30)


def test_the_writer_survives_a_row_it_cannot_write(tmp_path):
    score_log = ScoreLog(f"sqlite:///{tmp_path / 'store.db'}")
    score_log.submit({**scored(["a"]), "score": np.array(["not a number"], dtype=object)}, "leadscore", 1)
    assert score_log.flush() and score_log.status()["failed"] == 1
    score_log.submit(scored(["b"]), "leadscore", 1)
    assert score_log.flush() and score_log.status()["written"] == 1
    score_log.close()


def _written_within(score_log: ScoreLog, rows: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while score_log.status()["written"] < rows and time.monotonic() < deadline:
        time.sleep(0.01)
    return score_log.status()["written"] == rows


def test_writes_wait_for_an_idle_service(tmp_path):
    """Rows are written while no request is in flight (`idle`): writing holds the GIL a request needs."""
    busy = [True]
    score_log = ScoreLog(f"sqlite:///{tmp_path / 'store.db'}", idle=lambda: not busy[0], defer_s=60,
                         interval_s=0.01, chunk_rows=2)
    score_log.submit(scored(["a", "b", "c"]), "leadscore", 1)
    time.sleep(0.3)
    assert score_log.status()["written"] == 0 and score_log.status()["pending"] == 3
    busy[0] = False
    assert _written_within(score_log, 3, 10)
    score_log.close()


def test_a_never_idle_service_still_logs_after_defer_s_and_flush_never_waits(tmp_path):
    score_log = ScoreLog(f"sqlite:///{tmp_path / 'store.db'}", idle=lambda: False, defer_s=0.2, interval_s=0.01,
                         chunk_rows=2)
    score_log.submit(scored(["a", "b", "c"]), "leadscore", 1)
    assert _written_within(score_log, 3, 10)
    slow = ScoreLog(f"sqlite:///{tmp_path / 'store2.db'}", idle=lambda: False, defer_s=600, interval_s=0.01)
    slow.submit(scored(["d", "e"]), "leadscore", 1)
    started = time.monotonic()
    assert slow.flush(timeout_s=20) and time.monotonic() - started < 10
    assert slow.status()["written"] == 2
    slow.close()
    score_log.close()


def test_an_empty_batch_is_no_outage(tmp_path):
    for k, idle in enumerate((None, lambda: True)):
        score_log = ScoreLog(f"sqlite:///{tmp_path / f'store{k}.db'}", idle=idle, interval_s=0.01)
        score_log.submit(scored([]), "leadscore", 1)
        time.sleep(0.3)  # the writer takes the empty batch alone
        score_log.submit(scored(["a"]), "leadscore", 1)
        assert score_log.flush()
        assert score_log.status()["outages"] == 0 and score_log.status()["written"] == 1
        score_log.close()
