"""Pipeline analytics on small hand-built histories: every expected number is worked out by
hand in the comments next to it."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from features.analytics import metrics_table, pipeline_metrics
from features.errors import LeadscoreError
from features.schema import CanonicalData, DatasetMeta
from features.validation import validate

STAGES = ["lead", "qualified", "proposal", "negotiation"]
AS_OF = "2024-06-30"
T = pd.Timestamp


def make(deals: list[dict], events: list[tuple] | None = None, activities: list[tuple] | None = None,
         **meta) -> CanonicalData:
    """Canonical data through the real validator; a hand-built history must have no rejects."""
    ev = None if events is None else pd.DataFrame(
        [e + (None,) * (5 - len(e)) for e in events],
        columns=["deal_id", "stage", "entered_at", "amount", "expected_close_date"])
    acts = None if activities is None else pd.DataFrame(activities, columns=["deal_id", "occurred_at", "type"])
    result = validate(pd.DataFrame(deals), DatasetMeta(stages=STAGES, **meta), ev, acts)
    assert result.rejects.empty, result.rejects.to_dict("records")
    return result.data


def deal(deal_id, created, closed=None, outcome=None, amount=None, **extra) -> dict:
    return {"deal_id": deal_id, "created_at": created, "closed_at": closed, "outcome": outcome, "amount": amount,
            **extra}


# --- funnel and time in stage -------------------------------------------------------------
@pytest.fixture
def funnel_data() -> CanonicalData:
    deals = [deal("A", "2024-01-01", "2024-02-10", "won", 1000), deal("B", "2024-01-05", "2024-01-20", "lost"),
             deal("C", "2024-01-07", "2024-01-17", "lost"), deal("D", "2024-02-01"),
             deal("E", "2024-02-01", "2024-03-01", "lost")]
    events = [("A", "lead", "2024-01-01"), ("A", "qualified", "2024-01-11"), ("A", "proposal", "2024-01-21"),
              ("A", "negotiation", "2024-02-01"),
              ("B", "lead", "2024-01-05"), ("B", "qualified", "2024-01-10"),
              ("C", "lead", "2024-01-07"),
              ("D", "lead", "2024-02-01"), ("D", "qualified", "2024-02-05"), ("D", "proposal", "2024-02-10"),
              ("E", "lead", "2024-02-01"), ("E", "qualified", "2024-02-03"), ("E", "proposal", "2024-02-08"),
              ("E", "qualified", "2024-02-15")]  # E regresses, then is lost from qualified
    return make(deals, events)


def test_funnel_conversion_win_rate_and_losses(funnel_data):
    f = pipeline_metrics(funnel_data, AS_OF)["total"]["funnel"]
    by = {r["stage"]: r for r in f["stages"]}
    # furthest stage: A negotiation (won), B qualified (lost), C lead (lost), D proposal (open), E proposal (lost)
    assert [by[s]["reached"] for s in STAGES] == [5, 4, 3, 1]
    assert by["lead"]["conversion"] == pytest.approx(4 / 5)  # A,B,D,E moved on; C lost
    assert by["qualified"]["conversion"] == pytest.approx(3 / 4)  # A,D,E moved on; B lost
    assert by["proposal"]["conversion"] == pytest.approx(1 / 2)  # A moved on, E lost; D open: undecided
    assert by["proposal"]["open_here"] == 1
    assert by["negotiation"]["conversion"] == 1.0  # A won
    assert f["win_rate"] == pytest.approx(1 / 4)
    # losses by the stage they were in when lost: C lead; B and E (after its regression) qualified
    assert [r["lost"] for r in f["losses_by_stage"]] == [1, 2, 0, 0]


def test_time_in_stage_cycle_and_deal_size(funnel_data):
    t = pipeline_metrics(funnel_data, AS_OF)["total"]
    dwell = {r["stage"]: r for r in t["time_in_stage"]}
    # lead stays: A 10, B 5, C 10 (lost), D 4, E 2 -> sorted 2,4,5,10,10
    assert (dwell["lead"]["median_days"], dwell["lead"]["p75_days"], dwell["lead"]["p90_days"]) == (5, 10, 10)
    # qualified: A 10, B 10 (lost), D 5, E 5 then 15 (after regression) -> 5,5,10,10,15; P90 = 10 + 0.6 * 5
    assert dwell["qualified"]["spells"] == 5
    assert dwell["qualified"]["p90_days"] == pytest.approx(13.0)
    # proposal: A 11, E 7 completed; D still open there
    assert dwell["proposal"]["median_days"] == 9 and dwell["proposal"]["open_spells"] == 1
    assert dwell["negotiation"]["median_days"] == 9  # A: Feb 1 -> Feb 10
    assert t["sales_cycle"]["median_days"] == 40 and t["sales_cycle"]["won_deals"] == 1
    assert t["deal_size"]["average_won_amount"] == 1000


def test_bottleneck_is_the_stage_slower_than_its_history():
    deals, events = [], []
    # prior window: three lead stays of 10 days ending in Jan 2024; recent: three of 20 days ending in June
    for i, (created, moved) in enumerate([("2024-01-01", "2024-01-11"), ("2024-01-02", "2024-01-12"),
                                          ("2024-01-03", "2024-01-13"), ("2024-05-20", "2024-06-09"),
                                          ("2024-05-21", "2024-06-10"), ("2024-05-22", "2024-06-11")]):
        deals.append(deal(f"B{i}", created))
        events += [(f"B{i}", "lead", created), (f"B{i}", "qualified", moved)]
    b = pipeline_metrics(make(deals, events), AS_OF)["total"]["bottleneck"]
    assert (b["stage"], b["metric"], b["recent"], b["prior"], b["change"]) == ("lead", "dwell", 20, 10, 1.0)
    assert b["worse_than_history"]


# --- velocity --------------------------------------------------------------------------------
def test_velocity_and_its_trend_without_stage_history():
    deals = [deal("W1", "2024-01-01", "2024-02-20", "won", 100, stage="negotiation"),  # 50-day cycle
             deal("W2", "2024-01-01", "2024-04-10", "won", 300, stage="negotiation"),  # 100-day cycle
             deal("L1", "2024-02-01", "2024-03-01", "lost", 50), deal("L2", "2024-02-01", "2024-03-01", "lost", 50),
             deal("O1", "2024-05-01", amount=10, stage="qualified"), deal("O2", "2024-05-01", amount=10, stage="proposal"),
             deal("O3", "2024-05-01", amount=10, stage="negotiation"), deal("O4", "2024-06-01", amount=10, stage="lead")]
    v = pipeline_metrics(make(deals), AS_OF)["total"]["velocity"]
    # 3 open qualified-or-later x win rate 2/4 x average won 200 / average cycle 75 days
    assert (v["open_qualified"], v["win_rate"], v["average_deal_size"], v["average_cycle_days"]) == (3, 0.5, 200, 75)
    assert v["per_day"] == pytest.approx(4.0)
    assert len(v["trend"]) == 7 and v["trend"][-1]["per_day"] == pytest.approx(4.0)
    # on 2024-03-30 only W1, L1, L2 had closed (1/3, 100, 50 days) and W2 was the one open qualified deal
    march = v["trend"][3]
    assert march["as_of"].startswith("2024-03-30") and march["open_qualified"] == 1
    assert march["per_day"] == pytest.approx(1 * (1 / 3) * 100 / 50)


# --- waterfall and coverage -----------------------------------------------------------------
@pytest.fixture
def waterfall_data() -> CanonicalData:
    """Window (2024-05-31, 2024-06-30]."""
    deals = [deal("C1", "2024-05-01", team="red"), deal("C2", "2024-05-01", "2024-06-15", "won", 200, team="red"),
             deal("C3", "2024-05-01", "2024-06-20", "lost", 60, team="blue"), deal("C4", "2024-05-01", team="blue"),
             deal("N1", "2024-06-10", team="red"), deal("N2", "2024-06-05", "2024-06-25", "won", 30, team="blue"),
             deal("X1", "2024-04-01", "2024-05-01", "won", 500, team=None)]
    events = [("C1", "lead", "2024-05-01", 100, "2024-07-15"), ("C1", "lead", "2024-06-10", 150, "2024-08-15"),
              ("C2", "lead", "2024-05-01", 200, "2024-06-15"),
              ("C3", "lead", "2024-05-01", 80, "2024-07-01"), ("C3", "lead", "2024-06-05", 60, "2024-07-01"),
              ("C4", "lead", "2024-05-01", 120, "2024-08-31"), ("C4", "qualified", "2024-06-20", 120, "2024-07-15"),
              ("N1", "lead", "2024-06-10", 40, "2024-06-30"), ("N2", "lead", "2024-06-05", 30, "2024-06-25"),
              ("X1", "lead", "2024-04-01", 500, "2024-05-01")]
    activities = [("C1", "2024-06-29", "call"), ("C4", "2024-05-02", "email")]
    return make(deals, events, activities)


def test_waterfall_categories_add_up(waterfall_data):
    c = pipeline_metrics(waterfall_data, AS_OF)["total"]["changes"]
    assert c["start_amount"] == 100 + 200 + 80 + 120  # C1..C4 open on May 31
    assert c["new"] == {"count": 2, "amount": 70}  # N1 40 + N2 30
    assert c["amount_up"] == {"count": 1, "amount": 50}  # C1 100 -> 150
    assert c["amount_down"] == {"count": 1, "amount": 20}  # C3 80 -> 60
    assert c["won"] == {"count": 2, "amount": 230}  # C2 200 + N2 30
    assert c["lost"] == {"count": 1, "amount": 60}  # C3 at its last amount
    assert c["end_amount"] == 150 + 120 + 40  # C1, C4, N1
    assert c["start_amount"] + 70 + 50 - 20 - 230 - 60 == c["end_amount"] and c["residual"] == 0
    assert c["pushed_out"] == {"count": 1, "amount": 150, "days": 31}  # C1 Jul 15 -> Aug 15
    assert c["pulled_in"] == {"count": 1, "amount": 120, "days": 47}  # C4 Aug 31 -> Jul 15


def test_coverage_states_its_definition(waterfall_data):
    cov = pipeline_metrics(waterfall_data, AS_OF, target=1000)["total"]["coverage"]
    assert "expected to close in the period" in cov["definition"]
    assert cov["period_start"].startswith("2024-04-01") and cov["period_end"].startswith("2024-07-01")
    assert cov["closed_won"] == 200 + 30 + 500  # C2, N2, X1 won this quarter
    assert cov["pipeline_in_period"] == 40 and cov["deals_in_period"] == 1  # only N1 is expected by Jun 30
    assert cov["coverage"] == pytest.approx(40 / (1000 - 730))
    assert pipeline_metrics(waterfall_data, AS_OF)["total"]["coverage"]["coverage"] is None  # no target


# --- stalled deals ------------------------------------------------------------------------------
def stalled_data() -> CanonicalData:
    deals, events = [], []
    for i, lead_days in enumerate([10, 10, 10, 10, 20]):  # lead P90 = 10 + 0.6 * 10 = 16
        created = T("2024-01-01") + pd.Timedelta(days=i)
        moved = created + pd.Timedelta(days=lead_days)
        deals.append(deal(f"H{i}", created, moved + pd.Timedelta(days=100), "lost"))
        events += [(f"H{i}", "lead", created), (f"H{i}", "qualified", moved)]  # qualified stays of 100 days
    deals += [deal("S1", "2024-06-10", amount=5), deal("S2", "2024-06-20", amount=7), deal("S3", "2024-05-01", amount=9)]
    events += [("S1", "lead", "2024-06-10"), ("S2", "lead", "2024-06-20"),
               ("S3", "qualified", "2024-05-01")]  # entered straight at qualified: 60 days < P90 100
    activities = [("S1", "2024-06-28", "call"), ("S3", "2024-05-20", "email")]
    return make(deals, events, activities)


def test_stalled_flags_with_reasons():
    s = pipeline_metrics(stalled_data(), AS_OF)["total"]["stalled"]
    assert s["thresholds_p90_days"]["lead"] == pytest.approx(16)
    # S1: 20 days in lead > 16; S2: 10 days, created 10 days ago; S3: 60 days in qualified, quiet for 41 days
    assert s["count"] == 2 and s["by_reason"] == {"slower_than_p90": 1, "no_activity": 1}
    reasons = {d["deal_id"]: d["reasons"] for d in s["deals"]}
    assert reasons == {"S1": ["20 days in lead > P90 16"], "S3": ["no activity for 41 days (> 21)"]}
    quieter = pipeline_metrics(stalled_data(), AS_OF, stall_days_without_activity=45)["total"]["stalled"]
    assert [d["deal_id"] for d in quieter["deals"]] == ["S1"]


# --- cohorts -----------------------------------------------------------------------------------
def test_cohorts_only_when_old_enough():
    deals = [deal("M1", "2024-03-01", "2024-03-21", "won", 1), deal("M2", "2024-03-10", "2024-05-19", "won", 1),
             deal("M3", "2024-03-15", "2024-03-20", "lost", 1), deal("M4", "2024-03-31"),
             deal("A1", "2024-04-05", "2024-04-25", "won", 1), deal("A2", "2024-04-20"), deal("J1", "2024-06-01")]
    rows = {r["month"]: r for r in pipeline_metrics(make(deals), AS_OF)["total"]["cohorts"]}
    march, april, june = rows["2024-03"], rows["2024-04"], rows["2024-06"]
    # March: M1 won in 20 days, M2 in 70; mature at 90 days since Apr 1 + 90 days = Jun 30
    assert (march["win_rate_30d"], march["cycle_30d"], march["win_rate_60d"]) == (0.25, 20, 0.25)
    assert (march["win_rate_90d"], march["cycle_90d"]) == (0.5, 45)
    # April: May 1 + 60 days = Jun 30 is mature at 60 days, not at 90
    assert (april["win_rate_30d"], april["win_rate_60d"], april["win_rate_90d"]) == (0.5, 0.5, None)
    assert all(june[f"win_rate_{k}d"] is None for k in (30, 60, 90))


# --- point in time, grouping, missing tables ------------------------------------------------------
def test_nothing_after_as_of_changes_anything(waterfall_data):
    before = pipeline_metrics(waterfall_data, AS_OF, group_by="team", target=1000)
    d = waterfall_data
    deals = d.deals.copy()
    open_c1 = deals["deal_id"] == "C1"
    deals.loc[open_c1, "closed_at"] = T("2024-07-05")  # closes after as_of: still open at as_of
    deals.loc[open_c1, "outcome"] = "won"
    deals = pd.concat([deals, pd.DataFrame([deal("Z", T("2024-07-01"), amount=99.0, team="red")])], ignore_index=True)
    late = pd.DataFrame({"deal_id": ["C4", "N1", "Z"], "stage": ["proposal", "lead", "lead"],
                         "entered_at": [T("2024-07-01"), T("2024-07-02"), T("2024-07-01")],
                         "amount": [1e6, 5.0, 99.0], "expected_close_date": [T("2024-06-01")] * 3})
    events = pd.concat([d.stage_events, late], ignore_index=True)
    acts = pd.concat([d.activities, pd.DataFrame({"deal_id": ["C4"], "occurred_at": [T("2024-07-01")],
                                                  "type": ["call"]})], ignore_index=True)
    after = validate(deals, d.meta, events, acts).data
    assert pipeline_metrics(after, AS_OF, group_by="team", target=1000) == before


def test_group_figures_add_up_to_the_total(waterfall_data):
    m = pipeline_metrics(waterfall_data, AS_OF, group_by="team")
    groups, total = m["groups"], m["total"]
    assert [g["group"] for g in groups] == ["(missing)", "blue", "red"]  # X1 has no team: its own group

    def total_of(path):
        get = lambda block: path(block)  # noqa: E731
        return sum(get(g) for g in groups), get(total)

    for path in [lambda b: b["funnel"]["won"], lambda b: b["funnel"]["open"], lambda b: b["stalled"]["count"],
                 lambda b: b["changes"]["start_amount"], lambda b: b["changes"]["end_amount"],
                 lambda b: b["changes"]["won"]["amount"], lambda b: b["changes"]["new"]["amount"],
                 lambda b: b["coverage"]["closed_won"], lambda b: b["funnel"]["stages"][0]["reached"]]:
        parts, whole = total_of(path)
        assert parts == pytest.approx(whole)
    red = next(g for g in groups if g["group"] == "red")
    assert red["changes"]["end_amount"] == 150 + 40  # C1 and N1


def test_unknown_group_column_lists_the_choices(waterfall_data):
    with pytest.raises(LeadscoreError, match="cannot group by 'colour'.*team"):
        pipeline_metrics(waterfall_data, AS_OF, group_by="colour")


def test_missing_optional_tables(funnel_data):
    data = CanonicalData(deals=funnel_data.deals, meta=funnel_data.meta)  # no events, no activities
    m = pipeline_metrics(data, AS_OF)
    t = m["total"]
    assert not m["stage_history_available"] and not m["activities_available"]
    assert [r["reached"] for r in t["funnel"]["stages"]] == [5, 0, 0, 0]  # everyone stays in lead
    assert t["stalled"]["activity_checked"] is False and t["stalled"]["by_reason"]["no_activity"] == 0
    assert t["changes"]["pushed_out"] is None
    json.dumps(m, allow_nan=False)


def test_static_dataset_gives_attribute_win_rates():
    deals = pd.DataFrame({"deal_id": list("abcdef"), "source": ["ads", "ads", "ads", "web", "web", None],
                          "outcome": ["won", "lost", "won", "lost", "lost", "won"]})
    data = validate(deals, DatasetMeta(stages=["lead"], static=True)).data
    m = pipeline_metrics(data, None)
    assert "unavailable" in m["time_metrics"]
    assert m["total"]["win_rate"] == pytest.approx(3 / 6)
    rates = {r["value"]: r["win_rate"] for r in m["total"]["attribute_win_rates"]["source"]}
    assert rates == {"ads": pytest.approx(2 / 3), "web": 0.0, "(missing)": 1.0}


# --- the long table of `leadscore pipeline --out x.csv` ------------------------------------------------
def test_metrics_table_is_one_row_per_number(waterfall_data):
    rows = metrics_table(pipeline_metrics(waterfall_data, AS_OF, group_by="team"))
    assert list(rows.columns) == ["metric", "group", "stage", "value"]
    end = {r.group: float(r.value) for r in rows.itertuples() if r.metric == "changes.end_amount"}
    assert end == {"(total)": 310, "(missing)": 0, "blue": 120, "red": 190}
    reached = rows[(rows["metric"] == "funnel.stages.reached") & (rows["group"] == "(total)")]
    assert list(zip(reached["stage"], reached["value"]))[:2] == [("lead", 7), ("qualified", 1)]  # all 7; only C4 reached qualified
    assert not rows["metric"].str.contains("stalled.deals").any()  # per deal, not a metric
