"""`/score` rows carry `stale` and `stale_reason` (the predictor's `features.staleness`
rule) through the serving path: compiled scoring, row shaping and the JSON writer."""
from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest

from features.payload import payload_arrays
from features.staleness import fit_stale_rule
from features.synthetic import generate_data
from serving.request import shape_scores
from serving.schemas import score_response_json
from training.compiled import CompiledPredictor
from training.train import fit_predictor


@pytest.mark.slow(reason="trains a (cold-start) predictor")
def test_score_response_flags_a_deal_older_than_every_win():
    data, _truth = generate_data(300, seed=1, months=12)
    predictor = fit_predictor(data).predictor
    rule = fit_stale_rule(data)
    # the trained rule is the rule at the data end, plus the age shift learned on the deals open then
    assert replace(predictor.staleness, shift_ages=(), shifts=()) == rule and rule.max_won_age_days is not None
    at = data.data_end
    old = at - pd.Timedelta(days=rule.max_won_age_days + 30)
    deals = [{"deal_id": "old", "created_at": old.to_pydatetime(), "stage": data.meta.stages[0]},
             {"deal_id": "young", "created_at": (at - pd.Timedelta(days=2)).to_pydatetime(),
              "stage": data.meta.stages[0]}]
    compiled = CompiledPredictor.compile(predictor)
    scored = compiled.score_arrays(payload_arrays(deals, predictor.meta).arrays, at)
    body = json.loads(score_response_json(1, at, shape_scores(scored, [d["deal_id"] for d in deals], {}, 1)))
    got = {d["deal_id"]: (d["stale"], d["stale_reason"]) for d in body["deals"]}
    assert got["young"] == (False, None)
    assert got["old"][0] is True
    assert got["old"][1] == f"open {rule.max_won_age_days + 30:.0f} days; no won deal took longer than " \
                            f"{rule.max_won_age_days:.0f} days"
    # a predictor pickled before the rule existed has no flags, never an error
    bare = replace(predictor, staleness=None)
    assert not bare.score(data, at)["stale"].any()
