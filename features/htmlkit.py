"""The visual primitives every HTML page of the project shares (the pipeline report and
the forecast report): CSS, palette, number formatting and small SVG helpers.

Pages are self-contained: inline CSS and SVG, no script, font or image from elsewhere.
The layout works from 800 px up: card and chart grids collapse to one column below
900 px, wide tables scroll inside their section instead of widening the page.

Number rules, one place: counts and money with thousands separators ("1,467",
"$1.23M", "€12,500"), ratios and coverage with two decimals ("1.74×"), shares as
percentages, changes with their sign and a word ("−89 %, worse").
"""
from __future__ import annotations

import math
import re
from html import escape

PALETTE = {"ink": "#1f2937", "muted": "#6b7280", "bar": "#2563eb", "bar2": "#93c5fd", "good": "#059669",
           "bad": "#dc2626", "warn": "#d97706", "grid": "#e5e7eb", "band": "#bfdbfe", "target": "#7c3aed"}
DASH = "–"
AXIS_STEPS = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)  # round axis tops: a quarter of each is round too
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹"}

CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;background:#f3f4f6;color:#1f2937}
header{background:#111827;color:#f9fafb;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#9ca3af;font-size:13px}main{padding:20px 32px;max-width:1280px}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(132px,1fr));gap:12px;margin-bottom:16px}
.kpi{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px #0001;min-width:0}
.kpi b{display:block;font-size:22px;margin-top:4px}.kpi span{font-size:12px;color:#6b7280;text-transform:uppercase}
.kpi small{display:block;font-size:12px;color:#6b7280;margin-top:2px}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:16px}
section{background:#fff;border-radius:8px;padding:14px 18px;box-shadow:0 1px 2px #0001;margin-bottom:16px;min-width:0}
section h2{font-size:15px;margin:0 0 8px}section ul{font-size:13px;margin:6px 0;padding-left:20px}.note{font-size:12px;color:#6b7280;margin:6px 0 0}
.callout{border-left:4px solid #d97706;background:#fffbeb}.callout.ok{border-color:#059669;background:#ecfdf5}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%;font-size:12px}th,td{padding:4px 6px;text-align:right;border-bottom:1px solid #e5e7eb}
th:first-child,td:first-child{text-align:left}th{color:#6b7280;font-weight:600}td.text,th.text{text-align:left}
td.heat{text-align:center;color:#111827}td.na{color:#9ca3af;background:#f9fafb;text-align:center}
tr.sum td{font-weight:600;border-top:2px solid #1f2937}
svg{display:block;max-width:100%;height:auto}svg text{font-family:inherit}
@media (max-width:900px){.grid{grid-template-columns:minmax(0,1fr)}main{padding:16px}header{padding:14px 16px}}
"""


# ---- numbers in words --------------------------------------------------------------------

def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def currency_affix(currency: str | None) -> tuple[str, str]:
    """(prefix, suffix) for amounts in `currency`: a symbol before ("$", "€") for the
    common codes, the code after otherwise ("CHF"), nothing without a currency."""
    code = (currency or "").strip().upper()
    if not code:
        return "", ""
    return (SYMBOLS[code], "") if code in SYMBOLS else ("", f" {code}")


def money(x, currency: str | None = None, compact: bool = True) -> str:
    """An amount: compact ("$1.23M", "€12.5k", "980") or whole with thousands separators
    ("$1,234,567"); a minus sign in front of the currency; "–" when unknown."""
    if _missing(x):
        return DASH
    prefix, suffix = currency_affix(currency)
    sign, size = ("−" if x < 0 else ""), abs(float(x))
    body = f"{size:,.0f}"
    if compact:
        for div, unit, digits in ((1e9, "B", 2), (1e6, "M", 2), (1e3, "k", 1)):
            if round(size, 0) >= div:
                body = f"{size / div:,.{digits}f}{unit}"
                break
    return f"{sign}{prefix}{body}{suffix}"


def count(x) -> str:
    """A count with thousands separators ("1,467"); "–" when unknown."""
    return DASH if _missing(x) else f"{int(round(float(x))):,}"


def num(x, digits: int = 0) -> str:
    """A plain number with thousands separators and `digits` decimals."""
    return DASH if _missing(x) else f"{float(x):,.{digits}f}"


def ratio(x, unit: str = "×") -> str:
    """A ratio or coverage with two decimals ("1.74×")."""
    return DASH if _missing(x) else f"{float(x):,.2f}{unit}"


def pct(x, digits: int = 0) -> str:
    """A share as a percentage ("18%"); "–" when unknown."""
    return DASH if _missing(x) else f"{100 * float(x):.{digits}f}%"


def relative_change(recent, prior) -> float | None:
    """(recent - prior) / prior, None when it is not defined."""
    if _missing(recent) or _missing(prior) or prior == 0:
        return None
    return (float(recent) - float(prior)) / float(prior)


def change_words(recent, prior, higher_is_better: bool) -> str:
    """The signed relative change from `prior` to `recent` and what it means:
    "−89%, worse" for a conversion that fell, "+40%, worse" for a dwell that grew."""
    change = relative_change(recent, prior)
    if change is None:
        return "no comparable history"
    if round(100 * change) == 0:
        return "unchanged"
    better = (change > 0) == higher_is_better
    sign = "+" if change > 0 else "−"
    return f"{sign}{abs(100 * change):.0f}%, {'better' if better else 'worse'}"


def signed(x, formatter=num) -> str:
    """A change with an explicit sign ("+927", "−1.2k")."""
    if _missing(x):
        return DASH
    body = formatter(abs(x))
    return ("+" if x > 0 else "−" if x < 0 else "±") + body


def words(name: str) -> str:
    """A snake_case key as words for a caption or header ("amount_up" -> "amount up",
    "landing_p10/p50/p90" -> "landing P10/P50/P90", "p_hit_target" -> "P(hit target)")."""
    said = re.sub(r"\bp_([a-z]+(?:_[a-z]+)*)", lambda m: f"P({m.group(1)})", str(name))
    said = re.sub(r"\bp(10|50|90)\b", r"P\1", said.replace("_", " "))
    return said.strip()


# ---- page pieces --------------------------------------------------------------------------

def page(title: str, subtitle: str, body: str, css: str = "") -> str:
    """A whole self-contained page: the shared CSS (plus `css`), a header, `body`."""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}{css}</style></head>"
            f"<body><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header><main>{body}</main></body></html>")


def section(title: str, inner: str, note: str = "", cls: str = "") -> str:
    """A titled card; `note` is HTML (escape what comes from data)."""
    note_html = f"<p class='note'>{note}</p>" if note else ""
    return f"<section class='{cls}'><h2>{escape(title)}</h2>{inner}{note_html}</section>"


def kpis(cards: list[tuple[str, str] | tuple[str, str, str]]) -> str:
    """A row of headline cards: (label, value[, small print])."""
    out = []
    for card in cards:
        label, value, small = (*card, "")[:3]
        extra = f"<small>{escape(small)}</small>" if small else ""
        out.append(f"<div class='kpi'><span>{escape(label)}</span><b>{escape(value)}</b>{extra}</div>")
    return "<div class='kpis'>" + "".join(out) + "</div>"


def table(headers: list[str], rows: list[list[str]], text_columns: tuple[int, ...] = (0,),
          sum_row: list[str] | None = None) -> str:
    """A table of already formatted cells (escaped here), in a scroll box so a wide table
    never widens the page; `text_columns` are left-aligned."""
    def cells(row: list[str], tag: str = "td") -> str:
        return "".join(f"<{tag}{' class=text' if i in text_columns and i else ''}>{escape(str(v))}</{tag}>"
                       for i, v in enumerate(row))
    head = "<tr>" + cells(headers, "th") + "</tr>"
    body = "".join(f"<tr>{cells(r)}</tr>" for r in rows)
    total = f"<tr class='sum'>{cells(sum_row)}</tr>" if sum_row else ""
    return f"<div class='scroll'><table>{head}{body}{total}</table></div>"


# ---- SVG ----------------------------------------------------------------------------------

def svg(w: int, h: int, inner: str, label: str = "chart") -> str:
    """An inline SVG scaled to its container's width (never wider than it)."""
    return (f"<svg viewBox='0 0 {w} {h}' width='100%' role='img' aria-label='{escape(label)}' "
            f"xmlns='http://www.w3.org/2000/svg'>{inner}</svg>")


def text(x, y, s, anchor: str = "start", size: int = 12, color: str = PALETTE["ink"], weight: str = "normal",
         halo: bool = False) -> str:
    """A label; `halo` draws a white outline under it so it stays readable over lines."""
    outline = " paint-order='stroke' stroke='#fff' stroke-width='4' stroke-linejoin='round'" if halo else ""
    return (f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' font-size='{size}' fill='{color}' "
            f"font-weight='{weight}'{outline}>{escape(str(s))}</text>")


def nice_ceiling(x: float) -> float:
    """The smallest `AXIS_STEPS` x 10^k at or above `x` (a round axis top); 1 for x <= 0."""
    if _missing(x) or x <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(x))
    return next(step * power for step in AXIS_STEPS if step * power >= x * (1 - 1e-12))


def rect(x, y, w, h, color: str, opacity: float = 1.0, rx: int = 2) -> str:
    return (f"<rect x='{x:.1f}' y='{y:.1f}' width='{max(0.0, w):.1f}' height='{max(0.0, h):.1f}' rx='{rx}' "
            f"fill='{color}' opacity='{opacity:.2f}'/>")


def line(x1, y1, x2, y2, color: str = PALETTE["grid"], width: float = 1, dash: str = "") -> str:
    dashed = f" stroke-dasharray='{dash}'" if dash else ""
    return (f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' stroke='{color}' "
            f"stroke-width='{width}'{dashed}/>")
