"""Assemble a generated CRM history: population -> deals -> paths -> events and
activities -> canonical tables (validated) + the truth table; `generate` writes them."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.dataset import write_dataset, write_truth
from features.errors import LeadscoreError
from features.schema import TIMESTAMP_DTYPE, CanonicalData, DatasetMeta
from features.synthetic.activities import build_activities
from features.synthetic.params import (
    ACTIVITY_TYPES,
    INDUSTRIES,
    PRODUCTS,
    REGIONS,
    SEGMENTS,
    SOURCES,
    STAGES,
    GeneratorParams,
)
from features.synthetic.population import (
    Population,
    creation_intensity,
    make_population,
    sample_creation_days,
    sample_deals,
    sample_latent,
    window_days,
)
from features.synthetic.process import absorption_probability, simulate
from features.synthetic.regime import RegimeChange, apply_regime
from features.synthetic.timeline import build_events
from features.validation import validate

ATTRIBUTES = {"industry": "categorical", "company_size": "numeric"}


class GeneratorOptionError(LeadscoreError, ValueError):
    """An option of `leadscore generate` is out of range."""


def make_params(n_deals: int, seed: int = 0, start: str = "2023-01-01", months: int = 24,
                params: GeneratorParams | None = None) -> GeneratorParams:
    """Check the run options and put them into the parameters."""
    if int(n_deals) < 1:
        raise GeneratorOptionError(f"--deals must be at least 1 (got {n_deals})")
    if int(months) < 1:
        raise GeneratorOptionError(f"--months must be at least 1 (got {months})")
    try:
        start_ts = pd.Timestamp(start)
    except (ValueError, TypeError):
        raise GeneratorOptionError(f"--start '{start}' is not a date: use YYYY-MM-DD") from None
    return replace(params or GeneratorParams(), n_deals=int(n_deals), seed=int(seed),
                   start=start_ts.normalize().date().isoformat(), months=int(months))


def generate_data(n_deals: int, seed: int = 0, start: str = "2023-01-01", months: int = 24,
                  params: GeneratorParams | None = None, regime: RegimeChange | None = None
                  ) -> tuple[CanonicalData, pd.DataFrame]:
    """Generate `n_deals` deals created over `months` months from `start`, censored at
    start + months. Returns the validated canonical data and the truth table (one row
    per deal; the parameters in `truth.attrs["params"]`); `regime`: a regime change
    (`features.synthetic.regime`), recorded in the truth."""
    p = make_params(n_deals, seed, start, months, params)
    raw, truth = generate_raw(p, regime)
    return validated(raw, p), truth


def generate_raw(p: GeneratorParams, regime: RegimeChange | None = None, chunk: DealChunk | None = None
                 ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The canonical tables before validation (deals, stage_events, activities, accounts)
    and the truth table. `chunk`: only that chunk's deals (own seeds, ids from `first`),
    of the same population, and no accounts table."""
    n, entropy = (p.n_deals, [p.seed, 0]) if chunk is None else (chunk.n, [p.seed, 0, chunk.index + 1])
    rng_create, rng_deals, rng_q, rng_paths, rng_events, rng_acts = (
        np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(6))
    end = window_days(p)
    days, weight = creation_intensity(0.0, end, p)
    created = sample_creation_days(n, days, weight, rng_create)
    deals = sample_deals(created, make_population(p) if chunk is None else chunk.population, p, rng_deals)
    after = stage_factor = None
    if regime is not None:  # its own random stream: without a change every draw is as before
        deals, after, stage_factor = apply_regime(deals, regime, p, np.random.default_rng([p.seed, 1]))
    q = sample_latent(n, rng_q)
    z = deals["z_obs"] + p.sigma_q * q
    multiplier = deals["size_factor"] * np.exp(-p.speed_effect * q)
    zeros = np.zeros(n, dtype="int64")
    dwell = multiplier if stage_factor is None else multiplier[:, None] * stage_factor
    paths = simulate(zeros, zeros, created, z, dwell, p, rng_paths)
    events = build_events(paths, deals["amount"], deals["size_factor"], end, p, rng_events)
    acts = build_activities(paths, q, end, p, rng_acts)
    ids = deal_ids(n) if chunk is None else deal_ids(n, chunk.first, width_of=p.n_deals)
    products = PRODUCTS if regime is None else regime.products()
    raw = {"deals": _deals_frame(ids, deals, paths, events, end, p, products),
           "stage_events": _events_frame(ids, events, p),
           "activities": _activities_frame(ids, acts, p), "accounts": None if chunk else _accounts_frame(p)}
    truth = _truth_frame(ids, deals, q, z, multiplier, paths, p)
    if regime is not None:
        truth["after_regime_change"] = after
        truth.attrs["params"]["regime_change"] = regime.to_dict()
    return raw, truth


@dataclass(frozen=True)
class DealChunk:
    """Deals first+1 .. first+n of a chunked run (`features.synthetic.chunked`), chunk `index`."""

    index: int
    first: int
    n: int
    population: Population


def validated(raw: dict[str, pd.DataFrame], p: GeneratorParams) -> CanonicalData:
    """Run the tables through the canonical validator; a reject here is a generator bug."""
    result = validate(raw["deals"], _meta(p), stage_events=raw["stage_events"], activities=raw["activities"],
                      accounts=raw.get("accounts"))
    if len(result.rejects):
        raise RuntimeError(f"generator bug: validation rejected rows {result.counts().to_dict()}")
    return result.data


def generate(out_dir: str | Path, n_deals: int, seed: int = 0, start: str = "2023-01-01",
             months: int = 24, regime: RegimeChange | None = None) -> dict:
    """Write the generated dataset to `out_dir` (canonical layout) with the ground truth in
    `out_dir/truth/` (truth.parquet, params.json); returns a summary of counts."""
    data, truth = generate_data(n_deals, seed=seed, start=start, months=months, regime=regime)
    out = Path(out_dir)
    write_dataset(data, out)
    write_truth(out, truth, truth.attrs["params"])
    return summarize(data)


def summarize(data: CanonicalData) -> dict:
    outcome = data.deals["outcome"]
    return {"deals": len(data.deals), "won": int((outcome == "won").sum()),
            "lost": int((outcome == "lost").sum()), "open": int(outcome.isna().sum()),
            "events": len(data.stage_events), "activities": len(data.activities),
            "accounts": len(data.accounts),
            "first_created": str(data.deals["created_at"].min()), "data_end": str(data.meta.data_end)}


def deal_ids(n: int, first: int = 0, width_of: int | None = None) -> pd.Series:
    width = max(7, len(str(n if width_of is None else width_of)))
    return pd.Series(np.char.add("D", np.char.zfill(np.arange(first + 1, first + n + 1).astype(str), width)),
                     dtype="str")


def to_timestamps(days: np.ndarray, p: GeneratorParams) -> np.ndarray:
    """Float days since start -> datetime64[us], floored to the second (NaN -> NaT)."""
    seconds = np.floor(np.asarray(days, dtype="float64") * 86_400.0)
    out = np.datetime64(p.start, "us") + np.nan_to_num(seconds).astype("int64").astype("timedelta64[s]")
    return np.where(np.isfinite(seconds), out, np.datetime64("NaT")).astype(TIMESTAMP_DTYPE)


def labels(codes: np.ndarray, names: list[str]) -> pd.Series:
    """Category codes -> an Arrow-backed string column, without a Python loop over rows."""
    return pd.Series(pa.array(names).take(pa.array(np.asarray(codes, dtype="int64"))), dtype="str")


def _meta(p: GeneratorParams) -> DatasetMeta:
    end = pd.Timestamp(p.start) + pd.DateOffset(months=p.months)
    return DatasetMeta(stages=list(STAGES), attributes=dict(ATTRIBUTES), data_end=end, name="synthetic")


def _names(p: GeneratorParams) -> dict[str, list[str]]:
    return {"owner": [f"owner_{i + 1:02d}" for i in range(p.n_owners)],
            "team": [f"team_{i + 1}" for i in range(p.n_teams)], "region": REGIONS, "segment": SEGMENTS,
            "source": SOURCES, "product": PRODUCTS, "industry": INDUSTRIES}


def _account_ids(n: int) -> list[str]:
    return [f"A{i + 1:06d}" for i in range(n)]


def _deals_frame(ids: pd.Series, deals: dict, paths, events, end: float, p: GeneratorParams,
                 products: list[str] = PRODUCTS) -> pd.DataFrame:
    closed = np.where(paths.closed <= end, paths.closed, np.nan)
    last_row = np.r_[events.path[1:] != events.path[:-1], True]
    amount = np.full(len(ids), np.nan)
    amount[events.path[last_row]] = events.amount[last_row]
    outcome = np.where(np.isnan(closed), None, np.where(paths.won, "won", "lost"))
    df = pd.DataFrame({"deal_id": ids, "created_at": to_timestamps(deals["created"], p), "amount": amount,
                       "closed_at": to_timestamps(closed, p), "outcome": pd.Series(outcome, dtype="str")})
    for col, names in {**_names(p), "product": products}.items():
        df[col] = labels(deals[col], names)
    df["account_id"] = labels(deals["account"], _account_ids(int(deals["account"].max()) + 1))
    df["company_size"] = deals["company_size"].astype("float64")
    return df


def _events_frame(ids: pd.Series, ev, p: GeneratorParams) -> pd.DataFrame:
    ecd = to_timestamps(np.floor(ev.expected_close), p)  # reps pick a date, not a time
    return pd.DataFrame({"deal_id": ids.take(ev.path).reset_index(drop=True), "stage": labels(ev.stage, STAGES),
                         "entered_at": to_timestamps(ev.time, p), "amount": ev.amount, "expected_close_date": ecd})


def _activities_frame(ids: pd.Series, acts, p: GeneratorParams) -> pd.DataFrame:
    return pd.DataFrame({"deal_id": ids.take(acts.path).reset_index(drop=True),
                         "occurred_at": to_timestamps(acts.time, p), "type": labels(acts.type, ACTIVITY_TYPES)})


def _accounts_frame(p: GeneratorParams) -> pd.DataFrame:
    pop = make_population(p)
    return pd.DataFrame({"account_id": pd.Series(_account_ids(len(pop.account_weight)), dtype="str"),
                         "industry": labels(pop.account_industry, INDUSTRIES),
                         "company_size": pop.account_size.astype("float64"),
                         "segment": labels(pop.account_segment, SEGMENTS)})


def creation_oracle(z_obs: np.ndarray, p: GeneratorParams, nodes: int = 40, grid: int = 2001) -> np.ndarray:
    """p_win_creation_oracle(z_obs) = E_q[W(lead, 0 | z_obs + sigma_q q)], q ~ N(0, 1), by
    Gauss-Hermite quadrature (probabilists' nodes), tabulated on a fine grid of z_obs and
    interpolated (the function is smooth; error < 1e-6)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / np.sqrt(2.0 * np.pi)
    zs = np.linspace(z_obs.min() - 1e-9, z_obs.max() + 1e-9, grid)
    pts = (zs[:, None] + p.sigma_q * x[None, :]).ravel()
    table = (absorption_probability(pts, p)[:, 0, 0].reshape(grid, nodes) * w).sum(axis=1)
    return np.interp(z_obs, zs, table)


def _truth_frame(ids: pd.Series, deals: dict, q: np.ndarray, z: np.ndarray, multiplier: np.ndarray,
                 paths, p: GeneratorParams) -> pd.DataFrame:
    """Per deal: latent quality, logits, true and creation-oracle win probabilities, the
    dwell multiplier (size_factor * exp(-speed_effect * q)), and the uncensored outcome."""
    n_spells = np.bincount(paths.spells.path, minlength=len(ids))
    truth = pd.DataFrame({
        "deal_id": ids, "latent_quality": q, "logit_observed": deals["z_obs"], "logit": z,
        "p_win_true": absorption_probability(z, p)[:, 0, 0],
        "p_win_creation_oracle": creation_oracle(deals["z_obs"], p),
        "size_factor": deals["size_factor"], "dwell_multiplier": multiplier,
        "amount_at_creation": deals["amount"], "n_spells": n_spells,
        "outcome_uncensored": pd.Series(np.where(paths.won, "won", "lost"), dtype="str"),
        "closed_at_uncensored": to_timestamps(paths.closed, p)})
    truth.attrs["params"] = p.to_dict()
    return truth
