"""What a fresh machine has: asrflow's own code needs no ffmpeg; the one stock MLflow needs comes from the venv."""

import os
import shutil
import subprocess
import sys

from conftest import BIN, SAMPLE


def test_the_project_installs_the_ffmpeg_that_stock_transformers_code_runs():
    found = shutil.which("ffmpeg")
    assert found and os.path.dirname(found) == str(BIN), found  # .venv/bin/ffmpeg, from the imageio-ffmpeg wheel
    version = subprocess.run([found, "-version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("ffmpeg version")


def test_asrflow_itself_never_runs_ffmpeg(tmp_path):
    """The tutorial's steps that asrflow runs, and both backends, with every ffmpeg on PATH failing loudly."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("ffmpeg", "ffprobe"):
        (stubs / name).write_text("#!/bin/sh\necho ffmpeg was run >&2\nexit 127\n")
        (stubs / name).chmod(0o755)
    code = f"""
from asrflow import load_transcriber, tutorial
audio = open({str(SAMPLE)!r}, 'rb').read()
pipeline = tutorial.transcription_pipeline()
print(tutorial.check_pipeline(pipeline, audio))
print(tutorial.tutorial_signature(pipeline, audio).inputs.to_dict())
print(load_transcriber('bundled:tiny.en', backend='transformers').transcribe(audio).text)
print(load_transcriber('bundled:tiny.en').transcribe({str(SAMPLE.parents[3] / "tests" / "data" / "dev001.mp3")!r}).text)
"""
    # run as `python -c`: where pyspark lacks its connect extra, the module MLflow's infer_signature imports
    # takes a __main__ without a file for doctests and exits the interpreter, silently, with status 0
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "ffmpeg was run" not in result.stderr, result.stderr[-2000:] + result.stdout
    lines = result.stdout.splitlines()[-4:]
    assert "ask not what your country" in lines[0] and "binary" in lines[1]
    assert "ask not what your country" in lines[2] and "identification card" in lines[3]
