"""`render_html(metrics)`: the pipeline metrics as one self-contained HTML page.

Charts are inline SVG drawn here, styles are inline CSS; there is no script, font or
image from anywhere else, so the page renders offline and from an e-mail attachment.
Over 300 lines because each chart is its own small SVG drawer; they share nothing but
the helpers at the top, so splitting them would only scatter one page over files.
"""
from __future__ import annotations

from html import escape

PALETTE = {"ink": "#1f2937", "muted": "#6b7280", "bar": "#2563eb", "bar2": "#93c5fd", "good": "#059669",
           "bad": "#dc2626", "warn": "#d97706", "grid": "#e5e7eb"}
STALLED_SHOWN = 25

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;background:#f3f4f6;color:#1f2937}
header{background:#111827;color:#f9fafb;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#9ca3af;font-size:13px}main{padding:20px 32px;max-width:1280px}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(128px,1fr));gap:12px;margin-bottom:16px}
.kpi{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px #0001}
.kpi b{display:block;font-size:22px;margin-top:4px}.kpi span{font-size:12px;color:#6b7280;text-transform:uppercase}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}
section{background:#fff;border-radius:8px;padding:14px 18px;box-shadow:0 1px 2px #0001;margin-bottom:16px}
section h2{font-size:15px;margin:0 0 8px}.note{font-size:12px;color:#6b7280;margin:6px 0 0}
.callout{border-left:4px solid #d97706;background:#fffbeb}.callout.ok{border-color:#059669;background:#ecfdf5}
table{border-collapse:collapse;width:100%;font-size:12px}th,td{padding:4px 6px;text-align:right;border-bottom:1px solid #e5e7eb}
th:first-child,td:first-child{text-align:left}th{color:#6b7280;font-weight:600}
td.heat{text-align:center;color:#111827}td.na{color:#9ca3af;background:#f9fafb;text-align:center}
svg text{font-family:inherit}
"""


def render_html(metrics: dict) -> str:
    """The whole report page for a `pipeline_metrics` result."""
    title = f"Pipeline report — {metrics.get('dataset', '')}"
    sub = ("static dataset (no dates)" if metrics.get("static") else f"as of {metrics['as_of'][:10]}") + (f" · grouped by {metrics['group_by']}" if metrics.get("group_by") else "")
    body = _static_body(metrics) if metrics.get("static") else _dynamic_body(metrics)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
            f"<body><header><h1>{escape(title)}</h1><p>{escape(sub)}</p></header><main>{body}</main></body></html>")


def defined(m: dict, key: str, label: str = "Win rate") -> str:
    """A caption saying which definition a figure shows (the metrics' `definitions`)."""
    text = (m.get("definitions") or {}).get(key)
    return f"{label}: {escape(text)}" if text else ""


def _dynamic_body(m: dict) -> str:
    t = m["total"]
    parts = [_kpis(t), f"<p class='note'>{defined(m, 'funnel.win_rate')}</p>", _bottleneck(t["bottleneck"]),
             "<div class='grid'>", _section("Funnel", _funnel_svg(t["funnel"]),
                                            "Conversion = moved on or won / (moved on or won + lost), by furthest stage reached; "
                                            "deals still open at their furthest stage are left out. "
                                            + defined(m, "funnel.win_rate")),
             _section("Time in stage (days)", _dwell_svg(t["time_in_stage"]),
                      "Bar to P75, whisker to P90, dot at the median; completed stays only."),
             _section("Sales velocity trend (revenue per day)", _line_svg(t["velocity"]["trend"]),
                      f"Open deals at {escape(t['velocity']['qualified_stage'])} or later × win rate × average won "
                      f"amount / average won cycle, over closes of the trailing {t['velocity']['history_days']} days. "
                      + defined(m, "velocity.win_rate")),
             _section(f"Pipeline changes, last {t['changes']['window_days']} days", _waterfall_svg(t["changes"]),
                      _moves_note(t["changes"])),
             "</div>",
             _section("Cohorts by creation month: share won by age", _cohort_table(t["cohorts"]),
                      "Blank cells: the cohort is not old enough yet at the report date. "
                      + defined(m, "cohorts.win_rate_<N>d", "Share won")),
             "<div class='grid'>", _section("Losses by stage", _loss_svg(t["funnel"]["losses_by_stage"])),
             _section("Coverage", _coverage(t["coverage"])), "</div>",
             _section(f"Stalled deals ({t['stalled']['count']})", _stalled_table(t["stalled"]), _stalled_note(t["stalled"]))]
    if m.get("groups"):
        parts.append(_section(f"By {escape(m['group_by'])}", _group_table(m["groups"])))
    return "".join(parts)


def _section(title: str, inner: str, note: str = "", cls: str = "") -> str:
    note_html = f"<p class='note'>{note}</p>" if note else ""
    return f"<section class='{cls}'><h2>{escape(title)}</h2>{inner}{note_html}</section>"


def money(x) -> str:
    if x is None:
        return "–"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def num(x, fmt: str = ".0f") -> str:
    return "–" if x is None else format(x, fmt)


def _kpis(t: dict) -> str:
    cov = t["coverage"]
    cards = [("Win rate", pct(t["funnel"]["win_rate"])), ("Avg won deal", money(t["deal_size"]["average_won_amount"])),
             ("Median cycle", f"{num(t['sales_cycle']['median_days'])} d"),
             ("Velocity / day", money(t["velocity"]["per_day"])), ("Open pipeline", money(t["changes"]["end_amount"])),
             ("Open deals", str(t["funnel"]["open"])),
             ("Coverage", "–" if cov["coverage"] is None else f"{cov['coverage']:.2f}×"),
             ("Stalled", f"{t['stalled']['count']} · {money(t['stalled']['amount'])}")]
    return "<div class='kpis'>" + "".join(f"<div class='kpi'><span>{k}</span><b>{escape(v)}</b></div>" for k, v in cards) + "</div>"


def _bottleneck(b: dict) -> str:
    if b["stage"] is None:
        return _section("Bottleneck", f"<p>None found: {escape(b['reason'])}.</p>", cls="callout ok")
    if b["metric"] == "conversion":
        what = f"conversion {pct(b['recent'])} in the last {b['recent_window_days']} days vs {pct(b['prior'])} before"
    else:
        what = (f"median time in stage {num(b['recent'], '.1f')} days in the last {b['recent_window_days']} days "
                f"vs {num(b['prior'], '.1f')} before")
    verdict = "worse than its history" if b["worse_than_history"] else "no stage is worse than its history; least improved"
    return _section("Bottleneck", f"<p><b>{escape(b['stage'])}</b>: {escape(what)} "
                                  f"({b['change'] * 100:+.0f}%, {verdict}).</p>",
                    cls="callout" if b["worse_than_history"] else "callout ok")


def _svg(w: int, h: int, inner: str) -> str:
    return (f"<svg viewBox='0 0 {w} {h}' width='100%' role='img' xmlns='http://www.w3.org/2000/svg'>{inner}</svg>")


def _text(x, y, s, anchor="start", size=12, color=PALETTE["ink"], weight="normal") -> str:
    return (f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' font-size='{size}' fill='{color}' "
            f"font-weight='{weight}'>{escape(str(s))}</text>")


def _funnel_svg(f: dict) -> str:
    rows, w, lane = f["stages"], 520, 44
    top = max([r["reached"] for r in rows] + [1])
    out = []
    for i, r in enumerate(rows):
        bw = max(2.0, 330 * r["reached"] / top)
        y = 8 + i * lane
        out.append(f"<rect x='{300 - bw / 2:.1f}' y='{y}' width='{bw:.1f}' height='28' rx='3' fill='{PALETTE['bar']}' "
                   f"opacity='{1 - 0.15 * i:.2f}'/>")
        out.append(_text(10, y + 19, r["stage"], weight="bold"))
        out.append(_text(300, y + 19, f"{r['reached']:,}", "middle", color="#fff", weight="bold"))
        out.append(_text(w - 6, y + 19, f"→ {pct(r['conversion'])}", "end", color=PALETTE["muted"]))
    y = 8 + len(rows) * lane
    out.append(_text(10, y + 14, f"won {f['won']:,} · lost {f['lost']:,} · open {f['open']:,} · win rate {pct(f['win_rate'])}",
                     color=PALETTE["muted"]))
    return _svg(w, y + 22, "".join(out))


def _dwell_svg(rows: list[dict]) -> str:
    w, lane = 520, 36
    top = max([r["p90_days"] or 0 for r in rows] + [1])
    scale = 330 / top
    out = []
    for i, r in enumerate(rows):
        y = 10 + i * lane
        out.append(_text(10, y + 15, r["stage"], weight="bold"))
        if r["median_days"] is None:
            out.append(_text(110, y + 15, "no completed stays", color=PALETTE["muted"]))
            continue
        x0 = 110
        out.append(f"<line x1='{x0}' x2='{x0 + r['p90_days'] * scale:.1f}' y1='{y + 10}' y2='{y + 10}' "
                   f"stroke='{PALETTE['muted']}' stroke-width='2'/>")
        out.append(f"<rect x='{x0}' y='{y + 2}' width='{max(1, r['p75_days'] * scale):.1f}' height='16' rx='3' "
                   f"fill='{PALETTE['bar2']}'/>")
        out.append(f"<circle cx='{x0 + r['median_days'] * scale:.1f}' cy='{y + 10}' r='5' fill='{PALETTE['bar']}'/>")
        out.append(_text(w - 4, y + 15, f"{r['median_days']:.0f} / {r['p75_days']:.0f} / {r['p90_days']:.0f}", "end",
                         size=11, color=PALETTE["muted"]))
    out.append(_text(w - 4, 10 + len(rows) * lane + 4, "median / P75 / P90", "end", size=10, color=PALETTE["muted"]))
    return _svg(w, 20 + len(rows) * lane, "".join(out))


def _line_svg(points: list[dict]) -> str:
    w, h, left, bottom = 520, 210, 60, 180
    values = [p["per_day"] for p in points]
    known = [v for v in values if v is not None]
    if not known:
        return "<p class='note'>Not enough closed deals for a velocity yet.</p>"
    top = max(known) * 1.15 or 1
    step = (w - left - 20) / max(1, len(points) - 1)
    xy = [(left + i * step, bottom - (v / top) * (bottom - 20)) for i, v in enumerate(values) if v is not None]
    out = [f"<line x1='{left}' x2='{w - 10}' y1='{bottom}' y2='{bottom}' stroke='{PALETTE['grid']}'/>"]
    for frac in (0.5, 1.0):
        y = bottom - frac * (bottom - 20)
        out.append(f"<line x1='{left}' x2='{w - 10}' y1='{y:.1f}' y2='{y:.1f}' stroke='{PALETTE['grid']}' stroke-dasharray='3 3'/>")
        out.append(_text(left - 6, y + 4, money(top * frac), "end", size=10, color=PALETTE["muted"]))
    out.append(f"<polyline fill='none' stroke='{PALETTE['bar']}' stroke-width='2.5' "
               f"points='{' '.join(f'{x:.1f},{y:.1f}' for x, y in xy)}'/>")
    for (x, y), v in zip(xy, known):
        out.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='4' fill='{PALETTE['bar']}'/>")
        out.append(_text(x, y - 9, money(v), "middle", size=10))
    for i, p in enumerate(points):
        out.append(_text(left + i * step, bottom + 16, p["as_of"][:7], "middle", size=10, color=PALETTE["muted"]))
    return _svg(w, h, "".join(out))


def _waterfall_svg(c: dict) -> str:
    steps = [("start", c["start_amount"], "total"), ("new", c["new"]["amount"], "up"),
             ("amount up", c["amount_up"]["amount"], "up"), ("amount down", -c["amount_down"]["amount"], "down"),
             ("won", -c["won"]["amount"], "down"), ("lost", -c["lost"]["amount"], "down"),
             ("end", c["end_amount"], "total")]
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
        color = {"total": PALETTE["ink"], "up": PALETTE["good"], "down": PALETTE["bad"]}[kind]
        x = left + i * bw + 8
        out.append(f"<rect x='{x:.1f}' y='{bottom - hi * scale:.1f}' width='{bw - 16:.1f}' "
                   f"height='{max(1, (hi - lo) * scale):.1f}' fill='{color}' rx='2'/>")
        label = money(v) if kind == "total" else ("+" if v >= 0 else "−") + money(abs(v))
        out.append(_text(x + (bw - 16) / 2, bottom - hi * scale - 5, label, "middle", size=10))
        out.append(_text(x + (bw - 16) / 2, bottom + 15, name, "middle", size=10, color=PALETTE["muted"]))
    return _svg(w, bottom + 22, "".join(out))


def _moves_note(c: dict) -> str:
    counts = ", ".join(f"{k} {c[k]['count']}" for k in ("new", "won", "lost", "amount_up", "amount_down"))
    moves = ""
    if c.get("pushed_out") is not None:
        moves = (f" Close dates: pushed out {c['pushed_out']['count']} ({money(c['pushed_out']['amount'])}), "
                 f"pulled in {c['pulled_in']['count']} ({money(c['pulled_in']['amount'])}) — moves, not in the total.")
    return f"Deals: {counts}.{moves} Adds up: residual {c['residual']:.2f}."


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
    body = "".join("<tr><td>" + escape(r["month"]) + f"</td><td>{r['deals']:,}</td>" +
                   "".join(_heat(r[f"win_rate_{a}d"]) for a in ages) +
                   "".join(f"<td>{num(r[f'cycle_{a}d'], '.0f')}</td>" for a in ages) + "</tr>" for r in rows[-18:])
    more = f"<p class='note'>Last 18 of {len(rows)} cohorts.</p>" if len(rows) > 18 else ""
    return f"<table>{head}{body}</table>{more}"


def _loss_svg(rows: list[dict]) -> str:
    w, lane = 520, 30
    top = max([r["lost"] for r in rows] + [1])
    out = []
    for i, r in enumerate(rows):
        y = 6 + i * lane
        out.append(_text(10, y + 15, r["stage"], weight="bold"))
        out.append(f"<rect x='110' y='{y + 3}' width='{max(1, 330 * r['lost'] / top):.1f}' height='16' rx='3' "
                   f"fill='{PALETTE['bad']}' opacity='0.75'/>")
        out.append(_text(w - 4, y + 15, f"{r['lost']:,} ({pct(r['share'])})", "end", size=11, color=PALETTE["muted"]))
    return _svg(w, 10 + len(rows) * lane, "".join(out))


def _coverage(c: dict) -> str:
    rows = [("period", f"{c['period_start'][:10]} to {c['period_end'][:10]}"), ("target", money(c["target"])),
            ("closed won so far", money(c["closed_won"])), ("remaining", money(c["remaining"])),
            ("pipeline expected in period", f"{money(c['pipeline_in_period'])} ({c['deals_in_period']} deals)"),
            ("coverage", "–" if c["coverage"] is None else f"{c['coverage']:.2f}×")]
    table = "<table>" + "".join(f"<tr><td>{k}</td><td>{escape(v)}</td></tr>" for k, v in rows) + "</table>"
    return table + f"<p class='note'>Coverage = {escape(c['definition'])}.</p>"


def _stalled_table(s: dict) -> str:
    extra = [k for k in ("owner",) if s["deals"] and k in s["deals"][0]]
    head = "<tr><th>deal</th><th>stage</th>" + "".join(f"<th>{k}</th>" for k in extra) + \
           "<th>amount</th><th>days in stage</th><th>stage P90</th><th>days since activity</th><th>why</th></tr>"
    body = "".join(
        f"<tr><td>{escape(str(d['deal_id']))}</td><td>{escape(str(d['stage']))}</td>" +
        "".join(f"<td>{escape(str(d.get(k) or '–'))}</td>" for k in extra) +
        f"<td>{money(d['amount'])}</td><td>{num(d['days_in_stage'])}</td><td>{num(d['stage_p90_days'])}</td>"
        f"<td>{num(d['days_since_activity'])}</td><td style='text-align:left'>{escape('; '.join(d['reasons']))}</td></tr>"
        for d in s["deals"][:STALLED_SHOWN])
    return f"<table>{head}{body}</table>"


def _stalled_note(s: dict) -> str:
    shown = min(STALLED_SHOWN, len(s["deals"]))
    quiet = (f"or without activity for more than {s['stall_days_without_activity']} days"
             if s["activity_checked"] else "(no activities table: inactivity not checked)")
    return (f"Open deals longer in their stage than the stage's historical P90 {quiet}. "
            f"{s['count']} of {s['open_deals']} open deals; largest {shown} shown.")


def _group_table(groups: list[dict]) -> str:
    head = ("<tr><th>group</th><th>open</th><th>won</th><th>lost</th><th>win rate</th><th>avg won</th>"
            "<th>median cycle</th><th>velocity/day</th><th>open pipeline</th><th>stalled</th></tr>")
    body = "".join(
        f"<tr><td>{escape(g['group'])}</td><td>{g['funnel']['open']:,}</td><td>{g['funnel']['won']:,}</td>"
        f"<td>{g['funnel']['lost']:,}</td><td>{pct(g['funnel']['win_rate'])}</td>"
        f"<td>{money(g['deal_size']['average_won_amount'])}</td><td>{num(g['sales_cycle']['median_days'])}</td>"
        f"<td>{money(g['velocity']['per_day'])}</td><td>{money(g['changes']['end_amount'])}</td>"
        f"<td>{g['stalled']['count']:,}</td></tr>" for g in groups)
    return f"<table>{head}{body}</table>"


def _static_body(m: dict) -> str:
    t = m["total"]
    parts = [f"<div class='kpis'><div class='kpi'><span>Deals</span><b>{t['deals']:,}</b></div>"
             f"<div class='kpi'><span>Win rate</span><b>{pct(t['win_rate'])}</b></div></div>",
             f"<p class='note'>{defined(m, 'win_rate')}</p>",
             _section("Time metrics", f"<p>{escape(m['time_metrics'])}.</p>", cls="callout")]
    for attr, rows in t["attribute_win_rates"].items():
        parts.append(_section(f"Win rate by {attr}", _rate_svg(rows[:20]),
                              f"{len(rows)} values" + (", first 20 shown" if len(rows) > 20 else "") + ". "
                              + defined(m, "attribute_win_rates.win_rate")))
    return "".join(parts)


def _rate_svg(rows: list[dict]) -> str:
    w, lane = 620, 24
    out = []
    for i, r in enumerate(rows):
        y = 4 + i * lane
        out.append(_text(8, y + 14, r["value"][:28], size=11))
        rate = r["win_rate"] or 0
        out.append(f"<rect x='220' y='{y + 3}' width='{max(1, 300 * rate):.1f}' height='14' rx='3' fill='{PALETTE['bar']}'/>")
        out.append(_text(w - 4, y + 14, f"{pct(r['win_rate'])} of {r['won'] + r['lost']:,}", "end", size=11,
                         color=PALETTE["muted"]))
    return _svg(w, 8 + len(rows) * lane, "".join(out))
