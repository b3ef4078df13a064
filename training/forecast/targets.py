"""The target report, a step after the forecast. Per target row (period, group): closed-won
so far, the landing's P10/P50/P90 and P(hit target) from the forecast's own simulation,
the gap, the open pipeline due, pipeline coverage and the leads still needed.

A targets frame has columns period, target and optionally one group column (named like
`--group-by`, or "group"). Without a group column the targets are company totals, also
when the forecast is split by group. `checked_targets` raises the first bad row (a
TargetsError naming its row and column) before anything is simulated (`outlook.outlook`
calls it first); the same rules for a targets file and for the targets of a `/forecast`
request (`serving.forecast_targets`).
"""
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
LANDING_DEFINITION = ("landing = closed-won so far in the period + the simulated rest (open pipeline + new deals); "
                      "landing_p10/p50/p90 are quantiles of the simulated landings, from the forecast's simulation")
P_HIT_DEFINITION = "p_hit_target = share of the forecast's simulations whose landing >= target"
GAP_DEFINITION = "gap_to_target = target - landing_p50 (negative: the median landing is above the target)"
LEADS_DEFINITION = ("leads needed = max(gap_to_target, 0) / (historical share of new deals eventually won x mean "
                    "recent won amount), rounded up: 0 when the P50 landing meets the target")


@dataclass(frozen=True)
class TargetReport:
    """One row per target (`table`) and the expected eventual won value of one new lead."""

    table: pd.DataFrame
    value_per_new_lead: float

    def definitions(self) -> dict:
        return {"landing": LANDING_DEFINITION, "p_hit_target": P_HIT_DEFINITION, "gap_to_target": GAP_DEFINITION,
                "pipeline_coverage": COVERAGE_DEFINITION, "leads_needed": LEADS_DEFINITION,
                "value_per_new_lead": self.value_per_new_lead}


def target_report(targets: pd.DataFrame, fc: Forecast) -> TargetReport:
    """The report for `targets` as returned by `checked_targets`: one row per target,
    plus a company row per period whose per-group targets cover every forecast group."""
    per_lead = fc.new_deals.value_per_lead()
    rows = [_target_row(fc, t["period"], t["group"], float(t["target"]), per_lead) for _, t in targets.iterrows()]
    if fc.group_by and (targets["group"] != ALL).all():
        for period, part in targets.groupby("period", sort=False):
            if set(fc.sims.groups) <= set(part["group"]):
                rows.append(_target_row(fc, period, ALL, float(part["target"].sum()), per_lead))
    return TargetReport(table=pd.DataFrame(rows), value_per_new_lead=per_lead)


def _target_row(fc: Forecast, period: str, group: str, target: float, per_lead: float) -> dict:
    """One target (a handful per report, not per deal) read off the forecast's simulation."""
    k = int(np.flatnonzero(fc.periods["period"].to_numpy() == period)[0])
    prow, pipe = fc.periods.iloc[k], fc.deals
    landing = fc.sims.landing(group)[:, k]
    closed = float(fc.sims.closed_so_far(group)[k])
    in_group = np.ones(len(pipe), bool) if group == ALL else (pipe["group"] == group).to_numpy()
    due = in_group & due_in(pipe, fc.as_of, prow["start"], prow["end"], k == 0)
    shown = fc.table.loc[(fc.table["period"] == period) & (fc.table["group"] == group)]
    expected = float(shown["expected"].sum())
    q10, q50, q90 = np.quantile(landing, [0.1, 0.5, 0.9])
    gap, open_due = target - closed, float(pipe.loc[due, "amount"].sum())
    short = max(target - q50, 0.0)
    return {"period": period, "group": group, "target": target, "closed_won_so_far": closed,
            "expected_landing": closed + expected, "landing_p10": q10, "landing_p50": q50, "landing_p90": q90,
            "p_hit_target": float(np.mean(landing >= target)), "gap_to_target": target - q50,
            "remaining_gap": gap, "target_met": gap <= 0, "open_pipeline_due": open_due,
            "weighted_pipeline_due": float((pipe.loc[due, "amount"] * pipe.loc[due, "close_probability"]).sum()),
            "deals_due": int(due.sum()), "pipeline_coverage": open_due / gap if gap > 0 else None,
            "expected_from_open_pipeline": float(pipe.loc[in_group, f"exp_{k}"].sum()),
            "leads_needed": (int(np.ceil(short / per_lead)) if short > 0 else 0) if per_lead > 0 else None}


@dataclass(frozen=True)
class TargetSource:
    """How error messages name where the targets came from and the grouping option."""

    has: str = "the targets file has"  # the subject of every message
    group_option: str = "--group-by"
    periods_option: str = "--periods"


FILE = TargetSource()
REQUEST = TargetSource("the targets have", "group_by", "periods")


class TargetsError(LeadscoreError, ValueError):
    """A bad target, located: `row` (0-based, None for the whole table) and `column`."""

    def __init__(self, message: str, row: int | None = None, column: str | None = None):
        super().__init__(message)
        self.row, self.column = row, column


def checked_targets(targets: pd.DataFrame, periods: pd.DataFrame, freq: str, group_by: str | None,
                    group_values: pd.Series | None = None, source: TargetSource = FILE) -> pd.DataFrame:
    """Targets with columns period (as the forecast labels it), group ("(all)" for company
    targets) and numeric target, or a one-line TargetsError at the first bad row and column.
    `group_values`: the grouping column of the deals, to name target groups that do not exist."""
    targets = _with_group_column(targets.reset_index(drop=True), group_by, source)
    labels = [_period_label(p, freq) for p in targets["period"]]
    values = pd.to_numeric(targets["target"], errors="coerce").astype("float64")
    for i, (label, value) in enumerate(zip(labels, values)):
        if label is None:
            raise TargetsError(f"{source.has} a bad period '{targets['period'].iloc[i]}': use periods like "
                               f"{periods['period'].iloc[0]}", i, "period")
        if not np.isfinite(value):
            raw = str(targets["target"].iloc[i]).strip()
            raise TargetsError(f"{source.has} an empty or non-finite target" if raw in ("", "nan", "inf", "-inf")
                               else f"{source.has} a bad target value '{raw}': give a number", i, "target")
        if value < 0:
            raise TargetsError(f"{source.has} a negative target ({value:g}): give an amount >= 0", i, "target")
    targets["period"], targets["target"] = labels, values
    known = set(periods["period"])
    for i, label in enumerate(labels):
        if label not in known:
            raise TargetsError(f"{source.has} a period {label} outside the forecast "
                               f"({', '.join(periods['period'])}): extend {source.periods_option} or drop it",
                               i, "period")
    repeated = np.flatnonzero(targets.duplicated(["period", "group"]).to_numpy())
    if len(repeated):
        raise TargetsError(f"{source.has} more than one target for the same period and group", int(repeated[0]))
    if group_by and group_values is not None and (targets["group"] != ALL).any():
        present = set(group_values.astype("string").fillna("(none)").astype(str))
        missing = [i for i, g in enumerate(targets["group"]) if g not in present]
        if missing:
            names = sorted({targets["group"].iloc[i] for i in missing})
            raise TargetsError(f"{source.has} targets for {group_by} values {names} that no deal has",
                               missing[0], group_by)
    return targets


def _period_label(value, freq: str) -> str | None:
    """'2024-07' / '2024Q3' as the forecast labels the period, or None when it is not one
    (also when it names no year: pandas reads 'August' as August of year 1)."""
    text = str(value).strip()
    try:
        period = pd.Period(text, FREQS[freq])
    except (ValueError, TypeError):
        return None
    return str(period) if f"{period.year:04d}" in text else None


def _with_group_column(targets: pd.DataFrame, group_by: str | None, source: TargetSource = FILE) -> pd.DataFrame:
    """period, target and group: the targets' group column renamed, or "(all)"."""
    missing = [c for c in ("period", "target") if c not in targets]
    if missing:
        raise TargetsError(f"{source.has} no column {missing}: give columns period, "
                           f"[{group_by or 'group column'}], target")
    extra = [c for c in targets.columns if c not in ("period", "target")]
    if len(extra) > 1:
        raise TargetsError(f"{source.has} columns {extra}: give period, at most one group column, target",
                           _first_row_with(targets, extra[1]), extra[1])
    targets = targets[["period", "target"]].copy() if not extra else targets.copy()
    if not extra:
        targets["group"] = ALL
        return targets
    column = extra[0]
    if not group_by:
        raise TargetsError(f"{source.has} a group column '{column}': pass {source.group_option} {column} "
                           f"(or drop the column for company targets)", _first_row_with(targets, column), column)
    if column not in (group_by, "group"):
        raise TargetsError(f"{source.has} a group column '{column}' that does not match {source.group_option} {group_by}",
                           _first_row_with(targets, column), column)
    absent = np.flatnonzero(targets[column].isna().to_numpy())
    if len(absent):
        raise TargetsError(f"{source.has} a '{column}' in some rows only: give it in every row (per-group "
                           f"targets) or in none (company targets)", int(absent[0]), column)
    targets = targets.rename(columns={column: "group"})
    targets["group"] = targets["group"].astype(str)
    return targets


def _first_row_with(targets: pd.DataFrame, column: str) -> int:
    return int(np.flatnonzero(targets[column].notna().to_numpy())[0]) if targets[column].notna().any() else 0
