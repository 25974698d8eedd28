"""Any registered model per request: the OpenAI `model` field and the MLflow param route to registry versions
and aliases through one `asrflow serve` (in this process), loaded on first use into an LRU (real client, real
registry)."""

import asyncio
import base64
import re
import time

import httpx
import openai
import pytest
from conftest import DATA, SAMPLE, serve_in_process


@pytest.fixture(scope="module")
def server():
    """tiny.en registered as champion (version 1) and the multilingual base as challenger (version 2), served with
    room for one model: the champion by default."""
    from asrflow.lifecycle import log

    champion = log("bundled:tiny.en", reference_only=True, register_as="whisper-ab", alias="champion")
    challenger = log("bundled:base", reference_only=True, register_as="whisper-ab", alias="challenger")
    versions = [uri.rsplit("/", 1)[1] for uri in (champion.registered, challenger.registered)]
    with serve_in_process(
        None,
        model="models:/whisper-ab@champion",
        max_models=1,
        aliases={"challenger": "models:/whisper-ab@challenger"},
    ) as url:
        yield url, versions


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0)


def loaded(client) -> set[str]:
    return {m.id for m in client.models.list().data if m.model_extra.get("loaded")}


def transcribe(client, model: str, audio: bytes, **extra):
    raw = client.audio.transcriptions.with_raw_response.create(
        model=model, file=("clip.ogg", audio), response_format="verbose_json", **extra
    )
    return raw.parse(), raw.headers


def metric(url: str, name: str, **labels) -> float:
    text = httpx.get(f"{url}/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_models_lists_registered_versions_aliases_and_bundled(client, server):
    _, (champion, challenger) = server
    ids = {m.id for m in client.models.list().data}
    assert {
        "whisper-1",
        "challenger",
        "models:/whisper-ab@champion",
        "models:/whisper-ab@challenger",
        f"models:/whisper-ab/{champion}",
        f"models:/whisper-ab/{challenger}",
        "bundled:tiny.en",
        "bundled:base",
    } <= ids
    assert client.models.retrieve("models:/whisper-ab@challenger").owned_by == "whisper-ab"
    assert loaded(client) >= {"models:/whisper-ab@champion", "whisper-1"}


def test_two_versions_answer_by_model_field_and_the_lru_keeps_one(client, server):
    url, (champion, challenger) = server
    audio = (DATA / "german.mp3").read_bytes()
    result, headers = transcribe(client, "whisper-1", audio)
    assert (
        headers["x-asrflow-model"] == "models:/whisper-ab@champion" and headers["x-asrflow-model-version"] == champion
    )
    assert result.language == "english"  # tiny.en is English-only

    result, headers = transcribe(client, "models:/whisper-ab@challenger", audio)
    assert (
        headers["x-asrflow-model"] == "models:/whisper-ab@challenger"
        and headers["x-asrflow-model-version"] == challenger
    )
    assert result.language == "german"  # base is multilingual
    # N=1: the default is pinned (never evicted), so the challenger is unloaded once it has answered
    assert loaded(client) == {"models:/whisper-ab@champion", "whisper-1"}

    _, headers = transcribe(client, "challenger", SAMPLE.read_bytes())  # a configured alias
    assert headers["x-asrflow-model"] == "models:/whisper-ab@challenger"
    _, headers = transcribe(client, "whisper-1", SAMPLE.read_bytes())
    assert loaded(client) == {"models:/whisper-ab@champion", "whisper-1"}
    assert metric(url, "asrflow_model_requests_total", model="models:/whisper-ab@challenger", version=challenger) >= 2
    assert metric(url, "asrflow_model_loads_total", model="models:/whisper-ab@champion") == 1  # never reloaded


def test_concurrent_first_requests_load_a_model_once(server):
    url, (_, challenger) = server
    model = f"models:/whisper-ab/{challenger}"
    before = metric(url, "asrflow_model_loads_total", model=model)

    async def one(client):
        return await client.audio.transcriptions.create(model=model, file=("jfk.flac", SAMPLE.read_bytes()))

    async def three():
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        return await asyncio.gather(*(one(client) for _ in range(3)))

    results = asyncio.run(three())
    assert all("country" in r.text for r in results)
    assert metric(url, "asrflow_model_loads_total", model=model) == before + 1


@pytest.mark.parametrize("name", ["models:/whisper-ab@nobody", "models:/no-such-model/1", "gpt-4o-transcribe", "/etc"])
def test_an_unknown_model_is_a_404_in_openai_shape(client, name):
    with pytest.raises(openai.NotFoundError) as e:
        client.audio.transcriptions.create(model=name, file=("jfk.flac", SAMPLE.read_bytes()))
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    assert "/v1/models" in e.value.body["message"]


def test_mlflow_scoring_param_model(server):
    url, (_, challenger) = server
    audio = base64.b64encode(SAMPLE.read_bytes()).decode()
    response = httpx.post(
        f"{url}/invocations", json={"inputs": [audio], "params": {"model": "challenger"}}, timeout=120
    )
    assert response.status_code == 200 and "country" in response.json()["predictions"][0]
    assert response.headers["x-asrflow-model-version"] == challenger
    response = httpx.post(f"{url}/invocations", json={"inputs": [audio], "params": {"model": "models:/whisper-ab@x"}})
    assert response.status_code == 404 and response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    response = httpx.post(f"{url}/invocations", json={"inputs": [audio], "params": {"model": 3}})
    assert response.status_code == 400 and "model" in response.json()["message"]


def test_an_idle_model_is_unloaded_after_its_ttl_but_not_the_default():
    from asrflow.server.pool import ModelPool

    pool = ModelPool("bundled:tiny.en", None, max_models=2, ttl_s=1.0)
    pool.load("bundled:tiny.en").result()
    asyncio.run(pool.get("bundled:base"))
    assert {s.name for s in pool.loaded()} == {"bundled:tiny.en", "bundled:base"}
    deadline = time.monotonic() + 10
    while len(pool.loaded()) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [s.name for s in pool.loaded()] == ["bundled:tiny.en"]
