"""The data of the forecast report for finance (`html_report.forecast_html` renders it):
the one forecast JSON (`report.forecast_dict`) plus what the store and the canonical
tables add: what changed since the previous stored forecast, the arithmetic of the
first period's landing, the risk list ranked by value at risk, the track record.

`briefing(...)` returns a JSON-ready dict; nothing here formats or writes files.
"""
from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from features.jsonsafe import json_safe
from features.schema import CanonicalData
from training.forecast.calibration import period_factors
from training.forecast.changes import deal_changes, previous_forecast
from training.forecast.newdeals import ALL
from training.forecast.outlook import Outlook
from training.forecast.periods import FREQS
from training.forecast.report import forecast_dict
from training.forecast.track_record import accuracy_report
from training.store.connection import Store, StoreUnavailable
from training.store.schema import NO_GROUP

RISK_SHOWN = 25
VALUE_AT_RISK = ("value at risk = what the forecast counts on from the deal in the first period: its value x "
                 "P(won with a close in the period), bias-corrected (the deal's share of the open-pipeline forecast)")
STORE_ERRORS = (StoreUnavailable, sa.exc.SQLAlchemyError, OSError)


def ranked_risk(result: Outlook) -> pd.DataFrame:
    """The risk list ranked by value at risk (largest first), every flagged deal."""
    risk = result.risk.assign(value_at_risk=result.risk["expected_in_period"])
    return risk.sort_values(["value_at_risk", "deal_id"], ascending=[False, True], ignore_index=True)


def landing_math(result: Outlook) -> list[dict]:
    """Per period (company total): open pipeline value x P(won in the period) + new deals
    + closed so far = expected landing, with the numbers of this forecast."""
    fc = result.forecast
    deals = fc.deals
    value = float(deals["value"].sum())
    factors = period_factors(fc.shock, fc.periods, fc.freq)
    rows = []
    for k, r in fc.totals().iterrows():
        rows.append({"period": r["period"], "partial": bool(r["partial"]), "open_deals": int(len(deals)),
                     "open_pipeline_value": value,
                     "p_won_in_period": float(r["open_pipeline"]) / value if value else None,
                     "open_pipeline": r["open_pipeline"], "new_deals": r["new_deals"],
                     "closed_so_far": r["closed_so_far"], "landing_expected": r["landing_expected"],
                     "landing_p10": r["landing_p10"], "landing_p50": r["landing_p50"],
                     "landing_p90": r["landing_p90"], "open_factor": factors[k]})
    return rows


def since_previous(result: Outlook, data: CanonicalData, store: Store) -> dict:
    """The previous stored forecast of the first period (same freq and grouping) against
    this one, per group, and the deal movements between its as-of date and this one's."""
    fc = result.forecast
    first = fc.periods.iloc[0]
    start = pd.Period(first["period"], freq=FREQS[fc.freq]).start_time
    prev = previous_forecast(store, fc.as_of, fc.freq, fc.group_by or NO_GROUP, start)
    if prev.empty:
        return {"previous_as_of": None, "period": first["period"],
                "reason": f"no forecast of {first['period']} was stored before {fc.as_of.date()}"}
    now = fc.table.loc[fc.table["period"] == first["period"]].set_index("group")
    groups = []
    for _, p in prev.iterrows():
        if p["group_value"] not in now.index:
            continue
        n = now.loc[p["group_value"]]
        groups.append({"group": p["group_value"], **{f"previous_{q}": p[q] for q in
                                                     ("landing_p10", "landing_p50", "landing_p90", "closed_so_far")},
                       **{f"now_{q}": n[q] for q in ("landing_p10", "landing_p50", "landing_p90", "closed_so_far")}})
    since = prev["as_of"].iloc[0]
    moves = deal_changes(data, since, fc.as_of, start, pd.Timestamp(first["end"]))
    return {"previous_as_of": since, "period": first["period"], "model_version": prev["model_version"].iloc[0],
            "groups": sorted(groups, key=lambda g: (g["group"] != ALL, g["group"])), "deals": moves}


def briefing(result: Outlook, data: CanonicalData, store: Store | None, currency: str | None = None,
             store_note: str | None = None) -> dict:
    """Everything the finance report shows, JSON-ready. `data`: the canonical tables the
    forecast was made from (all of them: the deal movements read them at two dates);
    `store`: the track-record store (None: unavailable, `store_note` says why)."""
    fc = result.forecast
    risk = ranked_risk(result)
    out = {"forecast": forecast_dict(result), "currency": currency, "math": landing_math(result),
           "risk_ranked": risk.head(RISK_SHOWN).to_dict("records"), "risk_total": {
               "count": int(len(risk)), "value_at_risk": float(risk["value_at_risk"].sum()),
               "open_deals": int(len(fc.deals)), "definition": VALUE_AT_RISK},
           "changes": None, "track_record": None, "store_note": store_note}
    if store is not None:
        try:
            out["changes"] = since_previous(result, data, store)
            out["track_record"] = accuracy_report(store, data, fc.freq, fc.group_by)
        except STORE_ERRORS as exc:
            out["store_note"] = f"the track-record store could not be read: {str(exc).splitlines()[0][:300]}"
    return json_safe(out)
