"""Shared fixtures (real MLflow tracking stores for the tracking and e2e tests) and the
`slow` tier: `make test-fast` runs `pytest -m "not slow"`, `make test` runs everything."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest
from processes import free_port, stop_process_group

TESTS = Path(__file__).resolve().parent

SERVER_START_TIMEOUT_S = 180  # generous: a loaded 2-core machine needs ~1 min to import MLflow

# What makes a test slow, by what it uses. Fixtures: every test that depends on one of
# these, directly or through another fixture, has its name in `item.fixturenames`.
SLOW_FIXTURES = {
    "mlflow_server": "starts `mlflow server`",
    "served": "starts `bentoml serve`",
    "serve_once": "starts `bentoml serve`",
    "server_kit": "starts `bentoml serve` on a registry of its own",
    "e2e_service": "starts `bentoml serve`",
    "trained": "trains a model with the CLI",
    "postgres_server": "starts a PostgreSQL server",
}
SLOW_FOLDERS = {"e2e": "starts real server processes", "notebooks": "executes the notebook"}
BROWSER_FILE = "browser"  # test files that render pages in headless Chromium
# Functions that fit a whole predictor (both LightGBM models, explainer, evaluation): a
# test is slow when its body or one of its fixtures calls one. The cached small predictor
# of tests/models_cache.py counts: ~10 s of CPU once, more on a busy machine.
FULL_TRAININGS = frozenset({"training.train.fit_predictor", "training.run.train",
                            "models_cache.small_train_result", "models_cache.small_predictor"})
TRAINING_MODULES = frozenset(name.rpartition(".")[0] for name in FULL_TRAININGS)


def slow_reason(item: pytest.Item) -> str | None:
    """Why `item` belongs to the slow tier, or None for the fast tier."""
    path = Path(str(item.path))
    folder = path.relative_to(TESTS).parts[0]
    if folder in SLOW_FOLDERS:
        return SLOW_FOLDERS[folder]
    if BROWSER_FILE in path.name:
        return "runs headless Chromium"
    fixtures = [SLOW_FIXTURES[name] for name in getattr(item, "fixturenames", ()) if name in SLOW_FIXTURES]
    if fixtures:
        return fixtures[0]
    trainings = sorted(set().union(*map(_called_functions, _functions_used(item))) & FULL_TRAININGS)
    return f"trains a predictor ({trainings[0]})" if trainings else None


def _functions_used(item: pytest.Item) -> list:
    """The test function and the functions of every fixture it depends on."""
    test = getattr(item, "function", None)
    info = getattr(item, "_fixtureinfo", None)
    fixtures = [d.func for defs in (info.name2fixturedefs.values() if info else ()) for d in defs]
    return [f for f in [test, *fixtures] if hasattr(f, "__code__")]


def _called_functions(function) -> set[str]:
    """Qualified names (module.name) of the functions a body names, also as `module.name`
    (a module imported inside the body is a local name: look it up among loaded modules)."""
    code = function.__code__
    names = code.co_names
    found = [function.__globals__.get(name, sys.modules.get(name)) for name in names + code.co_varnames]
    modules = [obj for obj in found if isinstance(obj, ModuleType) and obj.__name__ in TRAINING_MODULES]
    found += [getattr(module, name, None) for module in modules for name in names]
    return {_qualified_name(obj) for obj in found if callable(obj)}


def _qualified_name(obj) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', None)}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = slow_reason(item)
        if reason:
            item.add_marker(pytest.mark.slow(reason=reason))


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """A real `mlflow server` process (SQLite backend, proxied artifact folder) on a free
    local port; yields its http URI and stops it at the end of the session."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers to fork
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                pytest.fail(f"mlflow server did not become healthy at {url}:\n{tail}")
            time.sleep(0.5)
        yield url
    finally:
        stop_process_group(proc, timeout_s=15)


@pytest.fixture(scope="session")
def _migrated_mlflow_db(tmp_path_factory) -> Path:
    """An empty tracking database with MLflow's schema migrations already applied; each
    test copies it instead of migrating a new one (seconds each on a loaded machine)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def local_mlflow_uri(tmp_path, monkeypatch, _migrated_mlflow_db) -> str:
    """A fresh embedded tracking store (`sqlite:///<tmp>/mlflow.db`), set as
    MLFLOW_TRACKING_URI for the test; MLflow's process-wide URI is reset afterwards."""
    shutil.copyfile(_migrated_mlflow_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    if "mlflow" in sys.modules:
        import mlflow

        # set_tracking_uri also exports the env var; monkeypatch restores it after this
        mlflow.set_tracking_uri(None)


# ---- PostgreSQL: a real throwaway server for the store tests -------------------------

POSTGRES_ROOT = Path("/usr/lib/postgresql")  # Debian's postgresql package (`make postgres`)
POSTGRES_USER = "leadscore"
POSTGRES_START_TIMEOUT_S = 60


def _postgres_bin() -> Path:
    """The newest Debian PostgreSQL server binaries; fails (never skips) when absent."""
    found = sorted(POSTGRES_ROOT.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if not found:
        pytest.fail(f"no PostgreSQL server under {POSTGRES_ROOT}/*/bin: the store tests need one. "
                    "Run `make postgres` as root (installs Debian's postgresql) or `apt-get install postgresql`")
    return found[-1].parent


def _server_user(folder: Path) -> dict:
    """Popen arguments that run the server unprivileged: PostgreSQL refuses to run as
    root, so under root it runs as Debian's `postgres` system user, owning `folder`."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and there is no `postgres` user to run the PostgreSQL server as: "
                    "install Debian's postgresql package (`make postgres`) or run the tests as a normal user")
    os.chown(folder, account.pw_uid, account.pw_gid)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _wait_for_postgres(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + POSTGRES_START_TIMEOUT_S
    try:
        while True:
            try:
                with engine.connect():
                    return
            except sa.exc.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    pytest.fail(f"PostgreSQL did not accept connections at {url}:\n{tail}")
                time.sleep(0.2)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """A real PostgreSQL server (Debian's binaries, `initdb` in a temp folder, trust auth,
    fsync off) on a free loopback port; yields the URL of its `postgres` database as
    `postgresql+psycopg://leadscore@127.0.0.1:<port>` and removes everything at the end."""
    import signal
    import tempfile

    bin_dir = _postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="leadscore-pg-"))
    as_user = _server_user(root)
    port = free_port()
    url = f"postgresql+psycopg://{POSTGRES_USER}@127.0.0.1:{port}/postgres"
    log_path = root / "server.log"
    proc = None
    try:
        subprocess.run([str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", POSTGRES_USER, "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, **as_user)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(root / "data"), "-p", str(port),
                                     "-h", "127.0.0.1", "-k", str(root), "-F"],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **as_user)
        _wait_for_postgres(url, proc, log_path)
        yield url
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"initdb failed: {exc.stderr.decode(errors='replace')[-2000:]}")
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # fast shutdown: ends open sessions (SIGTERM waits for them)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                stop_process_group(proc, timeout_s=5)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A new empty database on the session's PostgreSQL server, dropped after the test."""
    import uuid

    import sqlalchemy as sa

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()
