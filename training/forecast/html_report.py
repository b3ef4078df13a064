"""`forecast_html(briefing)`: the forecast report for finance as one self-contained page,
a pure function of `briefing.briefing(...)`'s dict, in the pipeline report's visual
language (`features.htmlkit`). Writing the file is the CLI's job.

Sections: headline (landing and P(hit target) per period), fan chart, landing table,
targets, what changed since the previous forecast, the math of the landing, deals at
risk (top 25 by value at risk), track record, notes and method.
"""
from __future__ import annotations

from functools import partial
from html import escape
from typing import Callable

from features.htmlkit import change_words, count, kpis, num, page, pct, ratio, section, signed, table, words
from features.htmlkit import money as kit_money
from training.forecast.fan_chart import fan_svg

ALL = "(all)"
Fmt = Callable[[object], str]


def value_formatter(doc: dict, currency: str | None, compact: bool = True) -> Fmt:
    """Money in `currency` when the forecast values amounts, else a number of won deals."""
    if doc.get("value_unit") == "won deals":
        return lambda x: num(x, 1)
    return partial(kit_money, currency=currency, compact=compact)


def forecast_html(b: dict) -> str:
    """The page for a `briefing` dict."""
    doc, cur = b["forecast"], b.get("currency")
    fmt = value_formatter(doc, cur)
    unit = "won deals (no amounts known)" if doc["value_unit"] == "won deals" else \
        (f"amounts in {cur.upper()}" if cur else "amounts")
    grouped = f" · by {words(doc['group_by'])}" if doc.get("group_by") else ""
    title = f"Revenue forecast as of {doc['as_of'][:10]}"
    sub = f"{doc['freq']}ly periods · {unit}{grouped} · landing = closed so far + forecast of the rest"
    body = [_headline(doc, fmt), _stale(doc, fmt),
            section("Landing per period", fan_svg(doc, fmt),
                    "Past periods: whole-period bookings. Forecast periods: where the period lands, closed-won so far "
                    "+ the forecast of the rest (a period in progress is its whole landing, not the rest only)."),
            section("Forecast", _forecast_table(doc, fmt), escape(words(doc.get("parts", "")))),
            _targets(doc, fmt), _changes(b.get("changes"), fmt, b.get("store_note"),
                                              valued=doc["value_unit"] == "amount"), _math(b["math"], fmt),
            _risk(b, fmt), _track_record(b.get("track_record"), fmt, b.get("store_note")), _notes(doc)]
    return page(title, sub, "".join(body))


def _headline(doc: dict, fmt: Fmt) -> str:
    targets = {t["period"]: t for t in (doc.get("targets") or []) if t["group"] == ALL}
    cards = []
    for r in (r for r in doc["forecast"] if r["group"] == ALL):
        state = " (in progress)" if r["partial"] else ""
        cards.append((f"{r['period']} landing{state}", fmt(r["landing_p50"]),
                      f"P10–P90 {fmt(r['landing_p10'])} – {fmt(r['landing_p90'])}; closed so far "
                      f"{fmt(r['closed_so_far'])} + rest {fmt(r['p50'])}"))
        if r["period"] in targets:
            t = targets[r["period"]]
            cards.append((f"P(hit {r['period']} target)", pct(t["p_hit_target"]),
                          f"target {fmt(t['target'])}; coverage {ratio(t['pipeline_coverage'])}"))
    return kpis(cards)


def _stale(doc: dict, fmt: Fmt) -> str:
    """The forecast's stale-pipeline line (`valuation.stale_pipeline`): how much of the open
    pipeline is stale and what the forecast expects from it (inside the totals)."""
    s = doc.get("stale_pipeline") or {}
    if not s.get("stale_open_count"):
        return ""
    share = s["stale_open_value"] / s["open_value"] if s.get("open_value") else None
    periods = [r["period"] for r in doc["forecast"] if r["group"] == ALL]
    by_period = "; ".join(f"{p} {fmt(v)}" for p, v in zip(periods, s["stale_expected_by_period"]))
    body = (f"<p><b>{count(s['stale_open_count'])} of {count(s['open_count'])}</b> open deals are stale, worth "
            f"<b>{fmt(s['stale_open_value'])}</b> of {fmt(s['open_value'])} ({pct(share)}). The forecast expects "
            f"{fmt(s['stale_expected_bookings'])} from them ({escape(by_period)}), included in the figures "
            f"below.</p>")
    return section("Stale pipeline", body, escape(s.get("definition", "")) + ".", cls="callout")


def _forecast_table(doc: dict, fmt: Fmt) -> str:
    grouped = bool(doc.get("group_by"))
    headers = ["Period", *(["Group"] if grouped else []), "Closed so far", "Open pipeline (expected)",
               "New deals (expected)", "Rest P50", "Landing P10", "Landing P50", "Landing P90"]
    rows = [[r["period"] + (" (in progress)" if r["partial"] else ""), *([r["group"]] if grouped else []),
             *[fmt(r[k]) for k in ("closed_so_far", "open_pipeline", "new_deals", "p50", "landing_p10",
                                   "landing_p50", "landing_p90")]] for r in doc["forecast"]]
    return table(headers, rows, text_columns=(0, 1) if grouped else (0,))


def _targets(doc: dict, fmt: Fmt) -> str:
    if not doc.get("targets"):
        return ""
    headers = ["Period", "Group", "Target", "Closed so far", "Landing P50", "P(hit target)", "Gap to target",
               "Open pipeline due", "Pipeline coverage", "Leads needed"]
    rows = [[t["period"], t["group"], fmt(t["target"]), fmt(t["closed_won_so_far"]), fmt(t["landing_p50"]),
             pct(t["p_hit_target"]), signed(t["gap_to_target"], fmt), fmt(t["open_pipeline_due"]),
             ratio(t["pipeline_coverage"]), count(t["leads_needed"])] for t in doc["targets"]]
    defs = doc.get("target_definitions") or {}
    said = "".join(f"<li>{escape(words(v))}</li>" for k, v in defs.items() if isinstance(v, str))
    return section("Targets", table(headers, rows, text_columns=(0, 1)), f"<ul>{said}</ul>")


def _changes(c: dict | None, fmt: Fmt, store_note: str | None, valued: bool = True) -> str:
    """The previous forecast against this one, and the deal movements between them (by
    count, and by value unless the data has no amounts)."""
    title = "What changed since the previous forecast"
    if c is None:
        return section(title, f"<p>{escape(store_note or 'The track-record store was not given.')}</p>")
    if c.get("previous_as_of") is None:
        return section(title, f"<p>Nothing to compare with: {escape(c['reason'])}.</p>")
    headers = ["Group", "Landing P50 then", "Landing P50 now", "Change", "P10–P90 then", "P10–P90 now",
               "Closed so far then", "Closed so far now"]
    rows = [[g["group"], fmt(g["previous_landing_p50"]), fmt(g["now_landing_p50"]),
             signed(g["now_landing_p50"] - g["previous_landing_p50"], fmt) + " ("
             + change_words(g["now_landing_p50"], g["previous_landing_p50"], higher_is_better=True) + ")",
             f"{fmt(g['previous_landing_p10'])} – {fmt(g['previous_landing_p90'])}",
             f"{fmt(g['now_landing_p10'])} – {fmt(g['now_landing_p90'])}",
             fmt(g["previous_closed_so_far"]), fmt(g["now_closed_so_far"])] for g in c["groups"]]
    d = c["deals"]
    def money(x) -> str:
        return fmt(x) if valued else "–"

    def change(x) -> str:
        return signed(x, fmt) if valued else "–"

    moves = [["New deals", count(d["new"]["count"]), money(d["new"]["value"])],
             ["Won", count(d["won"]["count"]), money(d["won"]["value"])],
             ["Lost", count(d["lost"]["count"]), money(d["lost"]["value"])],
             [f"Pushed out of {c['period']}", count(d["pushed"]["count"]), money(d["pushed"]["value"])],
             [f"Pulled into {c['period']}", count(d["pulled_in"]["count"]), money(d["pulled_in"]["value"])],
             ["Amount raised", count(d["amount_up"]["count"]), change(d["amount_up"]["value"])],
             ["Amount lowered", count(d["amount_down"]["count"]), change(-d["amount_down"]["value"])]]
    since = c["previous_as_of"][:10]
    note = (f"Previous forecast of {escape(c['period'])}: as of {escape(since)} (model v{escape(str(c['model_version']))}). "
            f"Deal movements between {escape(since)} and this forecast's as-of date, over all deals, from the deal "
            f"history at both dates; pushed = expected close inside the period then, after it now."
            + (f" {d['without_amount']:,} moved deals had no amount (value 0)." if d.get("without_amount") else ""))
    return section(title, table(headers, rows) + _h3("Deal movements")
                   + table(["Movement", "Deals", "Value"], moves), note)


def _math(rows: list[dict], fmt: Fmt) -> str:
    headers = ["", *[r["period"] + (" (in progress)" if r["partial"] else "") for r in rows]]
    lines = [
        ("Open pipeline value", lambda r: f"{fmt(r['open_pipeline_value'])} ({count(r['open_deals'])} deals)"),
        ("× P(won with a close in the period)", lambda r: pct(r["p_won_in_period"], 2)),
        ("= expected from the open pipeline", lambda r: fmt(r["open_pipeline"])),
        ("+ new deals (created and won in the period)", lambda r: fmt(r["new_deals"])),
        ("+ closed won so far", lambda r: fmt(r["closed_so_far"])),
        ("= expected landing", lambda r: fmt(r["landing_expected"])),
        ("Landing P10 / P50 / P90 (simulation)",
         lambda r: f"{fmt(r['landing_p10'])} / {fmt(r['landing_p50'])} / {fmt(r['landing_p90'])}")]
    body = [[label, *[f(r) for r in rows]] for label, f in lines]
    first = rows[0]
    factor = first.get("open_factor")
    note = ("P(won with a close in the period) is the value-weighted average of the model's per-deal probability of "
            "winning with a close inside the period" + (f", times the bias factor {ratio(factor, '')} learnt from how "
                                                       f"past forecasts of the open pipeline turned out" if factor else "")
            + ". The expected landing is a mean; P10/P50/P90 are quantiles of the simulated landings (outcomes, close "
              "timing and new-deal counts drawn at random), so P50 differs from the mean when the range is skewed.")
    return section("See the math", table(headers, body), note)


def _risk(b: dict, fmt: Fmt) -> str:
    rows = b["risk_ranked"]
    total = b["risk_total"]
    headers = ["Deal", "Stage", "Amount", "P(won)", "Value at risk", "Why"]
    body = [[str(r["deal_id"]), str(r["stage"]), fmt(r["amount"]), pct(r["close_probability"]),
             fmt(r["value_at_risk"]), r["reasons"]] for r in rows]
    period = b["forecast"]["periods"][0]["period"]
    note = (f"{count(total['count'])} of {count(total['open_deals'])} open deals are at risk in {escape(period)}, "
            f"{fmt(total['value_at_risk'])} value at risk; the {len(rows)} largest shown, every one in the CSV "
            f"written beside this page. {escape(total['definition'])}.")
    return section(f"Deals at risk in {period}", table(headers, body, text_columns=(0, 1, 5)), note)


def accuracy_html(report: dict, currency: str | None = None) -> str:
    """The track record alone (`leadscore forecast-accuracy --out x.html`): every compared period."""
    grouping = words(report["group_column"]) if report.get("group_column") else "company total"
    title = f"Forecast track record ({report['freq']}ly, {grouping})"
    fmt = partial(kit_money, currency=currency)
    return page(title, "the first forecast made for each period and horizon against what was booked",
                _track_record(report, fmt, None, periods_shown=None))


def _track_record(tr: dict | None, fmt: Fmt, store_note: str | None, periods_shown: int | None = 12) -> str:
    title = "Track record"
    if tr is None:
        return section(title, f"<p>{escape(store_note or 'The track-record store was not given.')}</p>")
    if not tr["by_horizon"]:
        return section(title, "<p>No stored forecast covers a period that has closed yet: the record starts with "
                              "the forecasts stored from now on.</p>")
    headers = ["Group", "Periods ahead", "Periods", "Booked", "WAPE", "Bias", "Within ±5%", "Within ±15%",
               "P10–P90 hit rate"]
    rows = [[r["group_value"], count(r["horizon"]), count(r["periods"]), fmt(r["booked"]), pct(r["wape"], 1),
             signed(r["bias"], partial(pct, digits=1)),
             pct(r["within_5pct"]), pct(r["within_15pct"]), pct(r["p10_p90_hit_rate"])] for r in tr["by_horizon"]]
    periods = [[p["period_start"][:10], p["group_value"], count(p["horizon"]), p["as_of"][:10], fmt(p["landing_p50"]),
                fmt(p["booked"]), signed(p["error"], fmt), "yes" if p["in_p10_p90"] else "no"]
               for p in tr["periods"][-(periods_shown or len(tr["periods"])):]]
    note = ("The first forecast stored for each closed period and horizon against what was booked. WAPE = sum of "
            "|landing P50 − booked| / sum booked; bias > 0 = over-forecast; periods ahead 0 = made inside the period.")
    shown = "Latest periods" if periods_shown and len(tr["periods"]) > periods_shown else "Periods"
    return section(title, _h3("By horizon") + table(headers, rows) + _h3(shown)
                   + table(["Period start", "Group", "Periods ahead", "Forecast made", "Landing P50", "Booked",
                            "Error", "In P10–P90"], periods, text_columns=(0, 1)), note)


def _notes(doc: dict) -> str:
    r = doc.get("ranges") or {}
    method = (f"Ranges: {r.get('method', '')}; common shock {ratio(r.get('relative_sd'), '')} (relative standard "
              f"deviation), bias factors open pipeline {ratio(r.get('open_factor'), '')}, new deals "
              f"{ratio(r.get('new_factor'), '')}, from {count(r.get('periods_used'))} past periods"
              + (f" out of sample for the model (from {r['out_of_sample_from'][:10]}; "
                 f"{count(r.get('in_sample_periods_left_out'))} it was trained on left out)"
                 if r.get("out_of_sample_from") else "") + ".")
    items = "".join(f"<li>{escape(n)}</li>" for n in doc.get("notes", []))
    return section("Notes and method", f"<ul>{items}</ul><p class='note'>{escape(method)}</p>")


def _h3(title: str) -> str:
    return f"<h3 style='font-size:13px;margin:12px 0 4px'>{escape(title)}</h3>"
