"""A regime change in a generated history: from a date on, the CRM's world shifts.

Deals created on or after `RegimeChange.at` get, all at once:
- win logits shifted by source (`win_shift`, e.g. outbound leads that stopped converting);
- amounts multiplied by `amount_factor` (a price change; the win logit follows through the
  generator's size effect, -size_effect * log(amount_factor));
- a new product line `new_product` for a share `new_product_share` of them, with its own
  win effect (replacing the old product's) and amount factor;
- slower stages: the mean dwell of each stage in `stage_slowdown` multiplied (a new
  approval step in proposal, say).
Deals created before are untouched. The change draws from its own random stream, so a
generation without a regime change is bit-identical to what it was before the option
existed; with one, everything but the changed deals' attributes and paths stays the same
up to the random draws of the paths. The truth records the change (params.json
`regime_change`, and the truth table's `after_regime_change` column).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from features.errors import LeadscoreError
from features.synthetic.params import N_STAGES, PRODUCTS, SOURCES, STAGES, GeneratorParams


@dataclass(frozen=True)
class RegimeChange:
    """What changes at `at` (a date); the defaults are a clear, realistic shift."""

    at: str
    win_shift: tuple = (("outbound", -1.0), ("inbound", -0.5))  # (source, win-logit shift)
    amount_factor: float = 1.4
    new_product: str = "Copilot"
    new_product_share: float = 0.25
    new_product_effect: float = -0.4
    new_product_amount_factor: float = 1.3
    stage_slowdown: tuple = (("proposal", 1.8),)  # (stage, mean dwell factor)

    def __post_init__(self) -> None:
        try:
            pd.Timestamp(self.at)
        except (ValueError, TypeError):
            raise LeadscoreError(f"--regime-change '{self.at}' is not a date: use YYYY-MM-DD") from None
        unknown = [s for s, _ in self.win_shift if s not in SOURCES] + \
                  [s for s, _ in self.stage_slowdown if s not in STAGES]
        if unknown:
            raise LeadscoreError(f"regime change: unknown source or stage {unknown}; sources {SOURCES}, "
                                 f"stages {STAGES}")
        if self.amount_factor <= 0 or self.new_product_amount_factor <= 0 or \
                any(f <= 0 for _, f in self.stage_slowdown) or not 0 <= self.new_product_share <= 1:
            raise LeadscoreError("regime change: factors must be > 0 and the new product share in [0, 1]")

    def to_dict(self) -> dict:
        return asdict(self)

    def day(self, p: GeneratorParams) -> float:
        """The change as days since the generation start (the generator's clock)."""
        return (pd.Timestamp(self.at) - pd.Timestamp(p.start)) / pd.Timedelta(days=1)

    def products(self) -> list[str]:
        return [*PRODUCTS, self.new_product]


def apply_regime(deals: dict[str, np.ndarray], regime: RegimeChange, p: GeneratorParams,
                 rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """`sample_deals`' output with the change applied to deals created on or after it,
    which deals those are, and their per-stage dwell factors (n x N_STAGES, for `simulate`)."""
    out = dict(deals)
    after = deals["created"] >= regime.day(p)
    shift = np.zeros(len(SOURCES))
    for source, value in regime.win_shift:
        shift[SOURCES.index(source)] = value
    new = after & (rng.random(len(after)) < regime.new_product_share)
    factor = np.where(after, regime.amount_factor, 1.0) * np.where(new, regime.new_product_amount_factor, 1.0)
    out["amount"] = np.where(after, np.maximum(100.0, np.round(deals["amount"] * factor, -2)), deals["amount"])
    old_effect = np.asarray(p.product_effect)[deals["product"]]
    out["z_obs"] = (deals["z_obs"] + np.where(after, shift[deals["source"]], 0.0)
                    - p.size_effect * np.log(out["amount"] / deals["amount"])
                    + np.where(new, regime.new_product_effect - old_effect, 0.0))
    out["product"] = np.where(new, len(PRODUCTS), deals["product"])
    out["size_factor"] = (out["amount"] / p.reference_amount) ** p.size_dwell_exponent
    slow = np.ones(N_STAGES)
    for stage, value in regime.stage_slowdown:
        slow[STAGES.index(stage)] = value
    stage_factor = np.where(after[:, None], slow[None, :], 1.0)
    return out, after, stage_factor


def pairs(text: str, option: str) -> tuple:
    """"name=value,name=value" -> ((name, float), ...); a malformed pair is a one-line error."""
    out = []
    for part in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out.append((name.strip(), float(value)))
        except ValueError:
            sep = ""
        if not sep:
            raise LeadscoreError(f"{option}: '{part}' is not name=number")
    return tuple(out)
