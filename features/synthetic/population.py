"""Who the deals are: owners, teams, accounts, the creation intensity, and each deal's
attributes and observable win logit. Deterministic from `params.seed`, so the oracle can
re-draw the same population to simulate deals not yet created.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.synthetic.params import INDUSTRIES, REGIONS, SEGMENTS, GeneratorParams

SEGMENT_EMPLOYEES = ((60.0, 5, 199), (600.0, 200, 1_999), (6_000.0, 2_000, 200_000))  # median, min, max


@dataclass
class Population:
    owner_skill: np.ndarray
    owner_team: np.ndarray
    owner_weight: np.ndarray
    team_region: np.ndarray
    account_segment: np.ndarray
    account_industry: np.ndarray
    account_size: np.ndarray
    account_owner: np.ndarray
    account_weight: np.ndarray


def make_population(p: GeneratorParams) -> Population:
    """Owners (skill ~ N(0, owner_skill_sd), uneven workloads) in teams mapped to regions,
    and accounts (segment, industry, employees, usual owner, popularity)."""
    rng = np.random.default_rng([p.seed, 1])
    owner_team = np.arange(p.n_owners) % p.n_teams
    owner_skill = rng.normal(0.0, p.owner_skill_sd, p.n_owners)
    owner_weight = rng.gamma(4.0, 1.0, p.n_owners)
    team_region = np.arange(p.n_teams) % len(REGIONS)
    n_accounts = max(1, int(round(p.n_deals / p.deals_per_account)))
    segment = rng.choice(len(SEGMENTS), n_accounts, p=_norm(p.segment_mix))
    median, lo, hi = (np.asarray(c, dtype="float64")[segment] for c in zip(*SEGMENT_EMPLOYEES))
    size = np.clip(np.round(median * np.exp(rng.normal(0.0, 0.7, n_accounts))), lo, hi)
    return Population(
        owner_skill=owner_skill, owner_team=owner_team, owner_weight=owner_weight / owner_weight.sum(),
        team_region=team_region, account_segment=segment,
        account_industry=rng.integers(0, len(INDUSTRIES), n_accounts), account_size=size,
        account_owner=rng.choice(p.n_owners, n_accounts, p=owner_weight / owner_weight.sum()),
        account_weight=_norm(rng.lognormal(0.0, 1.0, n_accounts)))


def _norm(w) -> np.ndarray:
    w = np.asarray(w, dtype="float64")
    return w / w.sum()


def window_days(p: GeneratorParams) -> float:
    start = pd.Timestamp(p.start)
    return (start + pd.DateOffset(months=p.months) - start) / pd.Timedelta(days=1)


def daily_creation_weight(day: np.ndarray, p: GeneratorParams) -> np.ndarray:
    """Relative creation intensity of each whole day (days since start): exponential
    growth, fewer deals on weekends, monthly seasonality."""
    dates = np.datetime64(pd.Timestamp(p.start).date(), "D") + day.astype("int64")
    weekday = (dates.astype("int64") + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    month = dates.astype("datetime64[M]").astype("int64") % 12
    growth = np.exp(np.log1p(p.growth_per_year) * day / 365.25)
    return growth * np.where(weekday >= 5, p.weekend_factor, 1.0) * np.asarray(p.month_factor)[month]


def creation_intensity(lo: float, hi: float, p: GeneratorParams) -> tuple[np.ndarray, np.ndarray]:
    """Whole days in [lo, hi) and their expected creation counts (deals/day); the window's
    total is n_deals and the same curve extends past the window."""
    days = np.arange(np.ceil(lo), np.ceil(hi))
    total = daily_creation_weight(np.arange(0, np.ceil(window_days(p))), p).sum()
    return days, p.n_deals * daily_creation_weight(days, p) / total


def sample_creation_days(n: int, days: np.ndarray, weight: np.ndarray, rng: np.random.Generator
                         ) -> np.ndarray:
    """n creation times on the given days (prob. proportional to weight), office hours."""
    day = rng.choice(days, n, p=_norm(weight))
    return np.sort(day + (8.0 + 10.0 * rng.random(n)) / 24.0)


def sample_deals(created: np.ndarray, pop: Population, p: GeneratorParams, rng: np.random.Generator
                 ) -> dict[str, np.ndarray]:
    """Attributes known at creation (indices into the category lists) and the observable
    logit z_obs = base + owner + source + segment + product + industry + season
    - size_effect * log(amount / reference_amount)."""
    n = len(created)
    account = rng.choice(len(pop.account_weight), n, p=pop.account_weight)
    owner = np.where(rng.random(n) < 0.8, pop.account_owner[account],
                     rng.choice(len(pop.owner_weight), n, p=pop.owner_weight))
    segment = pop.account_segment[account]
    source = rng.choice(len(p.source_mix), n, p=_norm(p.source_mix))
    product = rng.choice(len(p.product_mix), n, p=_norm(p.product_mix))
    median = np.asarray(p.segment_median_amount)[segment] * np.asarray(p.product_amount_factor)[product]
    amount = np.maximum(100.0, np.round(median * np.exp(rng.normal(0.0, p.amount_sigma, n)), -2))
    month = creation_month(created, p)
    industry = pop.account_industry[account]
    z_obs = (p.base_logit + pop.owner_skill[owner] + np.asarray(p.source_effect)[source]
             + np.asarray(p.segment_effect)[segment] + np.asarray(p.product_effect)[product]
             + np.asarray(p.industry_effect)[industry] + np.asarray(p.season_effect)[month]
             - p.size_effect * np.log(amount / p.reference_amount))
    size_factor = (amount / p.reference_amount) ** p.size_dwell_exponent
    return {"created": created, "account": account, "owner": owner, "team": pop.owner_team[owner],
            "region": pop.team_region[pop.owner_team[owner]], "segment": segment, "source": source,
            "product": product, "industry": industry, "company_size": pop.account_size[account],
            "amount": amount, "z_obs": z_obs, "size_factor": size_factor}


def creation_month(days: np.ndarray, p: GeneratorParams) -> np.ndarray:
    dates = np.datetime64(pd.Timestamp(p.start).date(), "D") + np.floor(days).astype("int64")
    return dates.astype("datetime64[M]").astype("int64") % 12


def sample_latent(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, 1.0, n)

