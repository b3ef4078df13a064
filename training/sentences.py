"""The words of a reason: one sentence per fact about a deal, numbers written for people.

`FactorExplainer` (training/explain.py) chooses the factors; the functions here write them.
Each takes the feature's label (`FeatureBuilder.describe`), the deal's value and, where a
sentence needs another fact of the same deal (the stage for days in stage, the overall
win rate for a group's win rate), that value.

Rules (tested on hand-built cases in tests/training/test_sentences.py):
- a comparison reads right for zero ("no earlier losses at this account") and for ratios
  ("3.2x the usual time", "up 23 % since the first amount");
- a missing value is said to be missing, and why it matters ("deal amount not recorded:
  deals without one win less often"); it is never a reason to win (explain.py drops it);
- numbers: thousands separators, days and counts as integers, rates as percentages, money
  without a currency symbol (the data carries none).
"""
from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from typing import Callable

# zero, in words, for counts where "0, lower than 60 % of won deals" would read wrong
ZERO = {"account_prior_wins": "no earlier wins at this account",
        "account_prior_losses": "no earlier losses at this account",
        "stage_regressions": "the deal never went back a stage", "stage_changes": "no stage change yet",
        "amount_changes": "the amount never changed", "close_date_pushes": "the close date was never pushed",
        "close_date_days_pushed": "the close date was never pushed",
        "owner_open_deals": "the owner has no other open deals"}
# a missing value that lowers the score, in words (default: "<label> not recorded: ...")
NO_CLOSE_DATE = "no expected close date: deals without one win less often"
NO_ACTIVITY = "no activities recorded: deals without them win less often"
# a current-state export shows the stage, not since when (features.snapshots.stage_seen_from)
NO_STAGE_ENTRY = "when the deal entered its current stage is not known: the export shows the stage, not since when"
MISSING = {"days_in_stage": NO_STAGE_ENTRY, "stage_velocity": NO_STAGE_ENTRY,
           "amount": "deal amount not recorded: deals without an amount win less often",
           "amount_change_ratio": "deal amount not recorded: deals without an amount win less often",
           "days_to_expected_close": NO_CLOSE_DATE, "expected_close_overdue": NO_CLOSE_DATE,
           "days_since_last_activity": NO_ACTIVITY, "activity_trend": NO_ACTIVITY}
# 0/1 features: (sentence for 1, sentence for 0)
YES_NO = {"expected_close_overdue": ("the expected close date has passed", "the expected close date is still ahead")}


def number(value: float, whole: bool = False) -> str:
    """1,234 / 12 / 0.35: thousands separators, no decimals for whole or large numbers."""
    if whole or abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def days(value: float) -> str:
    n = round(value)
    return "1 day" if n == 1 else f"{n:,} days"


def percent(rate: float) -> str:
    return f"{100 * rate:.0f} %"


def ratio(value: float) -> str:
    """A multiple of a usual value: "3.2x", or a share below it: "40 % of"."""
    return f"{value:.1f}x" if value >= 0.95 else f"{100 * value:.0f} % of"


def trend(impact: float) -> str:
    return "win more often" if impact > 0 else "win less often"


def compare(grid: list | None, value: float, whom: str = "won deals", more: str = "higher",
            less: str = "lower") -> str:
    """", higher than 85 % of won deals": the share of the reference strictly below (or
    above) the value, so ties (many zeros) never count on either side; "" without a grid.
    Written once per (grid size, position in the grid, wording): a grid has ~100 positions."""
    if not grid:
        return ""
    key = (len(grid), bisect_left(grid, value), bisect_right(grid, value), whom, more, less)
    found = _COMPARED.get(key)
    if found is None:
        found = _COMPARED[key] = _compared(*key)
    return found


_COMPARED: dict[tuple, str] = {}  # bounded: grid sizes x positions x the few wordings


def _compared(n: int, left: int, right: int, whom: str, more: str, less: str) -> str:
    below = round(100 * left / n)
    above = round(100 * (n - right) / n)
    if below < 60 and above < 60:  # around the middle
        return f", typical of {whom}"
    if below >= above:
        return f", {more} than any of the {whom}" if below == 100 else f", {more} than {below} % of {whom}"
    return f", {less} than any of the {whom}" if above == 100 else f", {less} than {above} % of {whom}"


def missing(feature: str, label: str, categorical: bool) -> str:
    """A missing value that lowers the score: say it is missing and why that matters."""
    if categorical:
        return f"{label} not recorded or not seen before: deals without a known {label} win less often"
    if feature in MISSING or feature.startswith("activities_"):
        return MISSING.get(feature, NO_ACTIVITY)
    return f"{label} not recorded: deals without one win less often"


def category(label: str, value: str, impact: float) -> str:
    return f"{label} is {value}: deals like this {trend(impact)}"


def stage(name: str, furthest: str | None, impact: float) -> str:
    """The current stage, the furthest stage reached (when further) and the stage's effect, in one sentence."""
    after = f" after reaching {furthest}" if furthest and furthest != name else ""
    return f"the deal is in {name}{after}: deals at this stage {trend(impact)}"


def reached(name: str, impact: float) -> str:
    """The furthest stage reached, as a factor of its own (when the current stage is not one)."""
    return f"the deal has reached {name}: deals that got this far {trend(impact)}"


def time_in_stage(value: float, stage_name: str | None, velocity, grid: list | None) -> str:
    """Days in the current stage with the usual time there (stage velocity) and won deals at that stage."""
    where = f"in {stage_name}" if stage_name else "in the current stage"
    usual = f", {ratio(velocity)} the usual time" if _finite(velocity) else ""
    return f"{days(value)} {where}{usual}{compare(grid, value, 'won deals at that stage', 'longer', 'shorter')}"


def group_rate(label: str, value: float, overall) -> str:
    against = f", against {percent(overall)} overall" if _finite(overall) else ""
    return f"{label}: {percent(value)}{against}"


def change_ratio(value: float) -> str:
    if abs(value - 1) < 0.005:
        return "the amount is unchanged since it was first entered"
    side = "up" if value > 1 else "down"
    return f"the amount is {side} {percent(abs(value - 1))} since it was first entered"


def pace(value: float) -> str:
    """Recent activity against the earlier pace (`activity_trend`)."""
    return f"recent activity at {ratio(value)} the earlier pace"


def velocity(value: float) -> str:
    """Time in stage against the usual time there, when days in stage is not a feature."""
    return f"{ratio(value)} the usual time in this stage"


def numeric(feature: str, label: str, grid: list | None) -> Callable[[float], str]:
    """The sentence of a known number of `feature`, with what depends on the feature worked
    out once: zero in words where that reads better, yes/no features, counts that grow
    with time (no comparison), else the value and how it compares with won deals."""
    if feature in YES_NO:
        yes, no = YES_NO[feature]
        return lambda value: yes if value else no
    zero_text = zero(feature, label) if feature in ZERO or feature.startswith("activities_") \
        or feature.endswith("_closed_deals") else None
    if feature.endswith("_closed_deals"):  # grows with time: won deals of earlier years compare badly
        return lambda value: zero_text if value == 0 else f"{label}: {number(value, True)} so far"
    rounded = whole(feature)
    return lambda value: zero_text if value == 0 and zero_text else \
        f"{label}: {number(value, rounded)}{compare(grid, value)}"


def zero(feature: str, label: str) -> str:
    if feature in ZERO:
        return ZERO[feature]
    if m := re.fullmatch(r"activities_(\d+)d", feature):
        return f"no activity in the last {m.group(1)} days"
    return f"{label}: none yet"  # e.g. "owner closed deals: none yet"


def whole(feature: str) -> bool:
    """Counts and days read better without decimals."""
    return "days" in feature or feature.endswith(("_deals", "_wins", "_losses")) \
        or feature.startswith(("activities_", "stage_changes", "stage_regressions", "close_date_pushes",
                               "amount_changes"))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
