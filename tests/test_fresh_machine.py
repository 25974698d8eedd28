"""What a fresh machine has: asrflow's own code needs no ffmpeg; the one stock MLflow needs comes from the venv."""

import os
import shutil
import subprocess

from conftest import BIN, DATA, SAMPLE


def test_the_project_installs_the_ffmpeg_that_stock_transformers_code_runs():
    found = shutil.which("ffmpeg")
    assert found and os.path.dirname(found) == str(BIN), found  # .venv/bin/ffmpeg, from the imageio-ffmpeg wheel
    version = subprocess.run([found, "-version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("ffmpeg version")


def test_asrflow_itself_never_runs_ffmpeg(tmp_path, monkeypatch):
    """The tutorial's steps that asrflow runs, and both backends loaded and transcribing, with every ffmpeg on PATH
    failing loudly and leaving a mark (a program is looked up on PATH when it is run: stubs first on this process's
    PATH stand in for a machine's)."""
    from asrflow import load_transcriber, tutorial

    stubs, ran = tmp_path / "stubs", tmp_path / "ffmpeg-was-run"
    stubs.mkdir()
    for name in ("ffmpeg", "ffprobe"):
        (stubs / name).write_text(f"#!/bin/sh\ntouch {ran}\necho ffmpeg was run >&2\nexit 127\n")
        (stubs / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{stubs}{os.pathsep}{os.environ['PATH']}")
    assert shutil.which("ffmpeg") == str(stubs / "ffmpeg")
    audio = SAMPLE.read_bytes()
    pipeline = tutorial.transcription_pipeline()
    assert "ask not what your country" in tutorial.check_pipeline(pipeline, audio)
    assert "binary" in str(tutorial.tutorial_signature(pipeline, audio).inputs.to_dict())
    assert (
        "ask not what your country"
        in load_transcriber("bundled:tiny.en", backend="transformers").transcribe(audio).text
    )
    assert "identification card" in load_transcriber("bundled:tiny.en").transcribe(DATA / "dev001.mp3").text
    assert not ran.exists()
