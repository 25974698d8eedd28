"""Hotwords (faster-whisper's: hint phrases in every window's prompt) through every edge.

dev013 says "on the bus"; tiny.en hears "on the mouse" unless it is told the word."""

import json
import shutil

import mlflow
from conftest import DATA, cli

CLIP = DATA / "dev013.mp3"


def test_hotwords_on_both_backends(transcriber):
    assert " bus" not in transcriber.transcribe(CLIP, language="en").text  # "mouse", "immerse"
    assert " bus," in transcriber.transcribe(CLIP, language="en", hotwords="bus").text


def test_hotwords_from_the_cli_batch_and_mlflow_params(tmp_path):
    from asrflow import flavor, registry

    printed = cli("transcribe", str(CLIP), "--hotwords", "bus")
    assert printed.returncode == 0, printed.stderr
    assert " bus," in printed.stdout

    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(CLIP, source / "a.mp3")
    batch = cli("batch", str(source), "-o", str(tmp_path / "out"), "-f", "json", "--hotwords", "bus")
    assert batch.returncode == 0, batch.stderr
    assert " bus," in json.loads((tmp_path / "out" / "a.mp3.json").read_text())["text"]

    registry.set_experiment("hotwords")  # asrflow's store, not MLflow's default (./mlflow.db)
    with mlflow.start_run():
        info = flavor.log_model()
    model = mlflow.pyfunc.load_model(info.model_uri)
    assert " bus," in model.predict([CLIP.read_bytes()], params={"hotwords": "bus"})[0]
    assert " bus" not in model.predict([CLIP.read_bytes()])[0]
