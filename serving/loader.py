"""Champion -> predictor, and the service's settings from the environment.

Two places a predictor comes from: a built Bento carries the champion in its BentoML
model store (`export_champion` puts it there before `bentoml build`); run from source,
the service loads the `champion` alias from the MLflow registry (`MLFLOW_TRACKING_URI`,
the embedded store otherwise).

    python -m serving.loader export    # champion -> BentoML model store, then `bentoml build`

Start-up (`deployment_check`, before the workers start): the champion is resolved once,
its files checked against the sha256 recorded at registration and loaded; any failure is
one line and exit code 2 (never a worker crash-looping). The version is pinned for the
workers and followed on promotion (`serving.reload`).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from features.errors import LeadscoreError

BENTO_MODEL = "leadscore-champion"
VERSION_LABEL = "mlflow_version"


class ConfigError(LeadscoreError, ValueError):
    """A LEADSCORE_* setting that cannot be used."""


@dataclass(frozen=True)
class ServingConfig:
    model_name: str = "leadscore"
    max_batch: int = 1000
    batch_deals: int = 1000  # concurrent requests merged up to this many deals; 1 = never merged
    log_level: str = "INFO"
    max_body_bytes: int = 16 * 2**20
    tier_hot: float | None = None  # None: keep the thresholds the model was trained with
    tier_warm: float | None = None
    data_dir: str | None = None  # canonical tables for /forecast and /pipeline
    timeout_s: int = 30  # a /forecast or /pipeline answer after this is a 503 with Retry-After
    heavy_concurrency: int = 2  # /forecast and /pipeline computed at once (each endpoint)
    heavy_queue: int = 4  # more of them waiting; beyond: 503 at once with Retry-After
    forecast_budget: int = 4_000_000  # groups x periods x simulations of one /forecast
    header_timeout_s: int = 10  # a connection that has not sent its request headers by then is closed
    strict_keys: bool = False  # an unknown deal key is a 422 instead of a warning on the deal
    data_check_s: float = 0.0  # LEADSCORE_DATA is checked for a new ingest at most this often (0: every request)
    source_mapping: str | None = None  # a mapping whose export (e.g. a SQL query) is ingested into data_dir ...
    source_refresh_s: int = 300  # ... every this many seconds (serving.source_refresh)
    # model version: reload on promotion (serving.reload)
    reload_s: int = 30  # how often a worker reads the champion alias; 0: never (keep the pinned version)

    @classmethod
    def from_env(cls, env=None) -> "ServingConfig":
        env = os.environ if env is None else env
        cfg = cls(model_name=env.get("LEADSCORE_MODEL_NAME", "leadscore").strip() or "leadscore",
                  max_batch=_int(env, "LEADSCORE_MAX_BATCH", 1000),
                  batch_deals=_int(env, "LEADSCORE_BATCH_DEALS", 1000),
                  log_level=_log_level(env),
                  max_body_bytes=_int(env, "LEADSCORE_MAX_BODY_BYTES", 16 * 2**20),
                  tier_hot=_float(env, "LEADSCORE_TIER_HOT"), tier_warm=_float(env, "LEADSCORE_TIER_WARM"),
                  data_dir=env.get("LEADSCORE_DATA", "").strip() or None,
                  timeout_s=_int(env, "LEADSCORE_TIMEOUT_S", 30),
                  heavy_concurrency=_int(env, "LEADSCORE_HEAVY_CONCURRENCY", 2),
                  heavy_queue=_int(env, "LEADSCORE_HEAVY_QUEUE", 4),
                  forecast_budget=_int(env, "LEADSCORE_FORECAST_BUDGET", 4_000_000),
                  header_timeout_s=_int(env, "LEADSCORE_HEADER_TIMEOUT_S", 10),
                  strict_keys=_flag(env, "LEADSCORE_STRICT_KEYS"),
                  data_check_s=_seconds(env, "LEADSCORE_DATA_CHECK_S"),
                  source_mapping=env.get("LEADSCORE_SOURCE_MAPPING", "").strip() or None,
                  source_refresh_s=_int(env, "LEADSCORE_SOURCE_REFRESH_S", 300),
                  reload_s=_int(env, "LEADSCORE_MODEL_RELOAD_S", 30, minimum=0))
        if cfg.source_mapping is not None:
            if cfg.data_dir is None:
                raise ConfigError("LEADSCORE_SOURCE_MAPPING needs LEADSCORE_DATA: the folder the source is ingested "
                                  "into (run `leadscore ingest --mapping FILE --out DIR` once, then serve DIR)")
            if not os.path.isfile(cfg.source_mapping):
                raise ConfigError(f"LEADSCORE_SOURCE_MAPPING={cfg.source_mapping}: no such mapping file")
        hot, warm = cfg.tier_hot, cfg.tier_warm
        if hot is not None and warm is not None and warm > hot:
            raise ConfigError(f"LEADSCORE_TIER_WARM ({warm}) is above LEADSCORE_TIER_HOT ({hot}): warm must be lower")
        return cfg


def _int(env, name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def _seconds(env, name: str) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise ConfigError(f"{name} must be 0 or more seconds, not {raw}")
    return value


def _flag(env, name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r} is not a switch: use 1 (on) or 0 (off)")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(env) -> str:
    raw = env.get("LEADSCORE_LOG_LEVEL", "").strip().upper() or "INFO"
    if raw not in LOG_LEVELS:
        raise ConfigError(f"LEADSCORE_LOG_LEVEL={raw!r} is not one of {', '.join(LOG_LEVELS)}")
    return raw


def _float(env, name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number between 0 and 1") from None
    if not 0 <= value <= 1:
        raise ConfigError(f"{name} must be between 0 and 1, not {value}")
    return value


def load_served_predictor(config: ServingConfig, from_bento: bool = False, version: int | None = None):
    """(predictor, model version) with the configured tier thresholds applied: the
    champion of the Bento's model store, or `version` (default: the champion) of the MLflow
    registry, its files checked first. With a data folder for /forecast and /pipeline,
    refuses (ModelDataMismatch) a model trained on another dataset."""
    from training.registry import check_model_data
    from training.registry import load_predictor as load_registered

    predictor, version = _from_bento_store() if from_bento else load_registered(config.model_name, version)
    if config.data_dir is not None:
        check_model_data(config.model_name, version, _dataset_meta(config.data_dir), config.data_dir,
                         recorded=predictor.meta)
    tiers = predictor.tiers
    tiers.hot = tiers.hot if config.tier_hot is None else config.tier_hot
    tiers.warm = tiers.warm if config.tier_warm is None else config.tier_warm
    if tiers.warm > tiers.hot:
        raise ConfigError(f"tier thresholds out of order: warm {tiers.warm} > hot {tiers.hot}; "
                          f"set LEADSCORE_TIER_HOT and LEADSCORE_TIER_WARM")
    return predictor, version


def _dataset_meta(data_dir: str):
    """The stage order and attributes of the canonical tables in `data_dir` (meta.json)."""
    import json
    from pathlib import Path

    from features.schema import DatasetMeta

    path = Path(data_dir) / "meta.json"
    if not path.exists():
        raise ConfigError(f"LEADSCORE_DATA={data_dir}: {path} not found; run `leadscore ingest` for this folder")
    return DatasetMeta.from_dict(json.loads(path.read_text()))


def deployment_check(config: ServingConfig, from_bento: bool = False) -> int:
    """Before the workers start: the champion loads (files checked against their sha256),
    belongs with LEADSCORE_DATA and has usable tiers; its version is pinned for the workers.
    Raises NoChampion, ArtifactsCorrupt, RegistryUnavailable, ModelDataMismatch (one line each)."""
    import gc

    from serving.reload import pin_version

    predictor, version = load_served_predictor(config, from_bento)
    del predictor  # the workers load their own copy; this process only supervises them
    gc.collect()
    if not from_bento:
        pin_version(version)
    return version


def build_served(config: ServingConfig, version: int | None = None, from_bento: bool = False):
    """A `serving.reload.Served` bundle for `version` (default: the pinned one, else the
    champion): loaded, checked, compiled and warmed, ready to swap in."""
    from serving.batching import ScoreBatcher
    from serving.reload import Served, pinned_version
    from training.compiled import CompiledPredictor

    version = version if version is not None or from_bento else pinned_version()
    predictor, version = load_served_predictor(config, from_bento, version)
    model = CompiledPredictor.compile(predictor)  # the lookup tables requests need, built once
    model.warm()
    return Served(predictor=predictor, model=model, batcher=ScoreBatcher(model, max_deals=config.batch_deals),
                  version=version)


def _from_bento_store():
    import bentoml

    from training.pyfunc import unwrap

    try:
        stored = bentoml.models.get(f"{BENTO_MODEL}:latest")
        return unwrap(bentoml.mlflow.load_model(stored)), int(stored.info.labels[VERSION_LABEL])
    except Exception as exc:  # noqa: BLE001 - a Bento whose model does not load: one line, not a crash loop
        raise ConfigError(f"the model packed in this Bento does not load ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:200]}); rebuild it with `make bento`") from None


def export_champion(model_name: str = "leadscore"):
    """Copy the registry's champion into the BentoML model store (for `bentoml build`)."""
    import bentoml
    import mlflow

    from training.registry import require_champion
    from training.tracking import tracking_uri

    version = require_champion(model_name)
    mlflow.set_tracking_uri(tracking_uri())
    return bentoml.mlflow.import_model(BENTO_MODEL, f"models:/{model_name}/{version}",
                                       labels={VERSION_LABEL: str(version), "registered_model": model_name})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["export"]:
        print("usage: python -m serving.loader export [MODEL_NAME]", file=sys.stderr)
        return 2
    try:
        stored = export_champion(*(argv[1:2] or ["leadscore"]))
    except LeadscoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{stored.tag} (MLflow version {stored.info.labels[VERSION_LABEL]}); now run `bentoml build`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
