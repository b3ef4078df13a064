"""When won deals close: durations cut by a label cutoff or by the as-of date must not
make the time to close look short, and the pile-up of wins before quarter ends is measured
on the past months themselves, by value, not copied month by month from a few past monthly totals."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from training.forecast.calibration import calibrate
from training.forecast.config import ForecastConfig
from training.forecast.timing import TimingCorrection, fit_timing, month_of_quarter_intensity
from training.forecast.valuation import LOGQ, p_won_in
from training.models import Z90, TimeToCloseModel
from training.truncation import truncation_weights, weighted_quantile

TRUE_MU, TRUE_SIGMA = np.log1p(40.0), 0.8  # log1p(days to a won close) ~ N(TRUE_MU, TRUE_SIGMA)


def _fold(rng: np.random.Generator, n: int, fold_days: float, gap_days: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fold's rows: as-of dates spread over `fold_days`, labels known `gap_days` after the
    fold's end; returns every row's limit (days to the cutoff), the durations and whether seen."""
    limit = gap_days + fold_days * rng.random(n)
    days = np.expm1(rng.normal(TRUE_MU, TRUE_SIGMA, n))
    return limit, days, days <= limit


def test_truncation_weights_undo_a_label_cutoff():
    rng = np.random.default_rng(3)
    limit, days, seen = _fold(rng, 40_000, fold_days=120, gap_days=45)
    w = truncation_weights(days[seen], limit)
    true_median = np.expm1(TRUE_MU)
    # the rows a cutoff lets through are short: the plain median is off by more than a tenth
    assert np.median(days[seen]) < 0.9 * true_median
    assert weighted_quantile(days[seen], w, 0.5) == pytest.approx(true_median, rel=0.05)
    # the P90 is nearer the truth too; what is left is the tail no as-of date of the fold sees
    true_p90 = np.expm1(TRUE_MU + Z90 * TRUE_SIGMA)
    assert abs(weighted_quantile(days[seen], w, 0.9) - true_p90) < 0.5 * abs(np.quantile(days[seen], 0.9) - true_p90)
    assert w.min() == 1.0 and w.max() <= len(limit)  # durations every as-of date sees count once; bounded


@pytest.mark.parametrize("seed", [4, 5])
def test_time_to_close_model_weights_its_folds_against_their_cutoffs(seed):
    rng = np.random.default_rng(seed)
    folds = [_fold(rng, n, fold_days=d, gap_days=45) for n, d in ((6_000, 120), (2_000, 30), (2_000, 30))]
    X = [pd.DataFrame({"noise": rng.random(int(seen.sum()))}) for _, _, seen in folds]
    days = [d[seen] for _, d, seen in folds]
    weights = tuple(truncation_weights(d[seen], limit) for limit, d, seen in folds)
    params = {"n_estimators": 50, "min_child_samples": 200, "n_jobs": 1}
    weighted = TimeToCloseModel(**params).fit(X[0], days[0], X[1], days[1], X[2], days[2], weights=weights)
    plain = TimeToCloseModel(**params).fit(X[0], days[0], X[1], days[1], X[2], days[2])
    probe = pd.DataFrame({"noise": np.linspace(0, 1, 50)})
    true_q = TRUE_MU + np.array([-Z90, 0.0, Z90]) * TRUE_SIGMA
    gap_weighted = true_q - np.median(weighted.predict_log_quantiles(probe), axis=0)
    gap_plain = true_q - np.median(plain.predict_log_quantiles(probe), axis=0)
    # without the weights the short late folds pull the median and the P90 down; the weights
    # take back part of it (durations beyond a fold's longest limit stay unseen: the
    # forecast re-levels the distribution on past origins, `fit_timing`)
    assert (gap_plain[1:] > 0.25).all()
    assert (gap_weighted[1:] < gap_plain[1:] - 0.05).all() and (gap_weighted[1:] > -0.1).all()


def _past_origins(rng: np.random.Generator, model_shift: float, as_of: pd.Timestamp) -> tuple[pd.DataFrame, np.ndarray]:
    """Deals open at six monthly starts before `as_of`, all later won after log1p-days ~ N(TRUE_MU,
    TRUE_SIGMA); the model's quantiles are centred `model_shift` off the truth (right spread)."""
    starts = pd.date_range(end=as_of - pd.offsets.MonthBegin(1), periods=6, freq="MS")
    start = np.repeat(starts.to_numpy(), 800)
    close = start + (np.expm1(rng.normal(TRUE_MU, TRUE_SIGMA, start.size)) * 86400).astype("timedelta64[s]")
    logq = np.tile(TRUE_MU + model_shift + np.array([-Z90, 0.0, Z90]) * TRUE_SIGMA, (start.size, 1))
    return pd.DataFrame(logq, columns=LOGQ).assign(as_of=start), close


def test_timing_correction_recovers_the_true_durations_from_wins_seen_so_far():
    as_of = pd.Timestamp("2024-07-01")
    scored, close = _past_origins(np.random.default_rng(5), -0.4, as_of)
    won = np.ones(len(scored), dtype=bool)
    fitted = fit_timing(scored, close, won, as_of)
    assert fitted.shift == pytest.approx(0.4, abs=0.06) and fitted.scale == pytest.approx(1.0, abs=0.08)
    # the wins seen by the as-of date are the quick ones: their plain mean would correct far less
    seen = close <= as_of.to_datetime64()
    naive = np.mean(np.log1p((close[seen] - scored["as_of"].to_numpy()[seen]) / np.timedelta64(1, "D"))) - (TRUE_MU - 0.4)
    assert naive < 0.6 * 0.4

    # P(close in the next month | won) of a deal open at as_of, against the true log-normal
    deal = pd.DataFrame([scored[LOGQ].iloc[0].to_numpy()], columns=LOGQ).assign(close_probability=1.0)
    end = as_of + pd.offsets.MonthBegin(1)
    truth = float(norm.cdf((np.log1p((end - as_of).days) - TRUE_MU) / TRUE_SIGMA))
    before = p_won_in(deal, as_of, as_of, end)[0]
    after = p_won_in(fitted.apply(deal), as_of, as_of, end)[0]
    assert before > truth + 0.1  # the short model books too much of the pipeline in the first month
    assert after == pytest.approx(truth, abs=0.03)


def test_timing_correction_is_none_without_wins_and_shrinks_with_few():
    as_of = pd.Timestamp("2024-07-01")
    scored, close = _past_origins(np.random.default_rng(6), -0.4, as_of)
    assert fit_timing(scored, close, np.zeros(len(scored), dtype=bool), as_of) == TimingCorrection()
    few = np.zeros(len(scored), dtype=bool)
    few[:: len(scored) // 8] = True
    small = fit_timing(scored, close, few, as_of)
    many = fit_timing(scored, close, np.ones(len(scored), dtype=bool), as_of)
    assert 0 < small.won_rows < 10 and 0 <= small.shift < many.shift


def _past_months(rng: np.random.Generator, effect: dict[int, tuple[float, float, float]], per_start: int = 10_000,
                 starts: int = 12) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deals open at `starts` monthly starts: amounts heavy-tailed (log-normal, sd 1.2), the
    model's P(won in the month after the start) `p`; each is won in it with probability
    p x effect[large][month of the quarter], `large` for the top fifth of the amounts (a
    pile-up that leans on large deals). Returns start, p, amount, won and the true
    value-weighted intensity per month of the quarter (over the same for all months)."""
    start = pd.DatetimeIndex(np.repeat(pd.date_range("2023-01-01", periods=starts, freq="MS").to_numpy(), per_start))
    amount = np.round(np.exp(rng.normal(9.0, 1.2, start.size)))
    p = rng.uniform(0.05, 0.35, start.size)
    pos = (start.month.to_numpy() - 1) % 3
    large = (amount > np.quantile(amount, 0.8)).astype(int)
    k = np.array([effect[0], effect[1]])[large, pos]
    won = rng.random(start.size) < p * k
    truth = np.bincount(pos, amount * p * k, 3) / np.bincount(pos, amount * p, 3)
    return start, p, amount, won, truth / ((amount * p * k).sum() / (amount * p).sum())  # a shape around 1


def test_month_of_quarter_intensity_is_the_past_months_pile_up_by_value():
    small, large = (0.9, 1.0, 1.1), (0.7, 1.0, 1.4)
    start, p, amount, won, truth = _past_months(np.random.default_rng(8), {0: small, 1: large})
    found = month_of_quarter_intensity(start, p, amount, won)
    assert found == pytest.approx(truth, abs=0.06)
    assert found[0] < 0.85 and found[2] > 1.2  # the large deals' pile-up, which counts of wins would halve
    by_count = np.bincount((start.month.to_numpy() - 1) % 3, won, 3) / np.bincount((start.month.to_numpy() - 1) % 3, p, 3)
    assert by_count[2] < truth[2] - 0.07  # ... so the unit matters: this case tells them apart
    # no calendar in the wins: none found
    start, p, amount, won, _ = _past_months(np.random.default_rng(9), {0: (1, 1, 1), 1: (1, 1, 1)})
    assert month_of_quarter_intensity(start, p, amount, won) == pytest.approx((1.0, 1.0, 1.0), abs=0.06)
    # three months of three deals each: the prior keeps each month near the others
    start, p, amount, won, _ = _past_months(np.random.default_rng(10), {0: small, 1: large}, per_start=3, starts=3)
    assert month_of_quarter_intensity(start, p, amount, won) == pytest.approx((1.0, 1.0, 1.0), abs=0.35)
    # a past that booked twice what was expected in every month: no shape (the level carries it)
    start, p, amount, won, _ = _past_months(np.random.default_rng(11), {0: (2, 2, 2), 1: (2, 2, 2)})
    assert month_of_quarter_intensity(start, p, amount, won) == pytest.approx((1.0, 1.0, 1.0), abs=0.06)


def _history(ratios: list[float]) -> pd.DataFrame:
    """Monthly past periods from 2023-07 with open-pipeline realised / predicted `ratios` (no new deals)."""
    starts = pd.date_range("2023-07-01", periods=len(ratios), freq="MS")
    rows = pd.DataFrame({"start": starts, "open_predicted": 100.0, "open_variance": 25.0,
                         "open_actual": 100.0 * np.asarray(ratios), "new_predicted": 0.0, "new_variance": 0.0,
                         "new_actual": 0.0, "new_seasonal": False})
    return rows.assign(predicted=rows["open_predicted"], variance=rows["open_variance"], actual=rows["open_actual"])


def test_month_of_quarter_factors_follow_the_timing_not_two_noisy_past_months():
    config = ForecastConfig()
    months = (0.9, 1.0, 1.1)
    # past months 1, 2, 3, 1, 2, 3 booked what the intensity says, except one month 1 that
    # booked 0.7 of it (a quiet month: six past months are a small sample)
    ratios = [0.9 * 0.7, 1.0, 1.1, 0.9, 1.0, 1.1]
    out = calibrate(_history(ratios), "month", config, months=months)
    level = sum(ratios) / sum(months * 2)  # realised / predicted over the past months valued with the intensity
    assert out["open_factor"] == pytest.approx(level)
    assert [out["open_factors"][p] for p in (1, 2, 3)] == pytest.approx([level * m for m in months])
    # the quiet month moves every month's factor a little, not month 1's by a third
    assert out["open_factors"][1] / out["open_factors"][3] == pytest.approx(0.9 / 1.1)
    # quarters have no month of the quarter: one factor
    assert set(calibrate(_history(ratios), "quarter", config, months=months)["open_factors"]) == {0}
