"""Hotwords (faster-whisper's: hint phrases in every window's prompt) through every edge.

dev013 says "on the bus"; tiny.en hears "on the mouse" unless it is told the word."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
from conftest import DATA

CLIP = DATA / "dev013.mp3"
ASRFLOW = str(Path(sys.executable).with_name("asrflow"))


def test_hotwords_on_both_backends(transcriber):
    assert " bus" not in transcriber.transcribe(CLIP, language="en").text  # "mouse", "immerse"
    assert " bus," in transcriber.transcribe(CLIP, language="en", hotwords="bus").text


def test_hotwords_from_the_cli_batch_and_mlflow_params(tmp_path):
    from asrflow import flavor

    printed = subprocess.run([ASRFLOW, "transcribe", str(CLIP), "--hotwords", "bus"], capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    assert " bus," in printed.stdout

    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(CLIP, source / "a.mp3")
    batch = subprocess.run(
        [ASRFLOW, "batch", str(source), "-o", str(tmp_path / "out"), "-f", "json", "--hotwords", "bus"],
        capture_output=True,
        text=True,
    )
    assert batch.returncode == 0, batch.stderr
    assert " bus," in json.loads((tmp_path / "out" / "a.mp3.json").read_text())["text"]

    mlflow.set_experiment("hotwords")
    with mlflow.start_run():
        info = flavor.log_model()
    model = mlflow.pyfunc.load_model(info.model_uri)
    assert " bus," in model.predict([CLIP.read_bytes()], params={"hotwords": "bus"})[0]
    assert " bus" not in model.predict([CLIP.read_bytes()])[0]
