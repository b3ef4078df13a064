"""LEADSCORE_DATA as the service sees it (serving/data_source.py): read once, read again
after an ingest writes the folder, at most as often as the check interval allows, and
refused when the check (the model's dataset) refuses it."""
from __future__ import annotations

import pandas as pd
import pytest

from features.dataset import read_dataset, write_dataset
from features.errors import LeadscoreError
from features.synthetic import generate_data
from serving.data_source import DataSource, folder_stamp
from training.forecast.track_record import dataset_fingerprint


@pytest.fixture(scope="module")
def data():
    return generate_data(300, seed=2, months=6)[0]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_read_once_until_an_ingest_changes_the_folder(tmp_path, data):
    folder = write_dataset(data, tmp_path / "data")
    source = DataSource(folder)
    first = source.current()
    assert source.current() is first and source.reads == 1
    assert first.fingerprint == dataset_fingerprint(read_dataset(folder))
    used = first.used()
    assert used["data_end"] == data.data_end.isoformat() and used["source"] == str(folder)
    assert pd.Timestamp(used["loaded_at"]) <= pd.Timestamp.now(tz="UTC").tz_localize(None)

    later = data.deals.iloc[:-20].copy()  # a new ingest: other rows, same dataset
    write_dataset(type(data)(deals=later, meta=data.meta, stage_events=data.stage_events), folder)
    second = source.current()
    assert source.reads == 2 and second.fingerprint != first.fingerprint
    assert len(second.data.deals) == len(data.deals) - 20


def test_the_check_interval_spaces_the_checks(tmp_path, data):
    folder = write_dataset(data, tmp_path / "data")
    clock = Clock()
    source = DataSource(folder, check_every_s=60, clock=clock)
    first = source.current()
    write_dataset(type(data)(deals=data.deals.iloc[:-5].copy(), meta=data.meta), folder)
    clock.now = 59
    assert source.current() is first  # not looked at yet
    clock.now = 61
    assert source.current().fingerprint != first.fingerprint and source.reads == 2


def test_the_stamp_changes_with_each_write(tmp_path, data):
    folder = write_dataset(data, tmp_path / "data")
    before = folder_stamp(folder)
    assert folder_stamp(folder) == before and len(before) >= 3
    write_dataset(data, folder)  # the same rows again: a new folder all the same
    assert folder_stamp(folder) != before


def test_a_refused_or_missing_folder_raises_and_is_tried_again(tmp_path, data):
    source = DataSource(tmp_path / "nowhere")
    with pytest.raises(LeadscoreError, match="deals.parquet not found"):
        source.current()
    write_dataset(data, tmp_path / "nowhere")
    assert source.current().data.deals.shape[0] == len(data.deals)

    def refuse(_data):
        raise LeadscoreError("another dataset")

    with pytest.raises(LeadscoreError, match="another dataset"):
        DataSource(tmp_path / "nowhere", check=refuse).current()


def test_the_service_refuses_a_re_read_folder_holding_another_dataset(tmp_path, data):
    """The service's check (`LeadScoreService._check_data`, a 409 on /forecast and /pipeline):
    new rows of the model's dataset pass, another dataset in the folder is refused naming both."""
    from functools import partial
    from types import SimpleNamespace

    from serving.service import LeadScoreService
    from training.registry import ModelDataMismatch

    folder = write_dataset(data, tmp_path / "data")
    service = SimpleNamespace(config=SimpleNamespace(model_name="crm", data_dir=folder), version=3,
                              predictor=SimpleNamespace(meta=data.meta))
    source = DataSource(folder, check=partial(LeadScoreService.inner._check_data, service))
    assert len(source.current().data.deals) == len(data.deals)
    write_dataset(type(data)(deals=data.deals.iloc[:-5].copy(), meta=data.meta), folder)  # new rows: fine
    assert len(source.current().data.deals) == len(data.deals) - 5
    other = type(data.meta)(stages=["lead", "interested"], attributes={}, name="xed")
    write_dataset(type(data)(deals=data.deals.copy(), meta=other), folder)
    with pytest.raises(ModelDataMismatch) as refused:
        source.current()
    assert str(refused.value).startswith(f"model 'crm v3' was trained on dataset '{data.meta.name}' and {folder} "
                                         f"holds dataset 'xed': they do not belong together (stages ")
