"""Per-deal explanations: path attribution against exact TreeSHAP, speed and agreement.

    leadscore generate --deals 20000 --seed 0 --out DIR
    MLFLOW_TRACKING_URI=sqlite:///DIR/mlflow.db leadscore train --data DIR
    MLFLOW_TRACKING_URI=sqlite:///DIR/mlflow.db python -m benchmarks.bench_explain --data DIR

Loads the registry's champion as the service does and builds the feature rows of the deals
open at the data end (and at earlier as-of dates, 30 days apart, until there are
--min-rows). In one process, for 1 row and 1,000 rows: the time of a plain predict, of the
"shap" and "path" contributions and of FactorExplainer.explain (on the frame and on the
serving fast path's dict of arrays), as ratios; explain is timed with Python's default
garbage collector and after gc.freeze() (what a service does once its model is loaded:
the collector then stops re-scanning the model's objects). Then how far path attribution
agrees with SHAP on all the rows. Writes the "Explanations" section of
benchmarks/RESULTS.md. Figures only; nothing is asserted.
"""
from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from benchmarks.results import record
from features.dataset import read_dataset
from serving.loader import ServingConfig, load_served_predictor
from training.lightgbm_fast import shared_matrix


def best_ms(fn, repeat: int, number: int) -> float:
    """Best of `repeat` means of `number` calls, in ms (the least disturbed by a busy machine)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1000


def feature_rows(predictor, data, min_rows: int) -> pd.DataFrame:
    """Feature rows of the open deals at the data end, then 30, 60... days earlier."""
    frames, as_of = [], data.data_end
    while sum(map(len, frames)) < min_rows and len(frames) < 24:
        frames.append(predictor.features(data, as_of))
        as_of -= pd.Timedelta(days=30)
    return pd.concat(frames, ignore_index=True)[predictor.feature_names]


def as_arrays(X: pd.DataFrame) -> dict[str, np.ndarray]:
    """The serving fast path's input: float arrays, object arrays of category strings or None."""
    return {c: (np.array([None if pd.isna(v) else str(v) for v in X[c].tolist()], dtype=object)
                if isinstance(X[c].dtype, pd.CategoricalDtype) else X[c].to_numpy(dtype=float)) for c in X.columns}


def timings(predictor, table, X: pd.DataFrame, n: int) -> dict[str, float]:
    model, explainer = predictor.close_model, predictor.explainer
    rows = X.iloc[:n].reset_index(drop=True)
    M = shared_matrix(rows, predictor.close_model, predictor.time_model)
    arrays = as_arrays(rows)
    contrib = model.contributions(M, attribution=table)
    repeat, number = (7, 200) if n == 1 else (7, 5)
    out = {"predict": best_ms(lambda: model.predict_raw(M), repeat, number),
           "path": best_ms(lambda: model.contributions(M, attribution=table), repeat, number),
           "shap": best_ms(lambda: model.contributions(M, method="shap"), 3 if n > 1 else repeat,
                           1 if n > 1 else number),
           "explain frame": best_ms(lambda: explainer.explain(rows, contrib), repeat, number),
           "explain dict": best_ms(lambda: explainer.explain(arrays, contrib), repeat, number)}
    gc.freeze()
    out["explain dict, gc frozen"] = best_ms(lambda: explainer.explain(arrays, contrib), repeat, number)
    out["explain frame, gc frozen"] = best_ms(lambda: explainer.explain(rows, contrib), repeat, number)
    gc.unfreeze()
    return out


def _top(c: np.ndarray, k: int, positive: bool) -> list[set]:
    """FactorExplainer's choice: the k largest (smallest) contributions that are > 0 (< 0)."""
    order = np.argsort(c, axis=1)
    idx = order[:, ::-1][:, :k] if positive else order[:, :k]
    vals = np.take_along_axis(c, idx, axis=1)
    keep = vals > 0 if positive else vals < 0
    return [set(i[m].tolist()) for i, m in zip(idx, keep)]


def _overlap(a: list[set], b: list[set]) -> float:
    return float(np.mean([len(x & y) / max(len(x), len(y)) if (x or y) else 1.0 for x, y in zip(a, b)]))


def agreement(path: np.ndarray, shap: np.ndarray) -> dict[str, float]:
    """How far path attribution agrees with SHAP, per-feature columns only (bias dropped)."""
    p, s = path[:, :-1], shap[:, :-1]
    out = {}
    for side, positive in (("positive", True), ("negative", False)):
        top1 = [next(iter(x), None) if len(x) else None for x in _top(p, 1, positive)]
        top1_shap = [next(iter(x), None) if len(x) else None for x in _top(s, 1, positive)]
        out[f"top-1 {side} factor agrees"] = float(np.mean([a == b for a, b in zip(top1, top1_shap)]))
        out[f"top-3 {side} overlap"] = _overlap(_top(p, 3, positive), _top(s, 3, positive))
    either = (np.abs(p) > 1e-9) | (np.abs(s) > 1e-9)
    out["sign agreement (entries where either is non-zero)"] = float(np.mean(np.sign(p[either]) == np.sign(s[either])))
    big = np.abs(s) > 0.05
    out["sign agreement (abs SHAP > 0.05)"] = float(np.mean(np.sign(p[big]) == np.sign(s[big])))
    rp, rs = rankdata(p, axis=1), rankdata(s, axis=1)
    rp, rs = rp - rp.mean(axis=1, keepdims=True), rs - rs.mean(axis=1, keepdims=True)
    rho = (rp * rs).sum(axis=1) / np.sqrt((rp ** 2).sum(axis=1) * (rs ** 2).sum(axis=1))
    out["Spearman per row, median"] = float(np.nanmedian(rho))
    out["Spearman per row, 10th percentile"] = float(np.nanpercentile(rho, 10))
    out["max abs(row sum path - row sum SHAP)"] = float(np.abs(path.sum(axis=1) - shap.sum(axis=1)).max())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Canonical tables the champion was trained on.")
    parser.add_argument("--min-rows", type=int, default=2000, help="Feature rows for the agreement figures.")
    args = parser.parse_args(argv)

    predictor, version = load_served_predictor(ServingConfig.from_env(), from_bento=False)
    data = read_dataset(args.data)
    X = feature_rows(predictor, data, args.min_rows)
    model = predictor.close_model
    start = time.perf_counter()
    attribution = model.path_attribution()
    warm_ms = (time.perf_counter() - start) * 1000
    table = attribution.leaf_matrix_
    lines = [f"Champion version {version}: {model.best_iteration_} trees, {len(predictor.feature_names)} features; "
             f"path table {table.shape[0]:,} leaves x {table.shape[1]} columns, {table.nnz:,} non-zeros, "
             f"built in {warm_ms:.0f} ms (`path_attribution()`, once per process: "
             f"`training.compiled.CompiledPredictor`).", "",
             "| rows | predict ms | path ms | shap ms | shap / path | path / predict | explain dict ms "
             "| explain frame ms | explain dict / predict | explain dict, gc frozen ms | explain frame, gc frozen ms |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in (1, 1000):
        t = timings(predictor, attribution, X, n)
        lines.append(f"| {n:,} | {t['predict']:.3f} | {t['path']:.3f} | {t['shap']:.2f} | {t['shap'] / t['path']:.0f}x "
                     f"| {t['path'] / t['predict']:.2f} | {t['explain dict']:.3f} | {t['explain frame']:.3f} "
                     f"| {t['explain dict'] / t['predict']:.2f} | {t['explain dict, gc frozen']:.3f} "
                     f"| {t['explain frame, gc frozen']:.3f} |")
    M = shared_matrix(X, predictor.close_model, predictor.time_model)
    quality = agreement(model.contributions(M, attribution=attribution), model.contributions(M, method="shap"))
    lines += ["", f"Agreement of path attribution with exact SHAP on {len(X):,} feature rows of open deals "
              f"(as-of dates 30 days apart from the data end):", "", "| measure | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.4g} |" if "max" in k else f"| {k} | {v:.3f} |" for k, v in quality.items()]
    body = "\n".join(lines)
    print(body)
    record("Explanations", body, "MLFLOW_TRACKING_URI=sqlite:///DIR/mlflow.db python -m benchmarks.bench_explain "
                                 f"--data DIR --min-rows {args.min_rows}  (DIR: leadscore generate --deals 20000 "
                                 "--seed 0 --out DIR && leadscore train --data DIR)")


if __name__ == "__main__":
    main()
