"""Evaluation figures for MLflow runs, reports and the notebook.

Every function returns a `matplotlib.figure.Figure` built without pyplot: no global
figure registry to leak, no GUI backend needed (saving uses Agg), safe in servers and
threads. Log them with `mlflow.log_figure(fig, "plots/name.png")`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from training.evaluate import reliability_table, roc_auc


def _figure(width: float = 6.0, height: float = 4.5) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def reliability_diagram(y, probabilities: Mapping[str, np.ndarray], n_bins: int = 10) -> Figure:
    """Observed win rate against mean predicted probability per bin, one line per model
    (model and baselines on one chart), plus the share of rows per bin underneath."""
    fig = _figure(6, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, p in probabilities.items():
        table = reliability_table(y, p, n_bins).query("count > 0")
        top.plot(table["mean_predicted"], table["observed_rate"], marker="o", label=name)
        bottom.plot((table["lower"] + table["upper"]) / 2, table["count"] / table["count"].sum(),
                    marker=".", label=name)
    top.set(ylabel="observed win rate", xlim=(0, 1), ylim=(0, 1), title="Reliability diagram")
    top.legend(loc="upper left", fontsize="small")
    bottom.set(xlabel="predicted probability", ylabel="share of rows")
    return fig


def roc_curves(y, probabilities: Mapping[str, np.ndarray]) -> Figure:
    """ROC curve per model, AUC in the legend."""
    fig = _figure()
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    y = np.asarray(y)
    for name, p in probabilities.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y, p):.3f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize="small")
    return fig


def _gain_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-np.asarray(p, dtype="float64"), kind="stable")
    captured = np.concatenate(([0.0], np.cumsum(y[order]) / max(y.sum(), 1)))
    contacted = np.arange(y.size + 1) / max(y.size, 1)
    return contacted, captured


def cumulative_gain(y, probabilities: Mapping[str, np.ndarray]) -> Figure:
    """Share of wins captured when working the top x % of deals by score, per model."""
    fig = _figure()
    ax = fig.subplots()
    y = np.asarray(y, dtype="float64")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    best_x, best_y = _gain_curve(y, y)
    ax.plot(best_x, best_y, linestyle=":", color="black", label="perfect")
    for name, p in probabilities.items():
        ax.plot(*_gain_curve(y, p), label=name)
    ax.set(xlabel="share of deals (highest score first)", ylabel="share of wins captured",
           title="Cumulative gain", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize="small")
    return fig


def feature_importance(names: Sequence[str], gains, top: int = 20) -> Figure:
    """Horizontal bars of the `top` features by total split gain."""
    series = pd.Series(np.asarray(gains, dtype="float64"), index=list(names)).nlargest(top)[::-1]
    fig = _figure(6, 0.3 * len(series) + 1.2)
    ax = fig.subplots()
    ax.barh(series.index, series.to_numpy())
    ax.set(xlabel="total gain", title="Feature importance (gain)")
    return fig


def _colour_scale(values: pd.Series) -> np.ndarray:
    """Per-feature percentile in [0, 1] (low = blue, high = red); NaN stays NaN."""
    numeric = pd.to_numeric(values, errors="coerce") if not isinstance(values.dtype, pd.CategoricalDtype) \
        else pd.Series(values.cat.codes, dtype="float64").where(values.notna())
    return numeric.rank(pct=True).to_numpy(dtype="float64")


def contribution_summary(contributions, features, names: Sequence[str] | None = None,
                         top: int = 15, max_points: int = 2000, seed: int = 0) -> Figure:
    """SHAP-style summary from LightGBM `pred_contrib`: for each of the `top` features by
    mean |contribution|, one row of points (contribution on x, jittered), coloured by the
    feature's value percentile; missing values in grey. A trailing bias column (as
    returned by `pred_contrib`) is ignored."""
    frame = features if isinstance(features, pd.DataFrame) else pd.DataFrame(features, columns=names)
    names = list(names) if names is not None else list(frame.columns)
    contrib = np.asarray(contributions, dtype="float64")
    if contrib.shape[1] == len(names) + 1:
        contrib = contrib[:, :-1]
    if contrib.shape != (len(frame), len(names)):
        raise ValueError(f"contributions have shape {contrib.shape}, expected ({len(frame)}, {len(names)})")
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(frame), size=min(max_points, len(frame)), replace=False)
    ranked = np.argsort(-np.abs(contrib).mean(axis=0))[:top][::-1]
    fig = _figure(7, 0.35 * len(ranked) + 1.5)
    ax = fig.subplots()
    scatter = None
    for pos, j in enumerate(ranked):
        x = contrib[rows, j]
        colour = _colour_scale(frame.iloc[:, j].reset_index(drop=True))[rows]
        jitter = pos + rng.uniform(-0.3, 0.3, rows.size)
        missing = np.isnan(colour)
        ax.scatter(x[missing], jitter[missing], s=6, color="lightgrey", alpha=0.6)
        scatter = ax.scatter(x[~missing], jitter[~missing], s=6, c=colour[~missing],
                             cmap="coolwarm", vmin=0, vmax=1, alpha=0.7)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(ranked)), [names[j] for j in ranked])
    ax.set(xlabel="contribution to log-odds of winning", title="Feature contributions")
    if scatter is not None:
        fig.colorbar(scatter, ax=ax, label="feature value (percentile)", ticks=[0, 1])
    return fig


def forecast_fan(periods: Sequence, p10, p50, p90, actuals=None, title: str = "Revenue forecast",
                 ylabel: str = "bookings") -> Figure:
    """Fan chart: P10-P90 band and P50 line per period, with actuals where known
    (NaN in `actuals` for periods not yet closed)."""
    x = pd.Index(periods)
    x = x.to_timestamp() if isinstance(x, pd.PeriodIndex) else x
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    ax.fill_between(x, np.asarray(p10, dtype="float64"), np.asarray(p90, dtype="float64"),
                    alpha=0.25, label="P10-P90")
    ax.plot(x, np.asarray(p50, dtype="float64"), marker="o", label="P50")
    if actuals is not None:
        ax.plot(x, np.asarray(actuals, dtype="float64"), marker="s", color="black", label="actual")
    ax.set(title=title, ylabel=ylabel)
    ax.legend(loc="upper left", fontsize="small")
    if pd.api.types.is_datetime64_any_dtype(x):
        fig.autofmt_xdate()
    return fig
