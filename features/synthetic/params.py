"""The generator's true parameters: one frozen dataclass, serialisable to params.json.

Everything the oracle needs to recompute probabilities and forward-simulate lives here
(plus the per-deal columns of the truth table); the population of owners and accounts
is re-drawn deterministically from `seed` (see `population.make_population`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

STAGES = ["lead", "qualified", "proposal", "negotiation"]
N_STAGES = len(STAGES)
WON_STAGE = N_STAGES  # advancing out of the last stage is a win

# exit kinds of a spell (competing risks)
REGRESS, ADVANCE, LOST = 0, 1, 2

SEGMENTS = ["SMB", "MidMarket", "Enterprise"]
SOURCES = ["referral", "inbound", "partner", "event", "outbound", "paid"]
PRODUCTS = ["Core", "Analytics", "Platform"]
REGIONS = ["NA", "EMEA", "APAC", "LATAM"]
INDUSTRIES = ["software", "finance", "healthcare", "retail", "manufacturing", "education",
              "logistics", "media"]
ACTIVITY_TYPES = ["email", "call", "meeting", "demo"]


@dataclass(frozen=True)
class GeneratorParams:
    """True parameters of the synthetic CRM process (defaults tuned for realism).

    Logit of a deal (fixed at creation):
        z = base + owner_skill + source + segment + product + industry + season[month]
            - size_effect * log(amount / reference_amount) + sigma_q * q,   q ~ N(0, 1)
    Spell in stage s with r regressions so far: exit kind drawn first,
        P(regress) = regress_prob[s] (0 in stage 0 or when r == max_regressions),
        P(advance) = (1 - P(regress)) * sigmoid(z + stage_offset[s]),  P(lost) = rest;
    then dwell ~ Gamma(dwell_shape, scale = stage_mean_days[s] * size_factor
        * exp(-speed_effect * q) * (loss_dwell_factor if lost)),
        size_factor = (amount / reference_amount) ** size_dwell_exponent.
    """

    # creation process
    growth_per_year: float = 0.40
    weekend_factor: float = 0.2
    month_factor: tuple = (1.0, 1.05, 1.1, 1.0, 1.0, 0.95, 0.85, 0.8, 1.05, 1.1, 1.05, 0.85)
    # population
    n_owners: int = 40
    n_teams: int = 5
    owner_skill_sd: float = 0.5
    deals_per_account: float = 2.5
    segment_mix: tuple = (0.55, 0.32, 0.13)
    source_mix: tuple = (0.10, 0.30, 0.12, 0.10, 0.25, 0.13)
    product_mix: tuple = (0.5, 0.3, 0.2)
    # amounts
    segment_median_amount: tuple = (6_000.0, 25_000.0, 90_000.0)
    product_amount_factor: tuple = (1.0, 0.7, 1.5)
    amount_sigma: float = 0.6
    reference_amount: float = 20_000.0
    # win logit
    base_logit: float = 0.0
    source_effect: tuple = (0.7, 0.15, 0.35, -0.1, -0.55, -0.35)
    segment_effect: tuple = (0.15, 0.0, -0.2)
    product_effect: tuple = (0.0, 0.15, -0.15)
    industry_effect: tuple = (0.2, 0.0, -0.15, 0.1, -0.1, 0.15, 0.0, -0.2)
    season_effect: tuple = (-0.1, 0.0, 0.1, 0.05, 0.0, -0.05, -0.15, -0.2, 0.05, 0.15, 0.2, 0.0)
    size_effect: float = 0.3
    sigma_q: float = 0.85
    # stage process
    stage_offset: tuple = (0.1, 1.0, 1.3, 1.6)
    regress_prob: tuple = (0.0, 0.05, 0.06, 0.07)
    max_regressions: int = 2
    dwell_shape: float = 2.0
    stage_mean_days: tuple = (9.0, 15.0, 20.0, 17.0)
    size_dwell_exponent: float = 0.2
    speed_effect: float = 0.3
    loss_dwell_factor: float = 2.0
    # quarter-end pressure: a won close in [Q, Q + window) is pulled, with probability
    # quarter_pull_prob, to Q - (t - Q) * quarter_pull_days / quarter_pull_window_days
    quarter_pull_prob: float = 0.6
    quarter_pull_window_days: float = 18.0
    quarter_pull_days: float = 7.0
    # stage events: rep's expected close date, pushes, amount revisions
    close_estimate_optimism: float = 0.7
    close_estimate_sigma: float = 0.35
    push_delay_days: tuple = (0.5, 4.0)
    push_extension_days: float = 21.0
    update_rate_per_day: float = 0.15
    stage_amount_sigma: float = 0.08
    negotiation_discount: float = 0.92
    update_amount_sigma: float = 0.04
    # activities: Poisson per spell, rate stage_rate[s] * exp(activity_quality_effect * q),
    # multiplied by loss_activity_factor in the last part of a spell that ends in a loss
    activity_rate_per_day: tuple = (0.35, 0.5, 0.6, 0.7)
    activity_quality_effect: float = 0.35
    loss_activity_factor: float = 0.15
    loss_fade_days: float = 21.0
    loss_fade_share: float = 0.6
    activity_type_mix: tuple = ((0.7, 0.25, 0.05, 0.0), (0.45, 0.3, 0.15, 0.1),
                                (0.35, 0.3, 0.2, 0.15), (0.35, 0.35, 0.25, 0.05))
    weekend_activity_keep: float = 0.15
    # run-level
    n_deals: int = 0
    seed: int = 0
    start: str = "2023-01-01"
    months: int = 24

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorParams":
        known = {f.name for f in fields(cls)}
        kw = {k: (_tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**kw)


def _tuple(v):
    return tuple(_tuple(x) if isinstance(x, list) else x for x in v)


@dataclass(frozen=True)
class ExportParams:
    """The dirt of a raw CRM export made from a generated history (`features.synthetic.export`).
    Kept apart from GeneratorParams so the generator's own output and params.json stay as they were.

    A lost deal is a zombie when nobody marks the loss: every loss slower than
    `loss_marked_within_days` (reps mark losses within about three months or never), plus
    random other losses until zombies are `zombie_share` of the exported open deals.
    """

    zombie_share: float = 0.9  # of the exported open deals; 0 = every loss marked when it happened
    loss_marked_within_days: float = 100.0
    same_day_share: float = 0.05  # of the losses marked within `same_day_within_days`: closed on the creation day
    same_day_within_days: float = 14.0
    misspelled_key_share: float = 0.15  # fact rows whose product code is lower-case with a trailing blank
    orphan_account_share: float = 0.01  # accounts left out of accounts.csv: their deals find no account row

    def to_dict(self) -> dict:
        return asdict(self)
