"""The target report, a step after the forecast: per target row, closed-won so far, the
remaining gap, the open pipeline due, pipeline coverage and the leads still needed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import LeadscoreError
from training.forecast.core import Forecast
from training.forecast.newdeals import ALL
from training.forecast.periods import FREQS
from training.forecast.valuation import due_in

COVERAGE_DEFINITION = ("pipeline coverage = open pipeline amount due in the period (deals whose expected close "
                       "date, as known at the as-of date, falls in the period; overdue dates count in the first "
                       "period; deals without one are due when the model's median close date falls in it) / "
                       "remaining gap (target - closed-won so far in the period)")
LEADS_DEFINITION = ("leads needed = (remaining gap - expected bookings from the open pipeline in the period) / "
                    "(historical share of new deals eventually won x mean recent won amount), rounded up")


@dataclass(frozen=True)
class TargetReport:
    """One row per target (`table`) and the expected eventual won value of one new lead."""

    table: pd.DataFrame
    value_per_new_lead: float

    def definitions(self) -> dict:
        return {"pipeline_coverage": COVERAGE_DEFINITION, "leads_needed": LEADS_DEFINITION,
                "value_per_new_lead": self.value_per_new_lead}


def target_report(targets: pd.DataFrame, fc: Forecast) -> TargetReport:
    """Per target row: closed-won so far, remaining gap, open and weighted pipeline due,
    coverage, the gap left after the expected pipeline wins, and leads needed."""
    targets = checked_targets(targets, fc.periods, fc.freq, fc.group_by)
    pipe, as_of, known = fc.deals, fc.as_of, fc.known
    won = known.deals.loc[(known.deals["outcome"] == "won") & (known.deals["closed_at"] <= as_of)]
    won_group = won[fc.group_by].astype("string").fillna("(none)").astype(str) if fc.group_by else \
        pd.Series(ALL, index=won.index)
    won_value = fc.booking_rule.booked(won["amount"])
    per_lead = fc.new_deals.value_per_lead()
    rows = []
    for _, t in targets.iterrows():  # one row per target (a handful), not per deal
        k = int(fc.periods.index[fc.periods["period"] == t["period"]][0])
        prow = fc.periods.iloc[k]
        cal_start = pd.Period(prow["period"], FREQS[fc.freq]).start_time
        in_group = (pipe["group"] == t["group"]).to_numpy() if fc.group_by else np.ones(len(pipe), bool)
        due = in_group & due_in(pipe, as_of, prow["start"], prow["end"], k == 0)
        so_far = float(won_value[(won["closed_at"] >= cal_start) & (won_group == t["group"])].sum())
        gap = float(t["target"]) - so_far
        open_due = float(pipe.loc[due, "amount"].sum())
        expected_open = float(pipe.loc[in_group, f"exp_{k}"].sum())
        after = max(gap - expected_open, 0.0)
        rows.append({"period": t["period"], "group": t["group"], "target": float(t["target"]),
                     "closed_won_so_far": so_far, "remaining_gap": gap, "open_pipeline_due": open_due,
                     "weighted_pipeline_due": float((pipe.loc[due, "amount"] * pipe.loc[due, "close_probability"]).sum()),
                     "deals_due": int(due.sum()), "pipeline_coverage": open_due / gap if gap > 0 else None,
                     "target_met": gap <= 0, "expected_from_open_pipeline": expected_open,
                     "gap_after_expected_pipeline": after,
                     "leads_needed": int(np.ceil(after / per_lead)) if per_lead > 0 else None})
    return TargetReport(table=pd.DataFrame(rows), value_per_new_lead=per_lead)


def checked_targets(targets: pd.DataFrame, periods: pd.DataFrame, freq: str, group_by: str | None) -> pd.DataFrame:
    """Targets with columns period (as the forecast labels it), group and numeric target,
    or a clear error."""
    targets = targets.copy()
    if "group" not in targets and group_by and group_by in targets:
        targets = targets.rename(columns={group_by: "group"})
    missing = [c for c in ("period", "target") if c not in targets]
    if missing:
        raise LeadscoreError(f"the targets file has no column {missing}: give columns period, "
                             f"[{group_by or 'group'}], target")
    if "group" in targets and not group_by:
        raise LeadscoreError("the targets file has a group column: pass --group-by with the column it refers to")
    targets["group"] = targets["group"].astype(str) if "group" in targets else ALL
    targets["period"] = targets["period"].astype(str).str.strip()
    try:
        targets["period"] = [str(pd.Period(p, FREQS[freq])) for p in targets["period"]]
        targets["target"] = pd.to_numeric(targets["target"], errors="raise")
    except (ValueError, TypeError) as exc:
        raise LeadscoreError(f"the targets file has a bad period or target value ({exc}): use periods like "
                             f"{periods['period'].iloc[0]} and numeric targets") from None
    unknown = sorted(set(targets["period"]) - set(periods["period"]))
    if unknown:
        raise LeadscoreError(f"targets for periods {unknown} are outside the forecast "
                             f"({', '.join(periods['period'])}): extend --periods or drop those rows")
    return targets
