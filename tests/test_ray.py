"""`asrflow serve --ray`: the same server as Ray Serve deployments on a local Ray cluster, with the real `openai`
client; without the extra, one line naming it."""

import concurrent.futures
import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import websockets.sync.client as ws
from conftest import BIN, SAMPLE, cli, environment, free_port, serve_in_process, start, stop


def replicas_running() -> int:
    found = subprocess.run(["pgrep", "-fc", "ServeReplica:asrflow"], capture_output=True, text=True, check=False)
    return int(found.stdout.strip() or 0)


def until(condition, seconds: float) -> float:
    """Seconds until `condition()` held (at most `seconds`)."""
    started = time.monotonic()
    while not condition() and time.monotonic() - started < seconds:
        time.sleep(0.5)
    return time.monotonic() - started


def test_replicas_scale_with_load_and_answer_as_the_standalone_server_does(ct2_transcriber):
    """One replica, autoscaling up to two on ongoing requests: four clients at once bring the second, whose
    answers are the standalone server's text; idle, the deployment goes back to one. Every protocol of the one
    server goes through Ray's proxy, and SIGTERM leaves no process behind."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve", "bundled:tiny.en", "--ray", "--port", str(port), "--api-key", "k", "--grace", "3"]
    scaling = ["--replicas", "1", "--max-replicas", "2", "--target-ongoing-requests", "1"]
    server = start([BIN / "asrflow", *args, *scaling], f"{url}/ready", environment(), stderr=subprocess.DEVNULL)
    try:
        assert replicas_running() == 1
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=120)
        texts, loaded = [], threading.Event()

        def load():
            while not loaded.is_set():
                texts.append(client.audio.transcriptions.create(model="whisper-1", file=SAMPLE).text)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            clients = [pool.submit(load) for _ in range(4)]
            until(lambda: replicas_running() == 2, 90)
            answered = len(texts)
            until(lambda: len(texts) >= answered + 4, 60)  # answers with two replicas up
            loaded.set()
            [c.result() for c in clients]
        assert replicas_running() == 2
        with serve_in_process(ct2_transcriber) as standalone:
            alone = openai.OpenAI(base_url=f"{standalone}/v1", api_key="unused", max_retries=0)
            expected = alone.audio.transcriptions.create(model="whisper-1", file=SAMPLE).text
        assert len(texts) >= answered + 4 and set(texts) == {expected}
        # every protocol of the one server: the key, /v1/models, the page, /invocations, the realtime WebSocket
        assert httpx.post(f"{url}/v1/audio/transcriptions", files={"file": SAMPLE.read_bytes()}).status_code == 401
        assert "whisper-1" in {m.id for m in client.models.list().data}
        assert httpx.get(f"{url}/").status_code == 200
        scored = httpx.post(
            f"{url}/invocations",
            json={"inputs": [SAMPLE.read_bytes().hex()]},
            headers={"Authorization": "Bearer k"},
            timeout=120,
        )
        assert scored.status_code == 400 and "base64" in scored.text  # the app's own answer, naming the encoding
        with ws.connect(
            f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription", additional_headers={"Authorization": "Bearer k"}
        ) as session:
            assert json.loads(session.recv(timeout=30))["type"] == "session.created"
        until(lambda: replicas_running() == 1, 120)  # idle: back to one
        assert replicas_running() == 1
    finally:
        started = time.monotonic()
        stop(server)
        stopped = time.monotonic() - started
    assert stopped < 30 and replicas_running() == 0  # --grace, then the local cluster goes with it


def test_without_the_extra_ray_is_one_line_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # an environment without asrflow[ray]
    done = cli("serve", "bundled:tiny.en", "--ray")
    assert done.returncode != 0 and "pip install 'asrflow[ray]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--replicas", "2"], "go with --ray"),
        (["--ray", "--replicas", "3", "--max-replicas", "2"], "--max-replicas"),
        (["--port", "99999"], "65535"),  # a port no socket takes: refused as a flag, not an OverflowError
    ],
)
def test_replica_flags_that_make_no_sense_are_refused(flags, named):
    done = cli("serve", "bundled:tiny.en", *flags)
    assert done.returncode != 0 and named in done.stderr


def test_a_port_in_use_is_refused_before_any_cluster_starts():
    """Ray Serve's proxy binds with SO_REUSEPORT: without the check, a second server would share the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = cli("serve", "bundled:tiny.en", "--ray", "--port", str(taken.getsockname()[1]))
    assert done.returncode != 0 and "choose another --port" in done.stderr and replicas_running() == 0
