"""MLflow's scoring protocol on both servers, for the same registered asrflow model: stock `mlflow models serve`
(at MLflow's quietest log level) and `asrflow serve`. Bad params are a 400 naming them, never a 500 or an echo."""

import base64
import json
import random
import uuid

import httpx
import pytest
from conftest import BIN, DATA, SAMPLE, environment, free_port, serve_in_process, start, stop

from asrflow import registry
from asrflow.lifecycle import log

AUDIO = base64.b64encode(SAMPLE.read_bytes()).decode()


@pytest.fixture(scope="module")
def stock_server():
    """`mlflow models serve` (a real process: the server under test) for a registered asrflow model."""
    name = f"whisper-scoring-{uuid.uuid4().hex[:6]}"
    log("bundled:tiny.en", register_as=name, alias="champion")
    env = environment(MLFLOW_TRACKING_URI=registry.tracking_uri(), MLFLOW_LOGGING_LEVEL="ERROR")
    port = free_port()
    command = ["mlflow", "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local"]
    stock = start(
        [BIN / command[0], *command[1:], "-h", "127.0.0.1", "-p", str(port)], f"http://127.0.0.1:{port}/ping", env
    )
    yield f"http://127.0.0.1:{port}"
    stop(stock)


@pytest.fixture(scope="module")
def our_server(ct2_transcriber):
    with serve_in_process(ct2_transcriber) as url:
        yield url


SERVERS = [pytest.param("asrflow serve", marks=pytest.mark.check), "mlflow models serve"]


@pytest.fixture(params=SERVERS)
def server(request):
    """Each test runs against both servers: `asrflow serve` (in this process) and stock `mlflow models serve`."""
    return request.param, request.getfixturevalue("our_server" if request.param == "asrflow serve" else "stock_server")


CLIENT = httpx.Client()  # one client, its connections kept alive: a client (and its TLS context) a request is slow


def invoke(url: str, body, timeout: float = 120) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return CLIENT.post(
        f"{url}/invocations", content=content, headers={"Content-Type": "application/json"}, timeout=timeout
    )


@pytest.mark.parametrize(
    "params, names",
    [
        ({"colour": "blue"}, "colour"),
        ({"beam_size": "five"}, "beam_size"),
        ({"temperature": "hot"}, "temperature"),
        ({"language": 5}, "language"),
        ({"language": "xx"}, "language"),
        ({"beam_size": 1_000_000_000}, "beam_size"),
        ({"initial_prompt": {"a": 1}}, "initial_prompt"),
        ({"chunk_length_s": None}, "chunk_length_s"),
    ],
)
def test_bad_params_are_a_400_naming_them(server, params, names):
    response = invoke(server[1], {"inputs": [AUDIO], "params": params})
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert names in response.json()["message"], response.text[:300]
    assert len(response.content) < 2000, "the payload was echoed back"


@pytest.mark.parametrize(
    "body",
    [
        ('{"inputs": ["' + "A" * 200_000 + "SECRET").encode(),  # cut short: not JSON
        ('{"inputs": ["' + "A" * 20_000 + 'SECRET"]}').encode() + b"\xff",  # not UTF-8
    ],
    ids=["not JSON", "not UTF-8"],
)
def test_a_body_that_is_not_json_is_a_400_that_does_not_echo_it(server, body):
    response = invoke(server[1], body)
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert "SECRET" not in response.text and len(response.content) < 2000, response.text[:300]


def test_params_from_json_are_converted_and_used(server):
    params = {"beam_size": 2, "word_timestamps": True, "return_timestamps": True}
    response = invoke(server[1], {"inputs": [AUDIO], "params": params})
    assert response.status_code == 200, response.text[:300]
    [transcript] = response.json()["predictions"]
    assert transcript["segments"][0]["words"]


def malformed_bodies(count: int, seed: int = 7):
    """Random mixtures of wrong shapes, types and values for every part of a scoring request."""
    rng = random.Random(seed)
    junk = [None, 0, -1, 1e308, "", "x" * 300, "!!!", [], {}, [[]], {"a": 1}, True, "AAAA", AUDIO[:500]]
    keys = ["inputs", "instances", "dataframe_split", "dataframe_records", "params", "colour"]
    params = [
        "beam_size",
        "temperature",
        "language",
        "task",
        "batch_size",
        "chunk_length_s",
        "response_format",
        "return_timestamps",
        "word_timestamps",
        "stride_length_s",
        "initial_prompt",
        "nonsense",
    ]
    for i in range(count):
        kind = i % 4
        if kind == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        elif kind == 1:
            yield {rng.choice(keys): rng.choice(junk) for _ in range(rng.randrange(1, 3))}
        elif kind == 2:
            yield {
                "inputs": [AUDIO],
                "params": {rng.choice(params): rng.choice(junk) for _ in range(rng.randrange(1, 4))},
            }
        else:
            yield {
                "dataframe_split": {
                    "columns": rng.choice([["audio"], None, 5]),
                    "data": rng.choice([[[rng.choice(junk)]], [], "x"]),
                }
            }


def test_two_hundred_malformed_requests_get_no_500_and_the_server_stays_up(server):
    name, url = server
    statuses = {}
    for i, body in enumerate(malformed_bodies(200)):
        if i % 2 == (name == "asrflow serve"):  # each server its half of the 200, as when they took turns
            status = invoke(url, body, timeout=60).status_code
            statuses[status] = statuses.get(status, 0) + 1
    assert not any(status >= 500 for status in statuses), statuses
    good = invoke(url, {"inputs": [base64.b64encode((DATA / "dev001.mp3").read_bytes()).decode()]})
    assert good.status_code == 200 and "identification card" in good.json()["predictions"][0]


def test_a_path_on_the_server_is_never_read_and_existing_and_missing_read_alike(server):
    existing, missing = str(DATA / "dev004.wav"), str(DATA / "no-such-file.wav")
    answers = [
        httpx.post(f"{server[1]}/invocations", json={"inputs": [path]}, timeout=60) for path in (existing, missing)
    ]
    assert [a.status_code for a in answers] == [400, 400], [a.text for a in answers]
    assert answers[0].json() == answers[1].json()
    message = answers[0].json()["message"]  # MLflow decodes the binary column's base64 itself, leniently
    assert ("base64" in message or "not audio" in message) and "revenue" not in answers[0].text


@pytest.mark.check
def test_an_unknown_registered_model_names_no_tracking_store(our_server):
    answer = httpx.post(f"{our_server}/invocations", json={"inputs": [AUDIO], "params": {"model": "models:/nope/1"}})
    assert answer.status_code == 404
    message = answer.json()["message"]
    assert "models:/nope/1" in message and registry.tracking_uri() not in message and "sqlite" not in message
