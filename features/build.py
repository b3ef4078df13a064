"""Feature definitions and the `FeatureBuilder` estimator (training and serving share it).

fit() learns the stage order, category levels and the history tables; transform() turns
(deal open at T, T) snapshot rows into features that use only facts dated <= T and
history from deals closed strictly before T. See DESIGN.md, "Point-in-time correctness".
Over 300 lines: one estimator, whose fit and feature groups share its fitted state.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from features import history as hist
from features import history_cut
from features.arrays import DealArrays, deal_positions
from features.dates import as_of_timestamps
from features.definitions import (
    AMOUNT_FEATURES,
    CALENDAR_FEATURES,
    CLOSE_DATE_FEATURES,
    DESCRIPTIONS,
    GROUP_LABELS,
    RAW_CATEGORICAL,
    STAGE_FEATURES,
    amount_features,
    calendar_features,
    close_date_features,
    days,
    group_name,
    known_only,
    reserved_names,
)
from features.errors import SchemaError
from features.labels import make_labels, static_labels
from features.lookups import FeatureLookups
from features.schema import TIMESTAMP_DTYPE, CanonicalData, DatasetMeta
from features.snapshots import activity_counts, as_of_grid, event_state, snapshot_positions, stage_seen_from, state_at
from features.winrates import laplace_win_rate, smoothed_group_rate


class FeatureBuilder(BaseEstimator):
    """Point-in-time features for (deal, as-of) rows, scikit-learn style and picklable."""

    def __init__(self, smoothing: float = 20.0, activity_windows=(7, 30, 90),
                 group_columns=("owner", "account_id", "source", "product", "segment", "region", "team")):
        self.smoothing = smoothing
        self.activity_windows = activity_windows
        self.group_columns = group_columns

    # ---- fit --------------------------------------------------------------------
    def fit(self, data: CanonicalData) -> "FeatureBuilder":
        """Learn stage order, category levels, attribute kinds and history tables: `fit_partials` of one partition."""
        return self.fit_partials([self.partial(data)], data.meta)

    def partial(self, data: CanonicalData) -> hist.FitPartial:
        """What one partition of the data (whole deals) contributes to `fit_partials`."""
        deals = _checked_deals(data.deals, static=data.meta.static)
        categorical_attrs = [a for a, kind in data.meta.attributes.items() if kind != "numeric"]
        columns = [c for c in dict.fromkeys([*RAW_CATEGORICAL, *categorical_attrs, *self.group_columns]) if c in deals]
        levels = {col: hist.levels_of(deals[col]) for col in columns}
        if data.meta.static:
            return hist.FitPartial(levels=levels, events=None)
        groups = [c for c in self.group_columns if c in deals]
        arrays = DealArrays.from_canonical(deals, data.stage_events, None, list(data.meta.stages), {})
        seen = stage_seen_from(data, arrays.created_at)  # a current-state export's unseen entries: no dwell
        prepared = event_state(arrays.created_at, arrays.events, len(data.meta.stages), seen)
        return hist.FitPartial(levels=levels, events=hist.history_events(deals, prepared, groups, data.data_end))

    def fit_partials(self, partials: list[hist.FitPartial], meta: DatasetMeta) -> "FeatureBuilder":
        """Fit from every partition's `partial` (in partition order) in this process: levels united, history combined."""
        levels = hist.unite_levels(*(p.levels for p in partials))
        columns = hist.history_columns(self.group_columns, levels)
        return self.fit_history(levels, None if meta.static else
                                hist.combine_history([p.events for p in partials], columns, levels), meta)

    def fit_history(self, levels: dict[str, pd.Index], history: hist.History | None, meta: DatasetMeta):
        """Fit from the united levels and the combined history tables (None: static data)."""
        if len(self.activity_windows) < 2 or min(self.activity_windows) <= 0:
            raise ValueError("activity_windows needs at least two positive day counts, e.g. (7, 30, 90)")
        self.static_, self.stages_, self.attributes_ = bool(meta.static), list(meta.stages), dict(meta.attributes)
        self.raw_categoricals_ = [c for c in RAW_CATEGORICAL if len(levels.get(c, ()))]
        self.attribute_features_ = {a: (f"attr_{a}" if a in reserved_names() else a) for a in self.attributes_}
        categorical_attrs = [a for a, kind in self.attributes_.items() if kind != "numeric"]
        self.categories_ = {"stage": pd.Index(self.stages_)}
        for col in self.raw_categoricals_ + categorical_attrs:
            self.categories_[self.attribute_features_.get(col, col)] = levels[col]
        self.group_columns_, self.history_ = [] if self.static_ else hist.history_columns(self.group_columns, levels), history
        attrs = list(self.attribute_features_.values())
        self.categorical_features_ = ([] if self.static_ else ["stage"]) + self.raw_categoricals_ \
            + [self.attribute_features_[a] for a in categorical_attrs]
        self.feature_names_ = self.raw_categoricals_ + attrs if self.static_ else \
            ["stage"] + STAGE_FEATURES + AMOUNT_FEATURES + CLOSE_DATE_FEATURES + self._activity_names() \
            + self._history_names() + CALENDAR_FEATURES + self.raw_categoricals_ + attrs
        return self

    def _activity_names(self) -> list[str]:
        return [f"activities_{w}d" for w in self.activity_windows] + ["days_since_last_activity", "activity_trend"]

    def _history_names(self) -> list[str]:
        names = ["global_win_rate"]
        for col in self.group_columns_:
            g = group_name(col)
            names += [f"{g}_win_rate", f"{g}_closed_deals"]
            if col == "account_id":
                names += ["account_prior_wins", "account_prior_losses"]
            if col == "owner":
                names += ["owner_avg_won_amount", "owner_open_deals"]
        return names

    # ---- transform ----------------------------------------------------------------
    def transform(self, data: CanonicalData, as_of) -> pd.DataFrame:
        """One row per (deal open at T, T), ordered by as_of: deal_id, as_of, feature_names_."""
        check_is_fitted(self, "feature_names_")
        if self.static_:
            raise ValueError("this builder was fitted on a static lead export: use transform_static")
        deals = _checked_deals(data.deals, static=False)
        pos, at = snapshot_positions(deals, as_of_timestamps(as_of))
        return self._frame(self.arrays(data, deals), pos, at)

    def transform_rows(self, data: CanonicalData, rows: pd.DataFrame) -> pd.DataFrame:
        """Features for explicit (deal_id, as_of) pairs, e.g. each deal at its creation.
        Rows whose deal is unknown or not open at its as_of are refused."""
        check_is_fitted(self, "feature_names_")
        deals = _checked_deals(data.deals, static=False)
        pos = deal_positions(deals["deal_id"], rows["deal_id"])
        at = pd.to_datetime(rows["as_of"]).to_numpy().astype(TIMESTAMP_DTYPE)
        if (pos < 0).any():
            raise ValueError(f"{int((pos < 0).sum())} row(s) name a deal that is not in the data")
        created = deals["created_at"].to_numpy()[pos]
        closed = deals["closed_at"].to_numpy()[pos]
        not_open = (at < created) | (~np.isnat(closed) & (closed <= at))
        if not_open.any():
            raise ValueError(f"{int(not_open.sum())} row(s) ask for a deal at a time it was not open")
        return self._frame(self.arrays(data, deals), pos, at)

    def transform_static(self, data: CanonicalData) -> pd.DataFrame:
        """Static mode: one row per lead, raw categoricals and attributes only (as_of = NaT)."""
        check_is_fitted(self, "feature_names_")
        deals = _checked_deals(data.deals, static=True)
        at = np.full(len(deals), np.datetime64("NaT"), dtype=TIMESTAMP_DTYPE)
        return self._frame(self.arrays(data, deals), np.arange(len(deals)), at)

    def arrays(self, data: CanonicalData, deals: pd.DataFrame | None = None) -> DealArrays:
        """The canonical tables as the arrays `columns` computes on."""
        deals = _checked_deals(data.deals, static=self.static_) if deals is None else deals
        seen = None if self.static_ else stage_seen_from(data, deals["created_at"].to_numpy(dtype=TIMESTAMP_DTYPE))
        return DealArrays.from_canonical(deals, None if self.static_ else data.stage_events,
                                         None if self.static_ else data.activities, self.stages_, self.fields(), seen)

    def fields(self) -> dict[str, bool]:
        """Per-deal columns the features read besides ids, dates and amounts: name -> numeric."""
        out = {col: False for col in [*self.raw_categoricals_, *self.group_columns_]}
        return {**out, **{attr: kind == "numeric" for attr, kind in self.attributes_.items()}}

    def for_dates(self, as_of) -> "FeatureBuilder":
        """A copy whose history tables keep only the rows a lookup at the as-of dates `as_of`
        reads (`features.history_cut`): the same features at those dates, in a fraction of the
        memory (what every worker of a cluster job holds); it refuses any other date."""
        check_is_fitted(self, "feature_names_")
        cut = copy.copy(self)
        cut.history_ = None if self.history_ is None else history_cut.cut_history(self.history_, as_of)
        return cut

    def from_date(self, start) -> "FeatureBuilder":
        """A copy whose history tables answer every as-of date from `start` on (what a model
        serving and forecasting from a date needs: `features.history_cut.cut_history_from`), the same
        features at those dates; it refuses earlier dates."""
        check_is_fitted(self, "feature_names_")
        cut = copy.copy(self)
        cut.history_ = None if self.history_ is None else history_cut.cut_history_from(self.history_, start)
        return cut

    def lookups(self, with_codes: bool = True) -> FeatureLookups:
        """The search structures `columns` reads (see features/lookups.py)."""
        check_is_fitted(self, "feature_names_")
        return FeatureLookups.of(self.categories_, self.history_, self.group_columns_, with_codes)

    def columns(self, arrays: DealArrays, pos: np.ndarray, at: np.ndarray,
                lookups: FeatureLookups | None = None) -> dict[str, np.ndarray]:
        """Features of (deal position, as-of) rows as arrays, in `feature_names_` order.
        Categorical features are int64 codes of `categories_` (-1: missing or unseen).
        Training and serving both come here; only how `arrays` is made differs (and
        serving passes the `lookups` it keeps)."""
        if self.history_ is not None:
            history_cut.check_dates(self.history_, at)
        lookups = lookups or self.lookups(with_codes=False)
        if self.static_:
            return self._deal_columns(arrays, pos, lookups)
        state = state_at(pos, at, event_state(arrays.created_at, arrays.events, len(self.stages_), arrays.stage_seen_from))
        cols = {**self._stage_features(state, arrays, pos, at, lookups), **amount_features(state, arrays, pos),
                **close_date_features(state, at), **self._activity_features(arrays, pos, at),
                **self._history_features(arrays, pos, at, lookups), **calendar_features(at),
                **self._deal_columns(arrays, pos, lookups)}
        return {name: cols[name] for name in self.feature_names_}

    def _frame(self, arrays: DealArrays, pos: np.ndarray, at: np.ndarray) -> pd.DataFrame:
        order = np.argsort(at, kind="stable")  # output ordered by as_of, a time split's natural order
        pos, at = pos[order], at[order]
        cols = self.columns(arrays, pos, at)
        categorical = set(self.categorical_features_)
        return pd.DataFrame({"deal_id": arrays.deal_id[pos], "as_of": at,
                             **{name: pd.Categorical.from_codes(values, categories=self.categories_[name])
                                if name in categorical else values for name, values in cols.items()}})

    def describe(self, name: str) -> str:
        """A human label for a feature, for explanations and risk lists."""
        if name in DESCRIPTIONS:
            return DESCRIPTIONS[name]
        if m := re.fullmatch(r"activities_(\d+)d", name):
            return f"activities in the last {m.group(1)} days"
        if m := re.fullmatch(r"(\w+)_(win_rate|closed_deals)", name):
            what = "historical win rate" if m.group(2) == "win_rate" else "closed deals"
            return f"{GROUP_LABELS.get(m.group(1), m.group(1))} {what}"
        attrs = {v: k for k, v in getattr(self, "attribute_features_", {}).items()}
        return attrs.get(name, name).replace("_", " ")

    # ---- feature groups -----------------------------------------------------------
    def _stage_features(self, state: dict, arrays: DealArrays, pos, at, lookups: FeatureLookups) -> dict:
        stage = state["stage_index"]  # a current-state export's stay entered unseen: time in it unknown (NaN)
        days_in_stage = np.where(state["stage_entry_known"], days(at - state["stage_entered_at"]), np.nan)
        dwell = hist.lookup(lookups.dwell, stage.astype("int64"), at, strict=True)
        mean_dwell = dwell["dwell_days"] / dwell["spells"]
        return {"stage": stage.astype("int64"), "stage_index": stage,
                "furthest_stage_index": state["furthest_stage_index"],
                "days_in_stage": days_in_stage, "deal_age_days": days(at - arrays.created_at[pos]),
                "stage_changes": state["stage_changes"], "stage_regressions": state["stage_regressions"],
                "stage_mean_dwell_days": mean_dwell,
                "stage_velocity": days_in_stage / np.where(mean_dwell > 0, mean_dwell, np.nan)}

    def _activity_features(self, arrays: DealArrays, pos, at) -> dict:
        names = self._activity_names()
        if arrays.activities is None:  # unknown, not zero
            return {n: np.full(len(pos), np.nan) for n in names}
        counts = activity_counts(pos, at, arrays.activities, self.activity_windows)
        mid, long = sorted(self.activity_windows)[-2:]
        earlier_per_window = (counts[f"activities_{long}d"] - counts[f"activities_{mid}d"]) * mid / (long - mid)
        counts["activity_trend"] = counts[f"activities_{mid}d"] / (earlier_per_window + 1.0)
        if arrays.activity_known is not None:  # deals merged from a request without activity data
            known = arrays.activity_known[pos]
            return {n: np.where(known, counts[n], np.nan) for n in names}
        return {n: counts[n] for n in names}

    def _history_features(self, arrays: DealArrays, pos, at, lookups: FeatureLookups) -> dict:
        n, s = len(pos), self.smoothing
        # one row per grouping column, one column per snapshot row: each step below is one numpy call
        codes = np.array([lookups.groups[col].encode(arrays.fields.get(col), len(arrays))[pos]
                          for col in self.group_columns_], dtype="int64").reshape(len(self.group_columns_), n)
        outcomes, found = hist.lookup_groups(lookups.outcomes, list(codes), at)
        total = known_only(outcomes, np.zeros(n, "int64"))
        prior = laplace_win_rate(total["won"], total["lost"])
        past = known_only(found, codes)
        won, lost, known = past["won"], past["lost"], codes >= 0  # NaN exactly where unknown
        # an unseen value has no history: its rate is the prior, its counts are unknown
        rate = smoothed_group_rate(np.where(known, won, 0.0), np.where(known, lost, 0.0), prior, s)
        closed = won + lost
        out = {"global_win_rate": prior}
        for i, col in enumerate(self.group_columns_):
            g = group_name(col)
            out[f"{g}_win_rate"], out[f"{g}_closed_deals"] = rate[i], closed[i]
            if col == "account_id":
                out["account_prior_wins"], out["account_prior_losses"] = won[i], lost[i]
            if col == "owner":
                out["owner_avg_won_amount"] = past["won_amount"][i] / np.where(won[i] > 0, won[i], np.nan)
                load = hist.lookup(lookups.open_load, codes[i], at, strict=False)
                out["owner_open_deals"] = known_only(load, codes[i])["open_deals"]
        return out

    def _deal_columns(self, arrays: DealArrays, pos, lookups: FeatureLookups) -> dict:
        """Raw categorical columns (as codes) and declared attributes (known at creation)."""
        out = {}
        for col in self.raw_categoricals_:
            out[col] = lookups.categories[col].encode(arrays.fields.get(col), len(arrays))[pos]
        for attr, name in self.attribute_features_.items():
            values = arrays.fields.get(attr)
            if self.attributes_[attr] == "numeric":
                out[name] = np.full(len(pos), np.nan) if values is None else values[pos]
            else:
                out[name] = lookups.categories[name].encode(values, len(arrays))[pos]
        return out


def _checked_deals(deals: pd.DataFrame, static: bool) -> pd.DataFrame:
    required = ["deal_id"] if static else ["deal_id", "created_at"]
    missing = [c for c in required if c not in deals]
    if missing:
        raise SchemaError(f"deals has no column {missing}: map a source column onto it in the mapping")
    if deals["deal_id"].duplicated().any():
        raise SchemaError("deals has duplicate deal_id values: run the tables through features.validation.validate")
    deals = deals.reset_index(drop=True)
    for col in ["created_at", "closed_at"]:
        deals[col] = deals[col].astype(TIMESTAMP_DTYPE) if col in deals else \
            pd.Series(pd.NaT, index=deals.index, dtype=TIMESTAMP_DTYPE)
    if "outcome" not in deals:
        deals["outcome"] = pd.Series(pd.NA, index=deals.index, dtype="string")
    if "amount" not in deals:
        deals["amount"] = np.nan
    return deals


def build_training_set(data: CanonicalData, as_of=None, builder: FeatureBuilder | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame, FeatureBuilder]:
    """(features, labels, fitted builder); weekly as-of dates when `as_of` is None."""
    builder = builder if builder is not None else FeatureBuilder().fit(data)
    if data.meta.static:
        X = builder.transform_static(data)
        return X, static_labels(data, X), builder
    as_of = as_of_grid(data) if as_of is None else as_of_timestamps(as_of)
    late = as_of[as_of > data.data_end]
    if len(late):
        raise ValueError(f"as-of date {late[0].date()} is after the end of the data ({data.data_end}): "
                         f"its labels would be unknown; use as-of dates up to the data end")
    X = builder.for_dates(as_of).transform(data, as_of)  # the same rows; lookups in the tables cut to these dates
    return X, make_labels(data, X[["deal_id", "as_of"]]), builder


def features(data: CanonicalData, as_of: list | None) -> pd.DataFrame:
    """What `leadscore features` calls: point-in-time features and labels of every deal
    open at each as-of date, one table."""
    X, y, _ = build_training_set(data, as_of)
    return pd.concat([X, y.drop(columns=["deal_id", "as_of"])], axis=1)
