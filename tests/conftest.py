"""Shared fixtures: the real bundled models, loaded once per session, and the real audio in tests/data."""

import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent
DATA = Path(__file__).parent / "data"
SAMPLE = Path(__file__).parents[1] / "src" / "asrflow" / "samples" / "jfk.flac"
JFK_TEXT = (
    "And so, my fellow Americans, ask not what your country can do for you; ask what you can do for your country."
)


# Under pytest-xdist (make test: a worker per core) each worker computes on one thread: the workers are the
# parallelism, and models that each took every core would wait on each other's threads (asrflow, torch and
# OpenMP read OMP_NUM_THREADS; backends/workers.py).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# as in an activated venv (and as `make test` runs): its bin/ comes first on PATH, for this process and its children
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture(scope="session", autouse=True)
def asrflow_home(tmp_path_factory):
    """Keep converted models and MLflow stores of the test run out of the user's home."""
    home = os.environ.get("ASRFLOW_TEST_HOME") or str(tmp_path_factory.mktemp("asrflow-home"))
    # pytest-xdist's workers share the converted models (each built once, by whichever worker asks first:
    # models.build_once holds across processes), and so do make test's two runs (ASRFLOW_TEST_MODELS); each
    # keeps its own MLflow stores
    shared = os.environ.get("ASRFLOW_TEST_MODELS") or (
        os.environ.get("PYTEST_XDIST_WORKER") and tmp_path_factory.getbasetemp().parent / "asrflow-models"
    )
    if shared and not os.environ.get("ASRFLOW_TEST_HOME"):
        for name in ("models", "digests"):
            (Path(shared) / name).mkdir(parents=True, exist_ok=True)
            (Path(home) / name).symlink_to(Path(shared) / name)
    os.environ["ASRFLOW_HOME"] = home
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return Path(home)


def pytest_sessionfinish(session, exitstatus):
    session.config.asrflow_exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """A pytest run without workers ends with its result, before the interpreter tears down: C++ libraries with
    threads of their own (OpenVINO, CTranslate2, torch), loaded in this process by in-process servers, can crash
    in their static destructors while daemon threads still hold them (CI, once: a segfault after the hostile test
    had passed, failing make test). The product's own processes exit normally; their tests check their exit codes."""
    status = getattr(config, "asrflow_exit_status", None)
    if status is None or hasattr(config, "workerinput") or config.getoption("numprocesses", default=None):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def pytest_runtest_setup(item):
    """A test marked `alone` holds a wall-clock bound that other tests' load would break: `make test` runs those
    after the others, by themselves (`pytest -m alone`). Among pytest-xdist's workers it would be measured under
    their load: skipped there (a failure under CI, where nothing may be skipped)."""
    if item.get_closest_marker("alone") and os.environ.get("PYTEST_XDIST_WORKER"):
        message = "measured with no other test running: run it without -n (make test runs it after the others)"
        (pytest.fail if os.environ.get("CI") else pytest.skip)(message)


@pytest.fixture(scope="session")
def corpus():
    """The dev corpus: (path, reference text) pairs."""
    rows = [json.loads(line) for line in (DATA / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [(DATA / r["audio"], r["text"]) for r in rows]


@functools.cache
def loaded(model: str, backend: str):
    """A model loaded once for the run, for whichever test asks first."""
    from asrflow import load_transcriber

    return load_transcriber(model, backend=backend)


@pytest.fixture(scope="session")
def ct2_transcriber():
    return loaded("bundled:tiny.en", "ctranslate2")


@pytest.fixture(scope="session")
def hf_transcriber():
    return loaded("bundled:tiny.en", "transformers")


@pytest.fixture(scope="session")
def ct2_base():
    """bundled:base (multilingual)."""
    return loaded("bundled:base", "ctranslate2")


@pytest.fixture(scope="session")
def hf_base():
    return loaded("bundled:base", "transformers")


@pytest.fixture(scope="session", params=["ctranslate2", "transformers"])
def transcriber(request):
    return loaded("bundled:tiny.en", request.param)


@pytest.fixture(scope="session")
def short_call(tmp_path_factory):
    """conversation-2's first four turns (agent, caller, agent, caller: 22 s, cut in the pause before the fifth) as
    Ogg Opus: for the tests of how speakers reach each edge. Diarization's error is measured on the whole
    conversations (test_diarize)."""
    return excerpt(DATA / "conversation-2.ogg", 0, 22.25, tmp_path_factory.mktemp("calls") / "call.ogg")


def excerpt(source: Path, start: float, end: float, path: Path) -> Path:
    """`source` from `start` to `end` seconds, encoded as `path`'s extension names (flac, ogg...)."""
    from asrflow.audio import decode_audio
    from asrflow.encoding import encode_audio

    encode_audio(decode_audio(source)[int(start * 16000) : int(end * 16000)], path.suffix[1:], file=path)
    return path


def made_once(name: str, make) -> bytes:
    """`make()`'s bytes, kept under `name` for the rest of make test's run (its two pytest runs and their workers
    share ASRFLOW_TEST_MODELS); made anew where there is no such folder."""
    folder = os.environ.get("ASRFLOW_TEST_MODELS")
    if not folder:
        return make()
    path = Path(folder) / "made" / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{name}.{os.getpid()}")
        partial.write_bytes(make())
        partial.replace(path)  # whole or not at all, whichever worker finishes first
    return path.read_bytes()


def cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`asrflow ARGS` run in this process (Typer's runner): its exit status, stdout and stderr, as a run in a process
    of its own would give them, without starting Python and importing asrflow again. Tests of what only a process
    shows (signals, a terminal, a closed pipe, the environment) run `asrflow` itself."""
    from typer.testing import CliRunner

    from asrflow import cli_audio, cli_models, cli_serve  # noqa: F401 - they add their commands to the app
    from asrflow.cli import app

    args, environ, saved = [str(a) for a in args], dict(os.environ), mlflow_state()
    try:
        result = CliRunner().invoke(app, args, env=env, catch_exceptions=False)
    finally:  # what the run set (--debug sets ASRFLOW_DEBUG, MLflow its URIs and experiment) ends with it, as with a process
        os.environ.clear()
        os.environ.update(environ)
        mlflow_state(saved)
    return subprocess.CompletedProcess(["asrflow", *args], result.exit_code, result.stdout, result.stderr)


# MLflow's state of this process that a run sets (set_tracking_uri, set_registry_uri, set_experiment), and asrflow's
# record of the registry it set: module -> name
MLFLOW_STATE = {
    "mlflow.tracking._tracking_service.utils": "_tracking_uri",
    "mlflow.tracking._model_registry.utils": "_registry_uri",
    "mlflow.tracking.fluent": "_active_experiment_id",
    "asrflow.registry": "_REGISTRY_SET_HERE",
}


def mlflow_state(restore: dict | None = None) -> dict:
    """MLflow's URIs and active experiment as this process holds them; with `restore`, set back to those (a
    module not imported before the run goes back to holding none). A run against another store
    (MLFLOW_TRACKING_URI in `env`) would otherwise leave this process's later MLflow calls pointed at it."""
    if restore is None:
        return {
            m: getattr(sys.modules[m], name, None) if m in sys.modules else None for m, name in MLFLOW_STATE.items()
        }
    for module, name in MLFLOW_STATE.items():
        if module in sys.modules:
            setattr(sys.modules[module], name, restore[module])
    return restore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen | None = None, seconds: float = 120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # not yet ready (503) or not yet listening
    raise TimeoutError(url)


def start(args: list, url: str, env: dict, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        wait_until_up(url, process)
    except Exception:
        process.kill()
        raise
    return process


def stop(process: subprocess.Popen):
    os.killpg(process.pid, 15)
    process.wait(timeout=30)


def environment(**extra) -> dict:
    """This process's environment for a child, less the registry URI that MLflow exported when this process
    set its own (a child follows its MLFLOW_TRACKING_URI)."""
    return {**{k: v for k, v in os.environ.items() if k != "MLFLOW_REGISTRY_URI"}, **extra}


@pytest.fixture(scope="session")
def served_process(tmp_path_factory):
    """The one real `asrflow serve` process of the run, shared by the tests that drive a server over a socket as a
    client does (the openai client's audio and realtime APIs): its URL, process and log (stderr). No API key, a 2 MB
    upload limit. A server with other settings runs in this process (serve_in_process)."""
    log = tmp_path_factory.mktemp("served") / "server.log"
    port = free_port()
    with open(log, "ab") as stderr:
        args = [BIN / "asrflow", "serve", "bundled:tiny.en", "--port", str(port), "--max-upload-mb", "2"]
        process = start(args, f"http://127.0.0.1:{port}/ready", environment(), stderr)
    yield f"http://127.0.0.1:{port}", process, log
    stop(process)


@contextlib.contextmanager
def serve_in_process(transcriber, **config):
    """`asrflow serve`'s app, in this process on a real socket (uvicorn in a thread), answering with a model the
    tests already loaded: real HTTP without a server process to start."""
    import uvicorn

    from asrflow.server import ServerConfig, create_app

    port = free_port()
    app = create_app(ServerConfig(**config), transcriber=transcriber)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/ready", seconds=60)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
