"""`render_html(metrics, currency)`: the pipeline metrics as one self-contained HTML page.

Charts are inline SVG drawn here, styles and number formats come from
`features.htmlkit` (shared with the forecast report); there is no script, font or image
from anywhere else, so the page renders offline and from an e-mail attachment. Data
without amounts (every amount unknown) shows counts: open deals, a waterfall by count.
Over 300 lines because each chart is its own small SVG drawer; they share nothing but
the kit, so splitting them would only scatter one page over files.
"""
from __future__ import annotations

from functools import partial
from html import escape
from typing import Callable

from features.htmlkit import (
    DASH,
    PALETTE,
    change_words,
    count,
    kpis,
    nice_ceiling,
    num,
    page,
    pct,
    ratio,
    section,
    signed,
    svg,
    table,
    text,
    words,
)
from features.htmlkit import money as kit_money

STALLED_SHOWN = 25


_Fmt = Callable[[object], str]  # money in the report's currency, compact


def render_html(metrics: dict, currency: str | None = None) -> str:
    """The whole report page for a `pipeline_metrics` result; amounts in `currency`
    (an ISO code such as "EUR"; none: plain numbers)."""
    title = f"Pipeline report — {metrics.get('dataset', '')}"
    sub = ("static dataset (no dates)" if metrics.get("static") else f"as of {metrics['as_of'][:10]}") + \
          (f" · grouped by {metrics['group_by']}" if metrics.get("group_by") else "") + \
          (f" · amounts in {currency.upper()}" if currency else "")
    static = metrics.get("static")
    # no amount known anywhere: every amount shows as unknown, never as a zero
    money = partial(kit_money, currency=currency) if static or has_amounts(metrics["total"]) else _unknown
    body = _static_body(metrics) if static else _dynamic_body(metrics, money)
    return page(title, sub, body)


def defined(m: dict, key: str, label: str = "Win rate") -> str:
    """A caption saying which definition a figure shows (the metrics' `definitions`)."""
    said = (m.get("definitions") or {}).get(key)
    return f"{label}: {escape(words(said))}" if said else ""


def _unknown(_x) -> str:
    return DASH


def has_amounts(t: dict) -> bool:
    """Whether any amount is known (else the report shows counts, not zeros)."""
    c = t["changes"]
    return bool(c["start_amount"] or c["end_amount"] or t["deal_size"]["average_won_amount"] is not None)


def _dynamic_body(m: dict, money: _Fmt) -> str:
    t = m["total"]
    amounts = has_amounts(t)
    waterfall = _waterfall_svg(t["changes"], money) if amounts else _count_waterfall_svg(t["changes"], t["funnel"]["open"])
    parts = [_kpis(t, money, amounts), f"<p class='note'>{defined(m, 'funnel.win_rate')}</p>", _bottleneck(t["bottleneck"]),
             "<div class='grid'>", section("Funnel", _funnel_svg(t["funnel"]),
                                           "Conversion = moved on or won / (moved on or won + lost), by furthest stage "
                                           "reached; deals still open at their furthest stage are left out. "
                                           + defined(m, "funnel.win_rate")),
             section("Time in stage (days)", _dwell_svg(t["time_in_stage"]),
                     "Bar to P75, whisker to P90, dot at the median; completed stays only."),
             section("Sales velocity trend (revenue per day)", _line_svg(t["velocity"]["trend"], money),
                     f"Open deals at {escape(t['velocity']['qualified_stage'])} or later × win rate × average won "
                     f"amount / average won cycle, over closes of the trailing {t['velocity']['history_days']} days. "
                     + defined(m, "velocity.win_rate")),
             section(f"Pipeline changes, last {t['changes']['window_days']} days"
                     + ("" if amounts else " (deals: no amounts known)"), waterfall, _moves_note(t["changes"], money)),
             "</div>",
             section("Cohorts by creation month: share won by age", _cohort_table(t["cohorts"]),
                     "Blank cells: the cohort is not old enough yet at the report date. "
                     + defined(m, "cohorts.win_rate_<N>d", "Share won")),
             "<div class='grid'>", section("Losses by stage", _loss_svg(t["funnel"]["losses_by_stage"]),
                                           _unknown_stage_note(t["funnel"])),
             section("Coverage", _coverage(t["coverage"], money, amounts)), "</div>",
             section(f"Stalled deals ({count(t['stalled']['count'])})", _stalled_table(t["stalled"], money),
                     _stalled_note(t["stalled"]))]
    if t.get("stale", {}).get("count"):
        parts.append(section(f"Stale deals ({count(t['stale']['count'])})", _stale_table(t["stale"], money, amounts),
                             _stale_note(t["stale"], money, amounts)))
    if m.get("groups"):
        parts.append(section(f"By {words(m['group_by'])}", _group_table(m["groups"], money)))
    return "".join(parts)


def _kpis(t: dict, money: _Fmt, amounts: bool) -> str:
    cov, stalled = t["coverage"], t["stalled"]
    cards = [("Win rate", pct(t["funnel"]["win_rate"])),
             ("Avg won deal", money(t["deal_size"]["average_won_amount"])),
             ("Median cycle", f"{num(t['sales_cycle']['median_days'])} d"),
             ("Velocity / day", money(t["velocity"]["per_day"]))]
    if amounts:
        cards.append(("Open pipeline", money(t["changes"]["end_amount"])))
    stale = t.get("stale") or {"count": 0, "amount": 0.0, "open_deals": 0}
    cards += [("Open deals", count(t["funnel"]["open"])), ("Coverage", ratio(cov["coverage"])),
              ("Stalled", f"{count(stalled['count'])} · {money(stalled['amount'])}" if amounts
               else count(stalled["count"])),
              ("Stale", f"{count(stale['count'])} · {money(stale['amount'])}" if amounts
               else f"{count(stale['count'])} of {count(stale['open_deals'])}")]
    return kpis(cards)


def bottleneck_sentence(b: dict) -> str:
    """What moved at the bottleneck stage, with the sign of the change and whether it is
    better or worse: "conversion 2% in the last 90 days vs 18% before (−89%, worse)"."""
    window = f"in the last {b['recent_window_days']} days"
    if b["metric"] == "conversion":
        return (f"conversion {pct(b['recent'])} {window} vs {pct(b['prior'])} before "
                f"({change_words(b['recent'], b['prior'], higher_is_better=True)})")
    return (f"median time in stage {num(b['recent'], 1)} days {window} vs {num(b['prior'], 1)} before "
            f"({change_words(b['recent'], b['prior'], higher_is_better=False)})")


def _bottleneck(b: dict) -> str:
    if b["stage"] is None:
        return section("Bottleneck", f"<p>None found: {escape(b['reason'])}.</p>", cls="callout ok")
    verdict = "worse than its history" if b["worse_than_history"] else "no stage is worse than its history; least improved"
    return section("Bottleneck", f"<p><b>{escape(b['stage'])}</b>: {escape(bottleneck_sentence(b))}; {verdict}.</p>",
                   cls="callout" if b["worse_than_history"] else "callout ok")


def _funnel_svg(f: dict) -> str:
    rows, w, lane = f["stages"], 520, 44
    top = max([r["reached"] for r in rows] + [1])
    out = []
    for i, r in enumerate(rows):
        bw = max(2.0, 330 * r["reached"] / top)
        y = 8 + i * lane
        out.append(f"<rect x='{300 - bw / 2:.1f}' y='{y}' width='{bw:.1f}' height='28' rx='3' fill='{PALETTE['bar']}' "
                   f"opacity='{1 - 0.15 * i:.2f}'/>")
        out.append(text(10, y + 19, r["stage"], weight="bold"))
        out.append(text(300, y + 19, count(r["reached"]), "middle", color="#fff", weight="bold"))
        out.append(text(w - 6, y + 19, f"→ {pct(r['conversion'])}", "end", color=PALETTE["muted"]))
    y = 8 + len(rows) * lane
    out.append(text(10, y + 14, f"won {count(f['won'])} · lost {count(f['lost'])} · open {count(f['open'])} · "
                                f"win rate {pct(f['win_rate'])}", color=PALETTE["muted"]))
    return svg(w, y + 22, "".join(out), "funnel")


def _dwell_svg(rows: list[dict]) -> str:
    w, lane = 520, 36
    top = max([r["p90_days"] or 0 for r in rows] + [1])
    scale = 330 / top
    out = []
    for i, r in enumerate(rows):
        y = 10 + i * lane
        out.append(text(10, y + 15, r["stage"], weight="bold"))
        if r["median_days"] is None:
            out.append(text(110, y + 15, "no completed stays", color=PALETTE["muted"]))
            continue
        x0 = 110
        out.append(f"<line x1='{x0}' x2='{x0 + r['p90_days'] * scale:.1f}' y1='{y + 10}' y2='{y + 10}' "
                   f"stroke='{PALETTE['muted']}' stroke-width='2'/>")
        out.append(f"<rect x='{x0}' y='{y + 2}' width='{max(1, r['p75_days'] * scale):.1f}' height='16' rx='3' "
                   f"fill='{PALETTE['bar2']}'/>")
        out.append(f"<circle cx='{x0 + r['median_days'] * scale:.1f}' cy='{y + 10}' r='5' fill='{PALETTE['bar']}'/>")
        out.append(text(w - 4, y + 15, f"{r['median_days']:.0f} / {r['p75_days']:.0f} / {r['p90_days']:.0f}", "end",
                        size=11, color=PALETTE["muted"]))
    out.append(text(w - 4, 10 + len(rows) * lane + 4, "median / P75 / P90", "end", size=10, color=PALETTE["muted"]))
    return svg(w, 20 + len(rows) * lane, "".join(out), "time in stage")


def _line_svg(points: list[dict], money: _Fmt) -> str:
    w, h, left, bottom = 520, 210, 60, 180
    values = [p["per_day"] for p in points]
    known = [v for v in values if v is not None]
    if not known or not any(known):
        return "<p class='note'>Not enough closed deals with amounts for a velocity yet.</p>"
    top = nice_ceiling(max(known) * 1.1)
    step = (w - left - 20) / max(1, len(points) - 1)
    xy = [(left + i * step, bottom - (v / top) * (bottom - 20)) for i, v in enumerate(values) if v is not None]
    out = [f"<line x1='{left}' x2='{w - 10}' y1='{bottom}' y2='{bottom}' stroke='{PALETTE['grid']}'/>"]
    for frac in (0.5, 1.0):
        y = bottom - frac * (bottom - 20)
        out.append(f"<line x1='{left}' x2='{w - 10}' y1='{y:.1f}' y2='{y:.1f}' stroke='{PALETTE['grid']}' "
                   f"stroke-dasharray='3 3'/>")
        out.append(text(left - 6, y + 4, money(top * frac), "end", size=10, color=PALETTE["muted"]))
    out.append(f"<polyline fill='none' stroke='{PALETTE['bar']}' stroke-width='2.5' "
               f"points='{' '.join(f'{x:.1f},{y:.1f}' for x, y in xy)}'/>")
    for (x, y), v in zip(xy, known):
        out.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='4' fill='{PALETTE['bar']}'/>")
        out.append(text(x, y - 9, money(v), "middle", size=10))
    for i, p in enumerate(points):
        out.append(text(left + i * step, bottom + 16, p["as_of"][:7], "middle", size=10, color=PALETTE["muted"]))
    return svg(w, h, "".join(out), "velocity trend")


# (label, value, kind): kind "total" is a bar from zero; the others float from the running
# total, coloured by what they mean for the business (won is good although it leaves the
# open pipeline).
STEP_COLOURS = {"total": PALETTE["ink"], "up": PALETTE["bar"], "down": PALETTE["warn"], "won": PALETTE["good"],
                "lost": PALETTE["bad"]}


def waterfall_steps(c: dict) -> list[tuple[str, float, str]]:
    """The amount waterfall's bars: start, new, amount up, amount down, won, lost, end."""
    return [("start", c["start_amount"], "total"), ("new", c["new"]["amount"], "up"),
            ("amount up", c["amount_up"]["amount"], "up"), ("amount down", -c["amount_down"]["amount"], "down"),
            ("won", -c["won"]["amount"], "won"), ("lost", -c["lost"]["amount"], "lost"),
            ("end", c["end_amount"], "total")]


def count_waterfall_steps(c: dict, open_end: int) -> list[tuple[str, float, str]]:
    """Open deals by count (data without amounts): start = end - new + won + lost."""
    start = open_end - c["new"]["count"] + c["won"]["count"] + c["lost"]["count"]
    return [("start", start, "total"), ("new", c["new"]["count"], "up"), ("won", -c["won"]["count"], "won"),
            ("lost", -c["lost"]["count"], "lost"), ("end", open_end, "total")]


def _waterfall_svg(c: dict, money: _Fmt) -> str:
    return _draw_waterfall(waterfall_steps(c), money)


def _count_waterfall_svg(c: dict, open_end: int) -> str:
    return _draw_waterfall(count_waterfall_steps(c, open_end), count)


def _draw_waterfall(steps: list[tuple[str, float, str]], fmt) -> str:
    w, bottom, left = 520, 190, 10
    running, peak = 0.0, 1.0
    for _name, v, kind in steps:
        running = v if kind == "total" else running + v
        peak = max(peak, running, v if kind == "total" else running - v)
    scale, bw = (bottom - 25) / peak, (w - 2 * left) / len(steps)
    out, running = [f"<line x1='0' x2='{w}' y1='{bottom}' y2='{bottom}' stroke='{PALETTE['grid']}'/>"], 0.0
    for i, (name, v, kind) in enumerate(steps):
        lo, hi = (0, v) if kind == "total" else (min(running, running + v), max(running, running + v))
        running = v if kind == "total" else running + v
        x = left + i * bw + 8
        out.append(f"<rect x='{x:.1f}' y='{bottom - hi * scale:.1f}' width='{bw - 16:.1f}' "
                   f"height='{max(1, (hi - lo) * scale):.1f}' fill='{STEP_COLOURS[kind]}' rx='2'/>")
        label = fmt(v) if kind == "total" else signed(v, fmt)
        out.append(text(x + (bw - 16) / 2, bottom - hi * scale - 5, label, "middle", size=10))
        out.append(text(x + (bw - 16) / 2, bottom + 15, name, "middle", size=10, color=PALETTE["muted"]))
    return svg(w, bottom + 22, "".join(out), "pipeline changes")


def _moves_note(c: dict, money: _Fmt) -> str:
    counts = ", ".join(f"{words(k)} {count(c[k]['count'])}" for k in ("new", "won", "lost", "amount_up", "amount_down"))
    moves = ""
    if c.get("pushed_out") is not None:
        out, into = c["pushed_out"], c["pulled_in"]
        known = money is not _unknown
        moves = (f" Close dates: pushed out {count(out['count'])}" + (f" ({money(out['amount'])})" if known else "")
                 + f", pulled in {count(into['count'])}" + (f" ({money(into['amount'])})" if known else "")
                 + " — moves, not in the total.")
    return f"Deals: {counts}.{moves} Adds up: residual {num(c['residual'], 2)}."


def _heat(v) -> str:
    if v is None:
        return "<td class='na'>·</td>"
    alpha = min(1.0, v / 0.5)  # a 50% win rate is the darkest shade
    return f"<td class='heat' style='background:rgba(37,99,235,{0.08 + 0.8 * alpha:.2f});" \
           f"color:{'#fff' if alpha > 0.55 else '#111827'}'>{pct(v)}</td>"


def _cohort_table(rows: list[dict]) -> str:
    ages = (30, 60, 90)
    head = "<tr><th>created</th><th>deals</th>" + "".join(f"<th>won ≤{a}d</th>" for a in ages) + \
           "".join(f"<th>cycle ≤{a}d</th>" for a in ages) + "</tr>"
    body = "".join("<tr><td>" + escape(r["month"]) + f"</td><td>{count(r['deals'])}</td>" +
                   "".join(_heat(r[f"win_rate_{a}d"]) for a in ages) +
                   "".join(f"<td>{num(r[f'cycle_{a}d'])}</td>" for a in ages) + "</tr>" for r in rows[-18:])
    more = f"<p class='note'>Last 18 of {len(rows)} cohorts.</p>" if len(rows) > 18 else ""
    return f"<div class='scroll'><table>{head}{body}</table></div>{more}"


def _loss_svg(rows: list[dict]) -> str:
    w, lane = 520, 30
    top = max([r["lost"] for r in rows] + [1])
    out = []
    for i, r in enumerate(rows):
        y = 6 + i * lane
        out.append(text(10, y + 15, r["stage"], weight="bold"))
        out.append(f"<rect x='110' y='{y + 3}' width='{max(1, 330 * r['lost'] / top):.1f}' height='16' rx='3' "
                   f"fill='{PALETTE['bad']}' opacity='0.75'/>")
        out.append(text(w - 4, y + 15, f"{count(r['lost'])} ({pct(r['share'])})", "end", size=11, color=PALETTE["muted"]))
    return svg(w, 10 + len(rows) * lane, "".join(out), "losses by stage")


def _unknown_stage_note(f: dict) -> str:
    """Closed deals that no export showed past their creation (a current-state export)."""
    unknown = f.get("closed_at_unknown_stage") or {}
    if not unknown.get("lost") and not unknown.get("won"):
        return ""
    return (f"{count(unknown['lost'])} lost and {count(unknown['won'])} won deals closed at a stage nobody saw "
            f"(the export holds current stages only, no history): they count in no stage, and no stage's conversion "
            f"or time in stage is known without the history. Ingest later exports with --append to build it.")


def _coverage(c: dict, money: _Fmt, amounts: bool) -> str:
    in_period = f"{money(c['pipeline_in_period'])} ({count(c['deals_in_period'])} deals)" if amounts \
        else f"{count(c['deals_in_period'])} deals (no amounts known)"
    rows = [["period", f"{c['period_start'][:10]} to {c['period_end'][:10]}"], ["target", money(c["target"])],
            ["closed won so far", money(c["closed_won"])], ["remaining", money(c["remaining"])],
            ["pipeline expected in period", in_period], ["coverage", ratio(c["coverage"])]]
    return table(["", "value"], rows) + f"<p class='note'>Coverage = {escape(c['definition'])}.</p>"


def _stalled_table(s: dict, money: _Fmt) -> str:
    extra = [k for k in ("owner",) if s["deals"] and k in s["deals"][0]]
    headers = ["deal", "stage", *extra, "amount", "days in stage", "stage P90 (days)", "days since activity", "why"]
    rows = [[str(d["deal_id"]), str(d["stage"]), *[str(d.get(k) or "–") for k in extra], money(d["amount"]),
             num(d["days_in_stage"]), num(d["stage_p90_days"]), num(d["days_since_activity"]), "; ".join(d["reasons"])]
            for d in s["deals"][:STALLED_SHOWN]]
    return table(headers, rows, text_columns=(0, 1, len(headers) - 1))


def _stalled_note(s: dict) -> str:
    shown = min(STALLED_SHOWN, len(s["deals"]))
    quiet = (f"or without activity for more than {s['stall_days_without_activity']} days"
             if s["activity_checked"] else "(no activities table: inactivity not checked)")
    return (f"Open deals longer in their stage than the stage's historical P90 {quiet}. "
            f"{count(s['count'])} of {count(s['open_deals'])} open deals; largest {shown} shown.")


def _stale_table(s: dict, money: _Fmt, amounts: bool) -> str:
    if not amounts:  # every amount unknown: a column of dashes says nothing
        return table(["deal", "why stale"], [[str(d["deal_id"]), d["reason"]] for d in s["deals"][:STALLED_SHOWN]],
                     text_columns=(0, 1))
    rows = [[str(d["deal_id"]), money(d["amount"]), d["reason"]] for d in s["deals"][:STALLED_SHOWN]]
    return table(["deal", "amount", "why stale"], rows, text_columns=(0, 2))


def _stale_note(s: dict, money: _Fmt, amounts: bool) -> str:
    share = f"{money(s['amount'])} of {money(s['open_amount'])} open ({pct(s['share_of_open_amount'])}); " \
        if amounts else ""
    give_up = s["rule"].get("give_up_age_days")
    age = f"open longer than {num(give_up)} days, the age after which almost no open deal went on to win, or " \
        if give_up is not None else ""
    return (f"Stale: {age}longer in its stage than any won deal stayed there. {count(s['count'])} of "
            f"{count(s['open_deals'])} open deals; {share}the open pipeline, coverage and velocity above include "
            f"them. Largest {min(STALLED_SHOWN, len(s['deals']))} shown.")


def _group_table(groups: list[dict], money: _Fmt) -> str:
    headers = ["group", "open", "won", "lost", "win rate", "avg won", "median cycle (days)", "velocity / day",
               "open pipeline", "stalled", "stale"]
    rows = [[str(g["group"]), count(g["funnel"]["open"]), count(g["funnel"]["won"]), count(g["funnel"]["lost"]),
             pct(g["funnel"]["win_rate"]), money(g["deal_size"]["average_won_amount"]),
             num(g["sales_cycle"]["median_days"]), money(g["velocity"]["per_day"]), money(g["changes"]["end_amount"]),
             count(g["stalled"]["count"]), count(g["stale"]["count"])] for g in groups]
    return table(headers, rows)


def _static_body(m: dict) -> str:
    t = m["total"]
    parts = [kpis([("Deals", count(t["deals"])), ("Win rate", pct(t["win_rate"]))]),
             f"<p class='note'>{defined(m, 'win_rate')}</p>",
             section("Time metrics", f"<p>{escape(m['time_metrics'])}.</p>", cls="callout")]
    for attr, rows in t["attribute_win_rates"].items():
        parts.append(section(f"Win rate by {words(attr)}", _rate_svg(rows[:20]),
                             f"{len(rows)} values" + (", first 20 shown" if len(rows) > 20 else "") + ". "
                             + defined(m, "attribute_win_rates.win_rate")))
    return "".join(parts)


def _rate_svg(rows: list[dict]) -> str:
    w, lane = 620, 24
    out = []
    for i, r in enumerate(rows):
        y = 4 + i * lane
        out.append(text(8, y + 14, r["value"][:28], size=11))
        rate = r["win_rate"] or 0
        out.append(f"<rect x='220' y='{y + 3}' width='{max(1, 300 * rate):.1f}' height='14' rx='3' fill='{PALETTE['bar']}'/>")
        out.append(text(w - 4, y + 14, f"{pct(r['win_rate'])} of {count(r['won'] + r['lost'])}", "end", size=11,
                        color=PALETTE["muted"]))
    return svg(w, 8 + len(rows) * lane, "".join(out), "win rate by value")
