"""The forecast's fan chart as inline SVG (`features.htmlkit` primitives): whole-period
actuals of past periods, then per forecast period the landing's P10-P90 band (a bar, so
one period is a band, not a dot), its P50, the part already closed in a period in
progress, and the target where one is set.
"""
from __future__ import annotations

from typing import Callable

from features.htmlkit import PALETTE, line, nice_ceiling, rect, svg, text

HISTORY_SHOWN = 6
W, H, LEFT, RIGHT, TOP, BOTTOM = 960, 330, 78, 16, 34, 290


def fan_points(doc: dict) -> list[dict]:
    """One point per period on the chart: past whole periods (actual) then the forecast
    periods (closed so far, landing P10/P50/P90, target), from the forecast JSON."""
    history = [h for h in (doc.get("history") or []) if not h.get("so_far") and h.get("actual") is not None]
    points = [{"period": h["period"], "actual": h["actual"]} for h in history[-HISTORY_SHOWN:]]
    targets = {t["period"]: t["target"] for t in (doc.get("targets") or []) if t.get("group") == "(all)"}
    for r in doc["forecast"]:
        if r["group"] == "(all)":
            points.append({"period": r["period"], "partial": r["partial"], "closed_so_far": r["closed_so_far"],
                           "p10": r["landing_p10"], "p50": r["landing_p50"], "p90": r["landing_p90"],
                           "target": targets.get(r["period"])})
    return points


def fan_svg(doc: dict, fmt: Callable[[object], str]) -> str:
    """The chart for a forecast JSON; `fmt` formats the axis and labels (money or counts)."""
    points = fan_points(doc)
    values = [v for p in points for k in ("actual", "p90", "target") if (v := p.get(k)) is not None]
    top = nice_ceiling(max(values + [1.0]) * 1.08)
    slot = (W - LEFT - RIGHT) / len(points)

    def y(v: float) -> float:
        return BOTTOM - (BOTTOM - TOP) * v / top

    out = []
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        out.append(line(LEFT, y(top * frac), W - RIGHT, y(top * frac), dash="" if frac == 0 else "3 3"))
        out.append(text(LEFT - 8, y(top * frac) + 4, fmt(top * frac), "end", size=11, color=PALETTE["muted"]))
    centres = [LEFT + slot * (i + 0.5) for i in range(len(points))]
    actual = [(x, y(p["actual"])) for x, p in zip(centres, points) if "actual" in p]
    if len(actual) > 1:
        out.append(_polyline(actual, PALETTE["ink"], ""))
    p50 = [(x, y(p["p50"])) for x, p in zip(centres, points) if "p50" in p]
    if actual and p50:
        out.append(_polyline([actual[-1], p50[0]], PALETTE["muted"], "4 4"))
    if len(p50) > 1:
        out.append(_polyline(p50, PALETTE["bar"], "6 4"))
    bar = min(56.0, slot * 0.5)
    for x, p in zip(centres, points):
        out.append(text(x, BOTTOM + 18, p["period"] + (" (in progress)" if p.get("partial") else ""), "middle",
                        size=11, color=PALETTE["muted"]))
        if "actual" in p:
            out.append(f"<circle cx='{x:.1f}' cy='{y(p['actual']):.1f}' r='5' fill='{PALETTE['ink']}'/>")
            out.append(text(x, y(p["actual"]) - 10, fmt(p["actual"]), "middle", size=11, halo=True))
            continue
        if p["closed_so_far"]:
            out.append(rect(x - bar / 2, y(p["closed_so_far"]), bar, BOTTOM - y(p["closed_so_far"]),
                            PALETTE["good"], 0.35))
        out.append(rect(x - bar / 2, y(p["p90"]), bar, y(p["p10"]) - y(p["p90"]), PALETTE["band"], 0.9))
        out.append(line(x - bar / 2, y(p["p50"]), x + bar / 2, y(p["p50"]), PALETTE["bar"], 3))
        out.append(text(x + bar / 2 + 4, y(p["p50"]) + 4, fmt(p["p50"]), size=11, weight="bold", halo=True))
        if p.get("target") is not None:
            out.append(line(x - bar, y(p["target"]), x + bar, y(p["target"]), PALETTE["target"], 2, "5 3"))
            out.append(text(x - bar - 4, y(p["target"]) + 4, f"target {fmt(p['target'])}", "end", size=10,
                            color=PALETTE["target"], halo=True))
    out.append(_legend())
    return svg(W, H, "".join(out), "fan chart: actual and forecast landing per period")


def _polyline(xy: list[tuple[float, float]], color: str, dash: str) -> str:
    dashed = f" stroke-dasharray='{dash}'" if dash else ""
    return (f"<polyline fill='none' stroke='{color}' stroke-width='2'{dashed} "
            f"points='{' '.join(f'{x:.1f},{v:.1f}' for x, v in xy)}'/>")


def _legend() -> str:
    items = [(PALETTE["ink"], "actual (whole period)"), (PALETTE["band"], "landing P10–P90"),
             (PALETTE["bar"], "landing P50"), (PALETTE["good"], "closed so far"), (PALETTE["target"], "target")]
    out, x = [], LEFT
    for color, label in items:
        out.append(rect(x, 10, 14, 10, color, 0.9))
        out.append(text(x + 19, 19, label, size=11, color=PALETTE["muted"]))
        x += 24 + 6.6 * len(label)
    return "".join(out)
