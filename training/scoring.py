"""What `leadscore score` calls: a registered predictor scores every deal open at an as-of
date, as the table a CRM imports.

One row per deal, best score first: the deal's stage, amount and owner at the as-of date
(owner is the CRM's own user id: PII columns never reach the tables), the score and what
it rests on (`basis`: the model, the base rate of a model without signal, or the cold-start
baseline), the reasons and risks in words (`reason_1..3`, `risk_1..3`, the sentences of
`/score`'s `top_factors`) and the close dates. `csv_table` rounds it for a spreadsheet or
a CRM import and drops the structured factors, which Parquet and JSON keep.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.schema import CanonicalData
from features.snapshots import deals_at
from training.registry import load_predictor

if TYPE_CHECKING:  # not imported at run time: the score log's writer (`trend_and_log`) runs without the model's code
    from training.predictor import LeadScorePredictor

REASONS = 3  # reason_1..3 (positive factors) and risk_1..3 (negative ones)
REASON_COLUMNS = [f"reason_{k}" for k in range(1, REASONS + 1)]
RISK_COLUMNS = [f"risk_{k}" for k in range(1, REASONS + 1)]
# the score file's columns, in order, one a line (a new column is a one-line change); those a
# run does not have (reasons without --explain, dates of a static model) are left out
COLUMNS = [
    "deal_id",
    "score",
    "close_probability",
    "tier",
    "basis",
    "stale",
    "stale_reason",
    "stage",
    "amount",
    "owner",
    *REASON_COLUMNS,
    *RISK_COLUMNS,
    "p_close_within_30d",
    "p_close_within_60d",
    "p_close_within_90d",
    "expected_close_date_p10",
    "expected_close_date_p50",
    "expected_close_date_p90",
    "close_days_p10",
    "close_days_p50",
    "close_days_p90",
    "as_of",
    "model_version",
]
STRUCTURED = ["top_factors"]  # kept by Parquet and JSON; a CSV has the words only
DECIMALS = {"close_probability": 3, "p_close_within_30d": 3, "p_close_within_60d": 3, "p_close_within_90d": 3,
            "amount": 2, "close_days_p10": 1, "close_days_p50": 1, "close_days_p90": 1}
BASIS_MODEL, BASIS_BASE_RATE, BASIS_COLD_START = "model", "base rate", "cold start"


def score(data: CanonicalData, as_of=None, explain: bool = True, model_name: str = "leadscore",
          version: int | None = None, client=None, data_dir: str | Path | None = None,
          predictor: LeadScorePredictor | None = None) -> pd.DataFrame:
    """Deals open at `as_of` (default: the data end) scored by `version` (default: the
    champion; `predictor`: that version already loaded): the `COLUMNS` (+ `STRUCTURED`
    factors), best score first. With a Dask `client`: per partition on the cluster
    (`data_dir`'s partitions, else `data` split), each partition's table made there."""
    if predictor is None or version is None:
        predictor, version = load_predictor(model_name, version)
    as_of = None if predictor.static else (pd.Timestamp(as_of) if as_of else data.data_end)
    table = partial(_table, version=version, basis=basis(predictor), as_of=as_of)
    if client is not None:
        from training.distributed import score_partitions

        return best_first(score_partitions(client, data if data_dir is None else data_dir, predictor, as_of, explain,
                                           finish=table))
    return table(predictor.score(data, as_of, explain=explain), data)


def _table(scored: pd.DataFrame, data: CanonicalData, version: int, basis: str, as_of) -> pd.DataFrame:
    return score_table(scored.assign(model_version=version, basis=basis), deal_context(data, as_of))


def basis(predictor: LeadScorePredictor) -> str:
    """What a predictor's scores rest on: its model, the base rate (a model that found no
    signal serves a constant) or the cold-start baseline (too few closed deals for a model)."""
    if predictor.kind != "lightgbm":
        return BASIS_COLD_START
    return BASIS_BASE_RATE if getattr(predictor.close_model, "fallback_", False) else BASIS_MODEL


def deal_context(data: CanonicalData, as_of) -> pd.DataFrame:
    """deal_id, stage, amount (both as known at `as_of`; None: a static export, its
    amounts as they are) and owner of every deal."""
    deals = data.deals
    owner = deals["owner"] if "owner" in deals else pd.Series(None, index=deals.index, dtype=object)
    if as_of is None:
        amount = deals["amount"] if "amount" in deals else np.nan
        return pd.DataFrame({"deal_id": deals["deal_id"], "stage": None, "amount": amount, "owner": owner})
    state = deals_at(data, as_of)[["deal_id", "stage", "amount"]]
    return state.merge(pd.DataFrame({"deal_id": deals["deal_id"], "owner": owner}), on="deal_id", how="left")


def score_table(scored: pd.DataFrame, context: pd.DataFrame) -> pd.DataFrame:
    """Scored rows (`LeadScorePredictor.score` + model_version and basis) with the deals'
    context and their factors in words, in `COLUMNS` order, best score first."""
    table = scored.drop(columns=[c for c in ("stage", "amount", "owner") if c in scored]) \
        .merge(context, on="deal_id", how="left", validate="one_to_one")
    if "top_factors" in table:
        for side, names in (("positive", REASON_COLUMNS), ("negative", RISK_COLUMNS)):
            sentences = [[f["sentence"] for f in factors[side][:REASONS]] for factors in table["top_factors"]]
            for k, name in enumerate(names):
                table[name] = [s[k] if len(s) > k else None for s in sentences]
    return best_first(table[[c for c in COLUMNS + STRUCTURED if c in table]])


def best_first(table: pd.DataFrame) -> pd.DataFrame:
    """Best score first (ties: probability, then deal id)."""
    return table.sort_values(["score", "close_probability", "deal_id"], ascending=[False, False, True],
                             kind="stable", ignore_index=True)


def csv_table(table: pd.DataFrame) -> pd.DataFrame:
    """`score_table` for a CSV a CRM imports: rounded (probabilities to 3 decimals, amounts
    to 2), close dates as days, no structured factors; a trend as words in two columns
    (`trend`: improving / steady / declining, `trend_factor`: the factor that moved most)."""
    out = table.drop(columns=[c for c in STRUCTURED if c in table])
    if "trend" in out:
        trend = out.pop("trend").tolist()
        out["trend"] = [t["direction"] if t else None for t in trend]
        out["trend_factor"] = [t["factor"] if t else None for t in trend]
    for column, decimals in DECIMALS.items():
        if column in out:
            out[column] = out[column].astype("float64").round(decimals)
    for column in out.columns:
        if column.startswith("expected_close_date_"):
            out[column] = pd.to_datetime(out[column]).dt.date
    return out


def trend_and_log(scored: pd.DataFrame, model_name: str, version: int) -> tuple[pd.DataFrame, str]:
    """`score`'s frame with a `trend` column (`training.monitoring.trend`, from the deals'
    logged scores), and those rows recorded in the score log; with a one-line summary that
    names a store outage instead of raising it (the scores stand, without trends)."""
    import sqlalchemy as sa

    from training.monitoring.trend import log_trends
    from training.store.connection import StoreUnavailable, open_store
    from training.store.score_log import score_rows
    from training.store.scores import record_scores, scores

    try:
        store = open_store()
    except StoreUnavailable as exc:
        return scored.assign(trend=None), f"scores not logged: {exc}"
    try:
        try:
            trend = log_trends(scored, scores(store, deal_ids=scored["deal_id"]))
        except sa.exc.SQLAlchemyError:
            trend = [None] * len(scored)
        written = record_scores(store, score_rows(scored, model_name, version))
    finally:
        store.close()
    summary = f"{written:,} scores logged" if written or scored.empty else \
        "scores not logged: the store refused the write"
    return scored.assign(trend=trend), summary
