"""Forecast and backtest outputs: CSV / JSON / self-contained HTML, MLflow logging, and
the two plain functions the CLI wraps (`forecast_command`, `backtest_command`).

The HTML page embeds its fan chart as a base64 PNG (no network, no external files).
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import LeadscoreError
from training.forecast import Forecast, ForecastConfig, forecast
from training.forecast_risk import read_targets

FORMATS = {".csv", ".json", ".html"}


# ---- plain data ---------------------------------------------------------------------------

def _clean(x):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, timestamps -> ISO strings."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(x).isoformat()
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def forecast_dict(fc: Forecast) -> dict:
    """Everything in the forecast as plain JSON-ready data."""
    out = {"as_of": fc.as_of, "freq": fc.freq, "value_unit": fc.value_unit, "group_by": fc.group_by,
           "notes": fc.notes, "periods": fc.periods.to_dict("records"),
           "forecast": fc.table.to_dict("records"),
           "parts": "open_pipeline = deals open at the as-of date; new_deals = deals not created yet that are "
                    "created and won inside the period; expected = their sum (analytic expectation); "
                    "p10/p50/p90 = Monte Carlo quantiles of the total",
           "ranges": {"method": "Monte Carlo over deal outcomes, close timing (log-normal time to a won close) "
                                "and Poisson new-win counts, plus one common shock per simulation",
                      **{k: v for k, v in fc.shock.items() if k != "history"},
                      "history": fc.shock.get("history")},
           "new_deal_model": fc.new_deal_model,
           "risk": fc.risk.to_dict("records"),
           "history": None if fc.history is None else fc.history.to_dict("records")}
    if fc.targets is not None:
        out["targets"] = fc.targets.to_dict("records")
        out["target_definitions"] = fc.targets.attrs.get("definitions")
    return _clean(out)


def write_forecast(fc: Forecast, out) -> Path:
    """Write by suffix: .csv (table; risk list beside it as <name>.risk.csv), .json, .html."""
    out = Path(out)
    if out.suffix not in FORMATS:
        raise LeadscoreError(f"--out must end in one of {sorted(FORMATS)}, not '{out.suffix or out.name}'")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        table = fc.table
        if fc.targets is not None:
            table = table.merge(fc.targets, on=["period", "group"], how="left")
        table.to_csv(out, index=False)
        fc.risk.to_csv(out.with_suffix(".risk.csv"), index=False)
    elif out.suffix == ".json":
        out.write_text(json.dumps(forecast_dict(fc), indent=1))
    else:
        out.write_text(forecast_html(fc))
    return out


# ---- chart and HTML -------------------------------------------------------------------------

def fan_figure(fc: Forecast):
    """Actuals of past periods, then the P10-P90 band and P50 of the forecast periods."""
    from training.plots import forecast_fan

    hist = fc.history if fc.history is not None else pd.DataFrame(columns=["period", "actual", "so_far"])
    past = hist.loc[~hist["so_far"]]
    totals = fc.totals()
    periods = list(past["period"]) + list(totals["period"])
    freq = "M" if fc.freq == "month" else "Q"
    nan = [np.nan] * len(past)
    fig = forecast_fan(pd.PeriodIndex(periods, freq=freq), nan + list(totals["p10"]), nan + list(totals["p50"]),
                       nan + list(totals["p90"]), actuals=list(past["actual"]) + [np.nan] * len(totals),
                       title=f"Bookings forecast as of {fc.as_of.date()}",
                       ylabel="won deals" if fc.value_unit == "won deals" else "bookings")
    return fig


def png_base64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _table_html(frame: pd.DataFrame, max_rows: int = 500) -> str:
    if frame is None or frame.empty:
        return "<p>none</p>"
    shown = frame.head(max_rows)
    fmt = {c: (lambda v: f"{v:,.2f}" if isinstance(v, float) and abs(v) < 1 else f"{v:,.0f}")
           for c in shown.columns if pd.api.types.is_float_dtype(shown[c])}
    return shown.to_html(index=False, escape=True, formatters=fmt, na_rep="")


def forecast_html(fc: Forecast) -> str:
    chart = png_base64(fan_figure(fc))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in fc.notes)
    cols = ["period", "start", "end", "partial", "group", "expected", "open_pipeline", "new_deals", "p10", "p50", "p90"]
    targets = ""
    if fc.targets is not None:
        defs = fc.targets.attrs.get("definitions", {})
        targets = (f"<h2>Targets and coverage</h2><p>{html.escape(str(defs.get('pipeline_coverage', '')))}</p>"
                   f"<p>{html.escape(str(defs.get('leads_needed', '')))}</p>{_table_html(fc.targets)}")
    shock = fc.shock
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Revenue forecast {fc.as_of.date()}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#f3f3f3}}</style></head><body>
<h1>Revenue forecast as of {fc.as_of.date()}</h1>
<p>Value: {html.escape(fc.value_unit)}. Open pipeline = deals open at the as-of date; new deals = deals not created yet
that will be created and won inside the period. P10/P50/P90 from {html.escape(str(shock.get('method')))} Monte Carlo
(common shock {shock.get('relative_sd', 0):.3f}, bias factors open {shock.get('open_factor', 1):.3f},
new {shock.get('new_factor', 1):.3f}).</p><ul>{notes}</ul>
<img alt="fan chart" src="data:image/png;base64,{chart}">
<h2>Forecast</h2>{_table_html(fc.table[cols])}{targets}
<h2>Deals at risk in {html.escape(str(fc.periods['period'].iloc[0]))}</h2>{_table_html(fc.risk)}
</body></html>"""


# ---- MLflow ---------------------------------------------------------------------------------

EXPERIMENT = "leadscore-forecast"


def log_forecast(fc: Forecast, params: dict) -> str:
    import mlflow

    from training.tracking import start_run

    with start_run(EXPERIMENT, run_name=f"forecast {fc.as_of.date()}", tags={"leadscore.kind": "forecast"}) as run:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        for _, r in fc.totals().iterrows():
            for col in ("expected", "open_pipeline", "new_deals", "p10", "p50", "p90"):
                mlflow.log_metric(f"{col}_{r['period'].replace('-', '_')}", float(r[col]))
        mlflow.log_figure(fan_figure(fc), "plots/forecast_fan.png")
        mlflow.log_dict(forecast_dict(fc), "forecast.json")
        return run.info.run_id


def backtest_figure(result: dict):
    from training.plots import forecast_fan

    rows = pd.DataFrame(result["rows"])
    freq = "M" if result["freq"] == "month" else "Q"
    periods = pd.PeriodIndex(pd.to_datetime(rows["origin"]), freq=freq)
    return forecast_fan(periods, rows["model_p10"], rows["model_p50"], rows["model_p90"], actuals=rows["actual"],
                        title="Backtest: forecast at each origin vs actual", ylabel=result.get("value_unit", "bookings"))


def log_backtest(result: dict, params: dict) -> str:
    import mlflow

    from training.tracking import start_run

    with start_run(EXPERIMENT, run_name="backtest", tags={"leadscore.kind": "backtest"}) as run:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        summary = result["summary"]
        blocks = {"model": summary["model"], **{f"baseline_{k}": v for k, v in summary["baselines"].items()}}
        if "oracle" in summary:
            blocks["oracle"] = summary["oracle"]
        for name, block in blocks.items():
            for key in ("wape", "bias", "coverage_p10_p90", "pinball"):
                if block.get(key) is not None:
                    mlflow.log_metric(f"{name}_{key}", float(block[key]))
        mlflow.log_figure(backtest_figure(result), "plots/backtest.png")
        mlflow.log_dict(result, "backtest.json")
        return run.info.run_id


# ---- the CLI's functions ----------------------------------------------------------------------

def forecast_command(data_dir, as_of, periods: int, freq: str, group_by: str | None, targets, out,
                     model_name: str = "leadscore", n_sims: int = 2000, seed: int = 0,
                     log_to_mlflow: bool = False) -> dict:
    """`leadscore forecast`: the champion forecasts from the --data folder; writes --out
    (.csv/.json/.html) and returns the JSON summary (plus run_id when logged)."""
    from features.dataset import read_dataset
    from training.registry import load_predictor

    out = Path(out)
    if out.suffix not in FORMATS:
        raise LeadscoreError(f"--out must end in one of {sorted(FORMATS)}, not '{out.suffix or out.name}'")
    data = read_dataset(data_dir)
    predictor, version = load_predictor(model_name)
    as_of = data.data_end if as_of is None else as_of
    target_frame = read_targets(targets) if targets else None
    fc = forecast(predictor, data, as_of, periods, freq, group_by=group_by, targets=target_frame,
                  config=ForecastConfig(n_sims=n_sims, seed=seed))
    fc.notes.append(f"model {model_name} v{version}")
    write_forecast(fc, out)
    result = forecast_dict(fc)
    result["out"] = str(out)
    if log_to_mlflow:
        result["run_id"] = log_forecast(fc, {"as_of": fc.as_of, "periods": periods, "freq": freq, "group_by": group_by,
                                             "model": f"{model_name}/{version}", "n_sims": n_sims, "seed": seed,
                                             "data_dir": data_dir})
    return result


def backtest_command(data_dir, freq: str, origins: int, out, n_sims: int = 1000, seed: int = 0,
                     oracle_sims: int = 300, log_to_mlflow: bool = False, step=lambda _s: None) -> dict:
    """`leadscore backtest`: trains one model on the data known at the first origin, replays
    `origins` period starts, writes the JSON (.json) and returns it. Uses the generator's
    truth (DIR/truth/) for the oracle when the folder has one."""
    from features.dataset import read_dataset
    from training.backtest import backtest

    out = Path(out)
    if out.suffix != ".json":
        raise LeadscoreError(f"--out must be a .json file, not '{out.name}'")
    data = read_dataset(data_dir)
    truth = None
    if (Path(data_dir) / "truth" / "truth.parquet").exists():
        from features.synthetic import load_truth

        truth = load_truth(data_dir)
    result = _clean(backtest(data, freq, origins, truth=truth, config=ForecastConfig(n_sims=n_sims, seed=seed),
                             oracle_sims=oracle_sims, step=step))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if log_to_mlflow:
        result["run_id"] = log_backtest(result, {"freq": freq, "origins": origins, "n_sims": n_sims, "seed": seed,
                                                 "data_dir": data_dir})
    return result
