"""The service over real HTTP: auth, scoring, every bad input -> 4xx with field paths."""
from __future__ import annotations

import copy
import json
import time

import httpx
import models_cache
import numpy as np
import pandas as pd
import pytest
from payloads import canonical_from_records
from processes import log_text_once

AS_OF = "2024-10-01T00:00:00"
OPEN_PATHS = ["/healthz", "/livez", "/readyz", "/metrics", "/docs", "/openapi.json", "/docs.json",
              "/docs/assets/swagger-ui-bundle.js"]


def post(client, path: str, body) -> httpx.Response:
    return client.post(path, json=body)


@pytest.fixture
def deal(open_deals) -> dict:
    return copy.deepcopy(open_deals[0])


# --- auth and open endpoints ------------------------------------------------------------

@pytest.mark.parametrize("path", OPEN_PATHS)
def test_health_metrics_and_docs_need_no_key(served, path):
    assert httpx.get(served["url"] + path, timeout=10).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key-wrong-key-wrong"},
                                     {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}])
@pytest.mark.parametrize("path", ["/score", "/forecast", "/pipeline", "/ping"])
def test_api_refuses_missing_or_wrong_key(served, path, headers, open_deals):
    r = httpx.post(served["url"] + path, json={"deals": open_deals[:1]}, headers=headers, timeout=10)
    assert r.status_code == 401
    assert "API key" in r.json()["error"]


def test_key_is_never_logged(served, client):
    client.post("/ping", json={})
    assert "test-key-" not in served["log"].read_text(errors="replace")


# --- scoring --------------------------------------------------------------------------

def test_score_returns_every_field_in_request_order(client, served, open_deals):
    deals = open_deals[:5][::-1]
    r = post(client, "/score", {"deals": deals, "as_of": AS_OF})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == served["version"]
    assert [d["deal_id"] for d in body["deals"]] == [d["deal_id"] for d in deals]
    for d in body["deals"]:
        assert 0 <= d["close_probability"] <= 1 and 1 <= d["score"] <= 99
        assert d["tier"] in {"hot", "warm", "cold"} and d["model_version"] == served["version"]
        assert d["p_close_within_30d"] <= d["p_close_within_60d"] <= d["p_close_within_90d"] <= d["close_probability"]
        assert d["expected_close_date_p10"] <= d["expected_close_date_p50"] <= d["expected_close_date_p90"]
        assert len(d["top_factors"]["positive"]) <= 3 and len(d["top_factors"]["negative"]) <= 3
        assert all(f["sentence"] for f in d["top_factors"]["positive"] + d["top_factors"]["negative"])
        assert d["warnings"] == []


def test_score_matches_the_predictor_in_process(client, open_deals):
    deals = open_deals[:40]
    r = post(client, "/score", {"deals": deals, "as_of": AS_OF})
    assert r.status_code == 200, r.text
    served_frame = pd.DataFrame(r.json()["deals"]).set_index("deal_id")
    predictor = models_cache.small_predictor()
    local = predictor.score(canonical_from_records(deals, predictor.meta).data, pd.Timestamp(AS_OF), explain=True)
    local = local.set_index("deal_id").loc[served_frame.index]
    for col in ["close_probability", "p_close_within_90d", "close_days_p50"]:
        np.testing.assert_allclose(served_frame[col].to_numpy(float), local[col].to_numpy(float), rtol=1e-9)
    assert served_frame["score"].tolist() == local["score"].tolist()
    assert served_frame["tier"].tolist() == local["tier"].tolist()
    assert served_frame["expected_close_date_p50"].tolist() == \
        local["expected_close_date_p50"].dt.strftime("%Y-%m-%d").tolist()


def test_score_matches_scoring_the_full_tables(client, open_deals):
    """The payload path and the batch path (all canonical tables) agree."""
    data, _truth = models_cache.small_data()
    full = models_cache.small_predictor().score(data, pd.Timestamp(AS_OF)).set_index("deal_id")
    r = post(client, "/score", {"deals": open_deals[:20], "as_of": AS_OF})
    got = pd.DataFrame(r.json()["deals"]).set_index("deal_id")
    np.testing.assert_allclose(got["close_probability"], full.loc[got.index, "close_probability"], rtol=1e-9)


def test_explanations_by_path_attribution_or_exact_shap(client, open_deals):
    """Factors are the in-process explanations, by either method; the scores do not change."""
    deals = open_deals[:5]
    predictor = models_cache.small_predictor()
    data = canonical_from_records(deals, predictor.meta).data
    answers = {}
    for method in ("path", "shap"):
        r = post(client, "/score", {"deals": deals, "as_of": AS_OF, "explain_method": method})
        assert r.status_code == 200, r.text
        answers[method] = r.json()["deals"]
        local = predictor.score(data, pd.Timestamp(AS_OF), explain=method).set_index("deal_id")
        for d in answers[method]:
            want = local.loc[d["deal_id"], "top_factors"]
            assert [f["feature"] for f in d["top_factors"]["positive"]] == [f["feature"] for f in want["positive"]]
            assert [f["impact"] for f in d["top_factors"]["negative"]] == \
                pytest.approx([f["impact"] for f in want["negative"]], abs=1e-4)
    assert [d["close_probability"] for d in answers["path"]] == [d["close_probability"] for d in answers["shap"]]
    r = post(client, "/score", {"deals": deals, "as_of": AS_OF, "explain_method": "guess"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "explain_method"


def test_scoring_twice_gives_identical_results(client, deal):
    first = post(client, "/score", {"deals": [deal], "as_of": AS_OF}).json()
    second = post(client, "/score", {"deals": [deal], "as_of": AS_OF}).json()
    assert first == second


def test_unknown_category_is_scored_with_a_warning(client, deal):
    deal["owner"] = "owner_never_seen"
    r = post(client, "/score", {"deals": [deal], "as_of": AS_OF})
    assert r.status_code == 200, r.text
    warnings = r.json()["deals"][0]["warnings"]
    assert any("owner_never_seen" in w for w in warnings)


def test_deal_without_history_is_scored(client, deal):
    deal.pop("stage_history")
    deal.pop("activities")
    deal["stage_entered_at"] = deal["created_at"]
    r = post(client, "/score", {"deals": [deal], "as_of": AS_OF, "explain": False})
    assert r.status_code == 200, r.text
    assert r.json()["deals"][0]["top_factors"] is None


def test_timezone_offsets_are_utc(client, deal):
    plain = post(client, "/score", {"deals": [deal], "as_of": AS_OF}).json()
    shifted = post(client, "/score", {"deals": [deal], "as_of": "2024-10-01T02:00:00+02:00"}).json()
    assert plain["deals"][0]["close_probability"] == shifted["deals"][0]["close_probability"]
    # the answer's times say they are UTC: the same instant both ways, with "Z"
    assert plain["as_of"] == shifted["as_of"] == "2024-10-01T00:00:00Z"
    assert plain["deals"][0]["as_of"] == shifted["deals"][0]["as_of"] == "2024-10-01T00:00:00Z"


def test_pipeline_and_forecast(client, served):
    from training.store.connection import open_store
    from training.store.forecasts import forecasts

    pipe = post(client, "/pipeline", {"as_of": AS_OF, "group_by": "team"})
    assert pipe.status_code == 200, pipe.text
    assert pipe.json()["as_of"] == "2024-10-01T00:00:00Z" and pipe.json()["groups"]
    assert pipe.json()["data"]["loaded_at"].endswith("Z") and pipe.json()["data"]["data_end"].endswith("Z")
    fc = post(client, "/forecast", {"as_of": AS_OF, "periods": 2, "freq": "month"})
    assert fc.status_code == 200, fc.text
    totals = [row for row in fc.json()["forecast"] if row["group"] == "(all)"]
    assert len(totals) == 2 and all(row["p10"] <= row["p50"] <= row["p90"] for row in totals)
    assert "risk" in fc.json()
    assert fc.json()["as_of"] == "2024-10-01T00:00:00Z" and all(p["end"].endswith("Z") for p in fc.json()["periods"])
    assert not [note for note in fc.json()["notes"] if "track record" in note]
    store = open_store(f"sqlite:///{served['data_dir'].parent / 'store.db'}")  # beside the service's MLflow db
    stored = forecasts(store)
    store.close()
    assert (stored["as_of"] == pd.Timestamp(AS_OF)).sum() >= 2
    assert set(stored["model_version"]) == {str(served["version"])}


@pytest.mark.parametrize("path,body,field", [
    ("/pipeline", {"group_by": "no_such_column"}, "group_by"),
    ("/forecast", {"group_by": "no_such_column"}, "group_by"),
    ("/forecast", {"as_of": "1999-01-01"}, None),
    ("/forecast", {"periods": 0}, "periods"),
])
def test_pipeline_and_forecast_bad_options_are_4xx(client, path, body, field):
    r = post(client, path, body)
    assert r.status_code == 422, r.text
    if field:
        assert r.json()["errors"][0]["field"] == field


# --- bad input: one test each ---------------------------------------------------------

def _errors(r: httpx.Response) -> list[str]:
    assert r.headers["content-type"].startswith("application/json")
    return [e["field"] for e in r.json()["errors"]]


def assert_422(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    assert field in _errors(r), r.text


@pytest.mark.parametrize("path,body", [("/score", {"asof": AS_OF}), ("/pipeline", {"asof": AS_OF})])
def test_unknown_top_level_field_names_the_close_match(client, deal, path, body):
    r = post(client, path, {**body, **({"deals": [deal]} if path == "/score" else {})})
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"field": "asof", "message": "unknown field 'asof'; did you mean 'as_of'?"}]


def test_wrong_type(client, deal):
    deal["amount"] = "a lot"
    assert_422(post(client, "/score", {"deals": [deal], "as_of": AS_OF}), "deals[0].amount")


def test_missing_field(client, deal):
    deal.pop("created_at")
    assert_422(post(client, "/score", {"deals": [deal], "as_of": AS_OF}), "deals[0].created_at")


def test_unknown_stage(client, deal):
    deal["stage"] = deal["stage_history"][-1]["stage"] = "signed-in-blood"
    assert_422(post(client, "/score", {"deals": [deal], "as_of": AS_OF}), "deals[0].stage")


def test_unknown_stage_in_history(client, deal):
    deal["stage_history"][0]["stage"] = "signed-in-blood"
    assert_422(post(client, "/score", {"deals": [deal], "as_of": AS_OF}), "deals[0].stage_history[0].stage")


def test_unknown_stage_without_history(client, deal):
    deal.pop("stage_history")
    deal["stage"] = "signed-in-blood"
    assert_422(post(client, "/score", {"deals": [deal], "as_of": AS_OF}), "deals[0].stage")


def test_negative_amount(client, deal):
    deal["amount"] = -1
    assert_422(post(client, "/score", {"deals": [deal], "as_of": AS_OF}), "deals[0].amount")


def test_stage_history_out_of_order(client, deal):
    deal["stage_history"] = [dict(deal["stage_history"][0], entered_at="2024-06-01T00:00:00"),
                             dict(deal["stage_history"][-1], entered_at="2024-05-01T00:00:00")]
    assert_422(post(client, "/score", {"deals": [deal], "as_of": AS_OF}), "deals[0]")


def test_created_after_as_of(client, deal):
    assert_422(post(client, "/score", {"deals": [deal], "as_of": "2023-01-01T00:00:00"}), "deals[0].created_at")


def test_stage_entered_before_created(client, deal):
    deal["stage_history"][0]["entered_at"] = "2020-01-01T00:00:00"
    assert_422(post(client, "/score", {"deals": [deal], "as_of": AS_OF}), "deals[0].stage_history[0].entered_at")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_inf(client, deal, literal):
    body = json.dumps({"deals": [dict(deal, amount=0.0)], "as_of": AS_OF}).replace('"amount": 0.0', f'"amount": {literal}')
    r = client.post("/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422) and r.status_code != 200, r.text
    assert "deals[0].amount" in _errors(r) or r.status_code == 400


def test_empty_list(client):
    assert_422(post(client, "/score", {"deals": []}), "deals")


def test_duplicate_deal_ids(client, deal):
    r = post(client, "/score", {"deals": [deal, deal], "as_of": AS_OF})
    assert_422(r, "deals")
    assert "deals[1].deal_id" in r.json()["errors"][0]["message"]


def test_oversize_batch(client, deal):
    small = {k: deal[k] for k in ("deal_id", "created_at", "stage", "amount")}
    deals = [dict(small, deal_id=f"D{i}") for i in range(1001)]
    r = post(client, "/score", {"deals": deals, "as_of": AS_OF})
    assert r.status_code == 413 and "1,000" in r.json()["error"], r.text


def test_oversize_body(client):
    r = client.post("/score", content=b'{"deals": [' + b" " * (17 * 2**20) + b"]}",
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and "LEADSCORE_MAX_BODY_BYTES" in r.json()["error"]


def test_malformed_json(client):
    r = client.post("/score", content=b'{"deals": [', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


def test_body_is_not_an_object(client):
    assert post(client, "/score", [1, 2, 3]).status_code in (400, 422)


def test_no_input_values_in_the_log(served, client, deal):
    deal["owner"] = "secret.person@example.com"
    deal["amount"] = "secret-amount-text"
    post(client, "/score", {"deals": [deal], "as_of": AS_OF})
    assert "secret" not in served["log"].read_text(errors="replace")


def test_a_schema_error_is_one_warning_line_not_a_traceback(served, client, deal):
    deal["amount"] = -5
    deal["created_at"] = "not a date"
    assert post(client, "/score", {"deals": [deal], "as_of": AS_OF}).status_code == 422
    text = log_text_once(served["log"], "fails the schema")
    assert "/score [POST]: request body fails the schema (2 field error(s)), answered 422" in text
    assert "Traceback" not in text and "ValidationError" not in text


def test_scored_deal_ids_are_logged_without_their_values(served, client, deal):
    deal["deal_id"] = "logged-deal-7"
    deal["owner"] = "private.rep@example.com"
    assert post(client, "/score", {"deals": [deal], "as_of": AS_OF}).status_code == 200
    text = log_text_once(served["log"], "logged-deal-7")
    assert "scored 1 deals (ids logged-deal-7)" in text and "private.rep" not in text



# --- start-up --------------------------------------------------------------------------

def test_refuses_to_start_without_champion(serve_once, tmp_path):
    proc = serve_once(f"sqlite:///{tmp_path / 'empty.db'}")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1] == "error: no champion model registered; run `leadscore train`", proc.stderr
    assert "Traceback" not in proc.stderr


def test_refuses_to_start_without_api_keys(serve_once, served):
    proc = serve_once(f"sqlite:///{served['data_dir'].parent / 'mlflow.db'}", LEADSCORE_API_KEYS="")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no API key configured")


@pytest.mark.parametrize("setting, message", [("LEADSCORE_MAX_BATCH", "LEADSCORE_MAX_BATCH='many' is not a whole number"),
                                              ("LEADSCORE_LOG_LEVEL", "LEADSCORE_LOG_LEVEL='MANY' is not one of")])
def test_refuses_to_start_with_a_bad_setting(serve_once, served, setting, message):
    proc = serve_once(f"sqlite:///{served['data_dir'].parent / 'mlflow.db'}", **{setting: "many"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]


def test_refuses_to_start_with_data_of_another_dataset(serve_once, served, tmp_path):
    """LEADSCORE_DATA holding another dataset than the champion's: one line naming both."""
    from features.dataset import write_dataset
    from features.schema import CanonicalData, DatasetMeta

    other = DatasetMeta(stages=["lead", "interested"], attributes={"lead_source": "categorical"}, name="xed")
    deals = pd.DataFrame({"deal_id": ["a"], "created_at": pd.to_datetime(["2024-01-01"]), "amount": [1.0],
                          "closed_at": pd.to_datetime([None]), "outcome": [None]})
    folder = write_dataset(CanonicalData(deals=deals, meta=other), tmp_path / "xed")
    proc = serve_once(f"sqlite:///{served['data_dir'].parent / 'mlflow.db'}", LEADSCORE_DATA=str(folder))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert f"model 'leadscore v{served['version']}' was trained on dataset" in line, line
    assert f"{folder} holds dataset 'xed': they do not belong together (stages " in line, line


def test_scores_are_logged_with_trends_counted_in_status_and_monitored(client, open_deals):
    deals = open_deals[:5]
    first = post(client, "/score", {"deals": deals, "as_of": AS_OF, "explain": False})
    later = (pd.Timestamp(AS_OF) + pd.Timedelta(days=7)).isoformat()
    second = post(client, "/score", {"deals": deals, "as_of": later, "explain": False})
    assert first.status_code == second.status_code == 200, second.text
    assert all(d["trend"] is None for d in first.json()["deals"])
    for before, now in zip(first.json()["deals"], second.json()["deals"]):
        assert now["trend"]["change"] == pytest.approx(now["close_probability"] - before["close_probability"], abs=1e-4)
    deadline = time.monotonic() + 30
    while (status := client.post("/status").json())["score_log"]["written"] < 10 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert status["score_log"]["written"] >= 10 and status["score_log"]["failed"] == 0
    report = client.post("/monitor", json={"window_days": 60})
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["scores"]["logged"] >= 5 and body["verdict"]["exit_status"] in (0, 1)
    assert client.post("/monitor", json={"window_days": 0}).status_code == 422
