"""The MLflow lifecycle on the real bundled model: the tutorial's steps, both flavors, registry, serving."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import pytest
from conftest import BIN, JFK_TEXT, SAMPLE, cli, environment, free_port, start, stop, wait_until_up
from mlflow.exceptions import MlflowException

from asrflow import ModelNotFoundError, flavor, load_transcriber, registry, tutorial
from asrflow.metrics import word_error_rate
from asrflow.models import resolve_model

AUDIO = SAMPLE.read_bytes()
CHECKPOINT_BYTES = (Path(resolve_model("bundled:tiny.en").location) / "model.bin").stat().st_size


def artifacts_size(model_uri: str) -> int:
    path = Path(mlflow.artifacts.download_artifacts(model_uri))
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def assert_jfk(text: str, bound: float = 0.1):
    assert word_error_rate([JFK_TEXT], [text]) < bound, text


@pytest.fixture(scope="module")
def pipeline():
    return tutorial.transcription_pipeline()


@pytest.fixture(scope="module")
def experiment():
    return registry.set_experiment()


@pytest.fixture(scope="module")
def transformers_model(pipeline, experiment):
    signature = tutorial.tutorial_signature(pipeline, AUDIO)
    with mlflow.start_run():
        return tutorial.log_transformers_model(pipeline, audio=AUDIO, signature=signature)


@pytest.fixture(scope="module")
def asrflow_model(experiment):
    with mlflow.start_run():
        return flavor.log_model(input_example=AUDIO)


def test_pipeline_and_signature(pipeline):
    assert_jfk(tutorial.check_pipeline(pipeline, AUDIO))
    assert list(pipeline.model.generation_config.alignment_heads)
    signature = tutorial.tutorial_signature(pipeline, AUDIO)
    assert signature.inputs.to_dict() == [{"type": "binary", "required": True}]
    assert signature.outputs.to_dict() == [{"type": "string", "required": True}]
    params = {p.name: p.default for p in signature.params.params}
    assert params["chunk_length_s"] == 20 and list(params["stride_length_s"]) == [5, 3]


def test_experiment_is_created_once(experiment):
    assert registry.set_experiment() == experiment
    assert mlflow.get_experiment(experiment).name == "Whisper Transcription ASR"


def test_transformers_flavor_logs_fp16_without_torchvision(transformers_model):
    assert artifacts_size(transformers_model.model_uri) <= 1.1 * CHECKPOINT_BYTES
    local = Path(mlflow.artifacts.download_artifacts(transformers_model.model_uri))
    requirements = (local / "requirements.txt").read_text()
    assert "torchvision" not in requirements and "transformers==" in requirements
    assert "\n" not in json.loads((local / "serving_input_example.json").read_text())["inputs"]


def test_transformers_flavor_loads_natively_and_as_pyfunc(transformers_model):
    native = mlflow.transformers.load_model(transformers_model.model_uri)
    from asrflow import decode_audio

    assert_jfk(native(decode_audio(AUDIO))["text"])
    model = mlflow.pyfunc.load_model(transformers_model.model_uri)
    texts = model.predict([AUDIO])
    assert isinstance(texts, list) and isinstance(texts[0], str)
    assert_jfk(texts[0])
    assert_jfk(model.predict([AUDIO], params={"chunk_length_s": 10, "stride_length_s": [2, 2]})[0], 0.25)
    with pytest.raises(MlflowException, match="chunk_length_s"):
        model.predict([AUDIO], params={"chunk_length_s": "long"})


def test_reference_only_logs_stay_small(pipeline, experiment):
    with mlflow.start_run():
        info = tutorial.log_transformers_model(pipeline, audio=AUDIO, reference_only=True)
        ours = flavor.log_model(input_example=AUDIO, reference_only=True)
    assert artifacts_size(info.model_uri) < 1_000_000
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    assert "source_model_name: openai/whisper-tiny.en" in (local / "MLmodel").read_text()
    assert artifacts_size(ours.model_uri) < 1_000_000
    assert_jfk(mlflow.pyfunc.load_model(ours.model_uri).predict([AUDIO])[0])  # the bundled package is the reference


def test_asrflow_flavor_pyfunc(asrflow_model):
    assert artifacts_size(asrflow_model.model_uri) <= 1.1 * CHECKPOINT_BYTES
    model = mlflow.pyfunc.load_model(asrflow_model.model_uri)
    texts = model.predict([AUDIO, AUDIO])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert_jfk(texts[0])
    [structured] = model.predict([AUDIO], params={"return_timestamps": True, "word_timestamps": True})
    assert isinstance(structured, dict) and structured["segments"][0]["words"][0]["end"] > 0
    [srt] = model.predict([AUDIO], params={"response_format": "srt"})
    assert srt.startswith("1\n00:00:00,000 --> ")
    with pytest.raises(MlflowException, match="task"):
        model.predict([AUDIO], params={"task": "summarize"})
    with pytest.raises(MlflowException, match="beam_size"):
        model.predict([AUDIO], params={"beam_size": "wide"})
    with pytest.raises(MlflowException, match="response_format"):
        model.predict([AUDIO], params={"response_format": "docx"})
    # outside `mlflow models serve` (which refuses it: test_scoring), MLflow's documented behaviour: a param the
    # signature lacks is dropped, with MLflow's warning, before predict sees it
    assert_jfk(model.predict([AUDIO], params={"colour": "blue"})[0])
    assert_jfk(model.predict([AUDIO], params={"language": "en"})[0])  # and the next call works


def test_logged_model_records_what_reproduces_it(asrflow_model):
    config = Path(mlflow.artifacts.download_artifacts(asrflow_model.model_uri), "MLmodel").read_text()
    for needle in ("sha256:", "backend: ctranslate2", "compute_type:", "faster-whisper:", "mlflow:"):
        assert needle in config


def test_register_alias_and_model_uris(asrflow_model, transformers_model):
    version = registry.register(asrflow_model.model_uri, "whisper-test", alias="champion")
    assert_jfk(load_transcriber("models:/whisper-test@champion").transcribe(AUDIO).text)
    assert_jfk(load_transcriber(f"models:/whisper-test/{version.version}").transcribe(AUDIO).text)
    registry.register(transformers_model.model_uri, "whisper-test-hf", alias="champion")
    hf = load_transcriber("models:/whisper-test-hf@champion")
    assert hf.backend.name == "transformers"
    assert_jfk(hf.transcribe(AUDIO).text)
    # a fresh process loads a registered asrflow model in place, from the files the registry keeps: no copy
    code = (
        "from asrflow import load_transcriber; t = load_transcriber('models:/whisper-test@champion'); "
        f"print(t.transcribe({str(SAMPLE)!r}).text); print(t.source.location); "
        "from asrflow.server import model_identity; print(model_identity('models:/whisper-test@champion'))"
    )
    # the store this process registered in, named to the child (in-process CLI runs restore the environment that
    # MLflow's set_tracking_uri writes, so a child's default could be another store than this process's)
    env = environment(MLFLOW_TRACKING_URI=mlflow.get_tracking_uri())
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert child.returncode == 0, child.stderr[-3000:]
    out = child.stdout.splitlines()
    assert_jfk(out[0])
    assert Path(out[1]).parent == registry.local_model_dir("models:/whisper-test@champion"), out[1]
    # and what the page shows still comes from the same store
    assert out[2] == str(
        {
            "model": "models:/whisper-test@champion",
            "name": "whisper-test",
            "alias": "champion",
            "version": str(version.version),
        }
    )


def test_missing_model_uri_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="no model at models:/nope@champion"):
        load_transcriber("models:/nope@champion")


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real `mlflow server` process with a SQLite backend, on loopback, without the job runner that MLflow starts
    beside a SQL store (several more processes, importing mlflow each and restarted every second): a tracking
    server, as the tests use it."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    process = start(
        [
            BIN / "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        f"http://127.0.0.1:{port}/health",
        environment(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
    )
    yield f"http://127.0.0.1:{port}"
    stop(process)


def test_cli_against_a_tracking_server(tracking_server):
    remote = {"MLFLOW_TRACKING_URI": tracking_server, "MLFLOW_REGISTRY_URI": None}
    # in this process, but for the runs whose stderr must be empty: MLflow's warnings and chatter go to the
    # process's own stderr, which only a process of its own shows
    run = lambda *a: subprocess.run(
        [BIN / "asrflow", *a],
        env=environment(MLFLOW_TRACKING_URI=tracking_server),
        capture_output=True,
        text=True,
        timeout=300,
    )
    # decoding flags given to log are saved with the model: its defaults wherever it is loaded
    logged = cli(
        "log", "--register", "whisper-remote", "--alias", "champion", "--json", "--word-timestamps", env=remote
    )
    assert logged.returncode == 0, logged.stderr
    assert json.loads(logged.stdout)["registered"] == "models:/whisper-remote/1"
    refused = cli("log", "--flavor", "transformers", "--beam-size", "2", env=remote)
    assert refused.returncode == 2 and "keeps no decoding options" in refused.stderr, refused.stderr
    english = cli("log", "--language", "de", env=remote)  # checked against the model before any run starts
    assert english.returncode == 2 and "English-only" in english.stderr, english.stderr
    again = run("log", "--flavor", "transformers")
    assert again.returncode == 0, again.stderr
    registered = run("register", "whisper-remote", "--alias", "challenger")
    assert registered.stdout.strip() == "models:/whisper-remote/2"
    assert registered.stderr == "" and again.stderr == ""  # quiet by default: no MLflow warnings or chatter
    out = cli("transcribe", SAMPLE, "--model", "models:/whisper-remote@champion", "-f", "json", env=remote)
    assert out.returncode == 0, out.stderr
    transcript = json.loads(out.stdout)
    assert_jfk(transcript["text"])
    assert transcript["segments"][0]["words"]  # the word_timestamps saved with the model
    versions = httpx.get(
        f"{tracking_server}/api/2.0/mlflow/registered-models/get", params={"name": "whisper-remote"}
    ).json()
    assert {a["alias"] for a in versions["registered_model"]["aliases"]} == {"champion", "challenger"}


@pytest.mark.parametrize("name", ["whisper-test", "whisper-test-hf"])
def test_mlflow_models_serve_accepts_the_logged_example(name, asrflow_model, transformers_model):
    """Stock `mlflow models serve`; the logged serving_input_example.json, posted unchanged."""
    if name not in {m.name for m in mlflow.search_registered_models()}:
        registry.register(
            (asrflow_model if name == "whisper-test" else transformers_model).model_uri, name, alias="champion"
        )
    uri = f"models:/{name}@champion"
    example = Path(mlflow.artifacts.download_artifacts(uri), "serving_input_example.json").read_bytes()
    port = free_port()
    process = start(
        [BIN / "mlflow", "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        f"http://127.0.0.1:{port}/ping",
        environment(MLFLOW_TRACKING_URI=registry.tracking_uri()),
    )
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            content=example,
            headers={"Content-Type": "application/json"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert_jfk(response.json()["predictions"][0], 0.15)
    finally:
        stop(process)


def test_a_registered_model_serves_from_an_environment_built_from_its_own_requirements(asrflow_model, tmp_path):
    """MLflow's container route: `mlflow models serve --env-manager uv` makes a new environment from nothing but
    the model's python_env.yaml and requirements.txt (from the package registry), and answers the logged serving
    example; a request for speakers, which a model logged without diarize does not carry the packages for, is a
    400 naming what to install. `mlflow models generate-dockerfile` (no container runtime here to build it) copies
    the model, installs its requirements in the image and serves it."""
    if "whisper-uv" not in {m.name for m in mlflow.search_registered_models()}:
        registry.register(asrflow_model.model_uri, "whisper-uv", alias="champion")
    uri = "models:/whisper-uv@champion"
    local = Path(mlflow.artifacts.download_artifacts(uri))
    example = (local / "serving_input_example.json").read_bytes()
    assert "resemblyzer" not in (local / "requirements.txt").read_text()
    env = environment(
        MLFLOW_TRACKING_URI=registry.tracking_uri(),
        MLFLOW_ENV_ROOT=str(tmp_path / "envs"),
        PATH=f"{BIN}:{os.environ['PATH']}",  # uv, a test dependency
    )
    port = free_port()
    command = ["models", "serve", "-m", uri, "--env-manager", "uv", "-h", "127.0.0.1", "-p", str(port)]
    log = tmp_path / "serve.log"  # what uv and MLflow said, shown if the environment cannot be built
    with log.open("wb") as out:
        process = subprocess.Popen(
            [BIN / "mlflow", *command], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        try:
            wait_until_up(f"http://127.0.0.1:{port}/ping", process, seconds=600)  # the environment is built first
        except (RuntimeError, TimeoutError) as e:
            raise AssertionError(log.read_text(errors="replace")[-3000:]) from e
        url = f"http://127.0.0.1:{port}/invocations"
        answer = httpx.post(url, content=example, headers={"Content-Type": "application/json"}, timeout=120)
        assert answer.status_code == 200, answer.text
        assert_jfk(answer.json()["predictions"][0], 0.15)
        speakers = httpx.post(url, json={**json.loads(example), "params": {"diarize": True}}, timeout=120)
        assert speakers.status_code == 400 and "pip install resemblyzer" in speakers.json()["message"], speakers.text
    finally:
        stop(process)
    assert any((tmp_path / "envs").iterdir())  # the environment was built for this run, not found from an earlier one

    docker = tmp_path / "docker"
    done = subprocess.run(
        [BIN / "mlflow", "models", "generate-dockerfile", "-m", uri, "-d", str(docker)], env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    dockerfile = (docker / "Dockerfile").read_text()
    assert "COPY model_dir /opt/ml/model" in dockerfile and "_install_pyfunc_deps('/opt/ml/model'" in dockerfile
    assert 'ENTRYPOINT ["python", "-c", "from mlflow.models import container as C; C._serve(' in dockerfile
    copied = docker / "model_dir"
    assert (copied / "requirements.txt").read_text() == (local / "requirements.txt").read_text()
    assert (copied / "code" / "asrflow" / "flavor.py").is_file() and (copied / "model" / "model.bin").is_file()


def test_the_flavor_is_a_real_mlflow_flavor(asrflow_model):
    local = Path(mlflow.artifacts.download_artifacts(asrflow_model.model_uri))
    import yaml

    meta = yaml.safe_load((local / "MLmodel").read_text())
    entry = meta["flavors"][flavor.FLAVOR_NAME]
    assert entry["backend"] == "ctranslate2" and entry["model_files"] == "model" and entry["asrflow_version"]
    assert entry["options"]["temperature"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert meta["flavors"]["python_function"]["loader_module"] == "asrflow.flavor"
    assert (local / "model" / "model.bin").is_file() and (local / "code" / "asrflow" / "flavor.py").is_file()
    assert meta["signature"]["outputs"] == '[{"type": "any", "required": true}]'  # text or structured, per params
    assert_jfk(flavor.load_model(asrflow_model.model_uri).transcribe(AUDIO).text)
    saved = Path(mlflow.artifacts.download_artifacts(asrflow_model.model_uri)).parent / "saved-again"
    flavor.save_model(saved, reference_only=True)
    assert_jfk(mlflow.pyfunc.load_model(str(saved)).predict([AUDIO])[0])


def test_only_asrflow_and_transformers_models_load(tmp_path):
    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    mlflow.pyfunc.save_model(tmp_path / "echo", python_model=Echo())
    with pytest.raises(ModelNotFoundError, match="not a Whisper model logged with asrflow's flavor"):
        load_transcriber(str(tmp_path / "echo"))
    # asrflow's store and an experiment of its own: MLflow's default store (./mlflow.db) and its Default
    # experiment's artifacts (./mlruns) are in the working directory, where no test may write
    registry.set_experiment("echo")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="echo", python_model=Echo())
    registry.register(info.model_uri, "echo-model", alias="live")
    assert registry.local_model_dir("models:/echo-model@live") is not None  # in place, but not taken for asrflow's
    with pytest.raises(ModelNotFoundError, match="not a Whisper model"):
        load_transcriber("models:/echo-model@live")


def test_the_files_read_in_place_are_those_mlflow_would_load(asrflow_model, monkeypatch):
    """In the same store, workspace and registry as MLflow itself: asrflow asks MLflow's client where they are."""
    registry.register(asrflow_model.model_uri, "whisper-workspace", alias="champion")
    uri = "models:/whisper-workspace@champion"

    def in_place() -> str | None:
        try:
            found = registry.local_model_dir(uri)
        except ModelNotFoundError:
            return None
        return (found / "MLmodel").read_text() if found else None

    def mlflows_own() -> str | None:
        try:
            return (Path(mlflow.artifacts.download_artifacts(uri)) / "MLmodel").read_text()
        except MlflowException:
            return None

    assert in_place() is not None and in_place() == mlflows_own()
    monkeypatch.setenv("MLFLOW_WORKSPACE", "elsewhere")
    assert in_place() == mlflows_own()
    monkeypatch.delenv("MLFLOW_WORKSPACE")
    other = f"sqlite:///{Path(registry.tracking_uri().removeprefix('sqlite:///')).parent / 'other-registry.db'}"
    mlflow.set_registry_uri(other)
    try:
        registry.use_tracking()
        assert mlflow.get_registry_uri() == other  # the user's choice stands
        assert in_place() is None and mlflows_own() is None
    finally:
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        registry.use_tracking()


def test_loading_a_transformers_model_writes_nothing_into_the_artifact_store(transformers_model):
    from asrflow.registry import local_model_dir

    registry.register(transformers_model.model_uri, "whisper-readonly", alias="champion")
    store = local_model_dir("models:/whisper-readonly@champion") or Path(
        mlflow.artifacts.download_artifacts(transformers_model.model_uri)
    )
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    assert_jfk(flavor.load_model(str(store)).transcribe(AUDIO).text)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_convert_refuses_quantized_weights(tmp_path):
    from asrflow import InvalidOptionError
    from asrflow.convert import ct2_to_transformers, transformers_to_ct2
    from asrflow.models import resolve_model, transformers_dir

    quantized = transformers_to_ct2(transformers_dir(resolve_model("bundled:tiny.en")), tmp_path / "int8", "int8")
    with pytest.raises(InvalidOptionError, match="quantized \\(int8\\) weights"):
        ct2_to_transformers(quantized, tmp_path / "back")
    assert not (tmp_path / "back").exists()
