"""Oracle forecasts: the best possible predictions under the generator's true process,
given the state of the pipeline at a date and the truth table (latent quality, true
parameters). Benchmarks compare models with these; training never calls them.

State of an open deal at T, from `features.snapshots.deals_at`: current stage s, entry
time t0 of the current spell (the last stage change), regressions k so far.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from features.dataset import read_truth
from features.dates import DAY
from features.errors import DatasetNotFound
from features.schema import CanonicalData
from features.snapshots import deals_at
from features.synthetic.params import ADVANCE, LOST, N_STAGES, REGRESS, GeneratorParams
from features.synthetic.process import absorption_probability, dwell_scale, exit_probabilities, quarter_starts


def load_truth(data_dir: str | Path) -> pd.DataFrame:
    """truth/truth.parquet with the parameters (truth/params.json) in `attrs["params"]`."""
    truth = read_truth(data_dir)
    if truth is None:
        raise DatasetNotFound(f"{data_dir}/truth/truth.parquet not found: only folders written by "
                              f"`leadscore generate` have a ground truth")
    params_path = Path(data_dir) / "truth" / "params.json"
    if params_path.exists():
        truth.attrs["params"] = json.loads(params_path.read_text())
    return truth


def truth_params(truth: pd.DataFrame) -> GeneratorParams:
    if "params" not in truth.attrs:
        raise DatasetNotFound("the truth table carries no parameters: read it with "
                              "features.synthetic.load_truth(DIR), which adds truth/params.json")
    return GeneratorParams.from_dict(truth.attrs["params"])


def days_since_start(ts, p: GeneratorParams) -> np.ndarray:
    return np.asarray((pd.to_datetime(ts) - pd.Timestamp(p.start)) / DAY, dtype="float64")


def open_deal_states(data: CanonicalData, truth: pd.DataFrame, as_of,
                     running: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per deal open at `as_of` (`features.snapshots.deals_at`): deal_id, stage
    (index), regressions, entered_at of the current spell, amount as last recorded, and
    the deal's truth columns. `running`: `snapshots.running_state(data)`, computed once
    by a caller that asks for many dates."""
    st = deals_at(data, as_of, running)
    states = pd.DataFrame({"deal_id": st["deal_id"], "stage": st["stage_index"],
                           "spell_entered_at": st["stage_entered_at"],
                           "regressions": st["stage_regressions"].astype("int64"), "amount": st["amount"]})
    return states.merge(truth, on="deal_id", how="left", validate="one_to_one")


def _survival(e: np.ndarray, scale: np.ndarray, p: GeneratorParams) -> np.ndarray:
    return special.gammaincc(p.dwell_shape, np.maximum(e, 0.0) / scale)


def _cdf(x: np.ndarray, scale: np.ndarray, p: GeneratorParams) -> np.ndarray:
    return special.gammainc(p.dwell_shape, np.maximum(x, 0.0) / scale)


def pulled_before(t0: np.ndarray, as_of: float, scale: np.ndarray, p: GeneratorParams) -> np.ndarray:
    """P(a won close from a negotiation spell entered at t0 is pulled to at or before
    as_of although its raw time T is after as_of). With Q the quarter start such that
    as_of is in [Q - L, Q + W), the pull maps T in [Q, Q + W) to Q - (T - Q) L / W and
    applies (with probability quarter_pull_prob) when that is after t0, i.e.
    T < Q + (Q - t0) W / L; it lands at or before as_of when T >= Q + max(Q - as_of, 0) W / L.
    So the mass is prob * [F(upper) - F(lower)] with F the dwell's gamma CDF from t0,
    lower = max(as_of, Q + max(Q - as_of, 0) W / L), upper = min(Q + W, Q + (Q - t0) W / L)."""
    qs = quarter_starts(p)
    L, W = p.quarter_pull_days, p.quarter_pull_window_days
    near = qs[(as_of >= qs - L) & (as_of < qs + W)]
    if near.size == 0:
        return np.zeros_like(t0)
    q = near[0]
    lower = max(as_of, q + max(q - as_of, 0.0) * W / L)
    upper = np.minimum(q + W, q + (q - t0) * W / L)
    mass = _cdf(upper - t0, scale, p) - _cdf(lower - t0, scale, p)
    return np.where(upper > lower, p.quarter_pull_prob * np.clip(mass, 0.0, None), 0.0)


def spell_posterior(z, stage, regs, multiplier, t0, as_of: float, p: GeneratorParams,
                    with_pull: bool = True) -> np.ndarray:
    """(n, 3) P(exit kind | still open at as_of, in a spell entered at t0): prior exit
    probabilities times each kind's probability of still being open (gamma survival of
    its dwell at e = as_of - t0, less the won closes pulled before as_of), normalised."""
    e = as_of - t0
    prior = exit_probabilities(z, stage, regs, p)
    surv = np.column_stack([_survival(e, dwell_scale(stage, np.full(len(z), k), multiplier, p), p)
                            for k in (REGRESS, ADVANCE, LOST)])
    if with_pull:
        won_exit = stage == N_STAGES - 1
        scale = dwell_scale(stage, np.full(len(z), ADVANCE), multiplier, p)
        surv[:, ADVANCE] -= np.where(won_exit, pulled_before(t0, as_of, scale, p), 0.0)
    post = prior * np.clip(surv, 0.0, None)
    total = post.sum(axis=1, keepdims=True)
    # beyond float range of the survival (very long spells) the loss, slowest, dominates
    return np.where(total > 0, post / np.where(total > 0, total, 1.0), np.eye(3)[LOST])


def oracle_close_probability(data: CanonicalData, truth: pd.DataFrame, as_of,
                             params: GeneratorParams | None = None,
                             running: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """For every deal open at `as_of`: p_won_oracle = P(eventually won | stage s, time in
    the spell e, regressions k, latent quality, true parameters)
      = post_advance * W(s + 1, k) + post_regress * W(s - 1, k + 1),
    with the exit posterior of `spell_posterior` and W from `absorption_probability`."""
    p = params or truth_params(truth)
    st = open_deal_states(data, truth, as_of, running)
    z, s, k = st["logit"].to_numpy(), st["stage"].to_numpy(), st["regressions"].to_numpy()
    post = spell_posterior(z, s, k, st["dwell_multiplier"].to_numpy(), days_since_start(st["spell_entered_at"], p),
                           float(days_since_start(pd.Timestamp(as_of), p)), p)
    w = absorption_probability(z, p)
    rows = np.arange(len(z))
    p_won = post[:, ADVANCE] * w[rows, s + 1, k] \
        + post[:, REGRESS] * w[rows, np.maximum(s - 1, 0), np.minimum(k + 1, p.max_regressions)]
    return pd.DataFrame({"deal_id": st["deal_id"].to_numpy(), "p_won_oracle": p_won})
