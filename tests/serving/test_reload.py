"""The served model in process (serving.reload): the pin file, the swap on promotion, a
version that does not load, and the X-Model-Version header. The real-server behaviour is in
test_operations_http.py."""
from __future__ import annotations

import asyncio
import logging

import pytest

from serving import reload
from serving.loader import ConfigError, ServingConfig


def _bundle(version: int) -> reload.Served:
    return reload.Served(predictor=f"predictor {version}", model=None, batcher=None, version=version)


@pytest.fixture
def slot():
    before = reload.SLOT.served
    reload.SLOT.served = _bundle(1)
    yield reload.SLOT
    reload.SLOT.served = before


def test_the_pin_file_is_written_atomically_and_read_back(tmp_path):
    env = {}
    path = reload.pin_version(7, env)
    assert env[reload.PIN_ENV] == str(path) and reload.pinned_version(env) == 7
    reload.write_pin(path, 8)
    assert reload.pinned_version(env) == 8 and [p.name for p in path.parent.glob(f".{path.name}*")] == []
    assert reload.pinned_version({}) is None
    path.unlink()


def test_a_promotion_swaps_the_bundle_and_moves_the_pin(slot, tmp_path, caplog):
    pin = tmp_path / "pin"
    reload.write_pin(pin, 1)
    champion = {"version": 1}
    built = []
    reloader = reload.Reloader(60, lambda: champion["version"], lambda v: built.append(v) or _bundle(v), str(pin))
    assert reloader.check() is False and built == []  # nothing moved
    champion["version"] = 2
    with caplog.at_level(logging.WARNING, logger="leadscore.serving"):
        assert reloader.check() is True
    assert slot.served.version == 2 and built == [2] and pin.read_text().strip() == "2"
    assert "model reload: now serving v2 (was v1)" in caplog.text


def test_a_version_that_does_not_load_keeps_the_current_one_and_is_tried_once(slot, caplog):
    attempts = []

    def broken(version):
        attempts.append(version)
        raise ValueError("the model files of m v3 do not match the sha256 recorded at registration")

    reloader = reload.Reloader(60, lambda: 3, broken)
    with caplog.at_level(logging.ERROR, logger="leadscore.serving"):
        assert reloader.check() is False and reloader.check() is False
    assert slot.served.version == 1 and attempts == [3]
    assert "champion v3 does not load (the model files of m v3 do not match" in caplog.text


def test_every_response_names_the_version_of_the_bundle_its_request_took(slot):
    sent = []

    async def app(scope, receive, send):
        reload.SLOT.served = _bundle(2)  # a swap while this request runs ...
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-used", str(reload.in_use().version).encode())]})

    async def send(message):
        sent.append(message)

    asyncio.run(reload.ModelVersionMiddleware(app)({"type": "http"}, None, send))
    headers = dict(sent[0]["headers"])
    assert headers[b"x-model-version"] == b"1" and headers[b"x-used"] == b"1"  # ... does not change its model
    assert reload.in_use().version == 2  # the next request takes the new one


@pytest.mark.parametrize("value, expected", [("0", 0), ("5", 5), ("", 30)])
def test_the_reload_interval_setting(value, expected):
    assert ServingConfig.from_env({"LEADSCORE_MODEL_RELOAD_S": value}).reload_s == expected


def test_a_bad_reload_interval_is_one_line():
    with pytest.raises(ConfigError, match="LEADSCORE_MODEL_RELOAD_S='soon' is not a whole number"):
        ServingConfig.from_env({"LEADSCORE_MODEL_RELOAD_S": "soon"})
    with pytest.raises(ConfigError, match="LEADSCORE_MODEL_RELOAD_S must be at least 0, not -1"):
        ServingConfig.from_env({"LEADSCORE_MODEL_RELOAD_S": "-1"})
