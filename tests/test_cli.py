"""The CLI as a user runs it: a real subprocess, real files."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from test_writers import parse_srt
from conftest import DATA, SAMPLE

ASRFLOW = [str(Path(sys.executable).with_name("asrflow"))]


def run(*args, **kwargs):
    return subprocess.run(ASRFLOW + [str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)


def test_transcribe_prints_valid_srt():
    result = run("transcribe", DATA / "dev001.mp3", "--format", "srt")
    assert result.returncode == 0, result.stderr
    cues = parse_srt(result.stdout)
    assert "identification card" in " ".join(c[2] for c in cues)
    assert result.stderr == ""


def test_transcribe_writes_files_with_all_options(tmp_path):
    result = run(
        "transcribe", SAMPLE, DATA / "dev004.wav", "--model", "bundled:tiny.en", "--backend", "ctranslate2",
        "--format", "json", "--output-dir", tmp_path, "--language", "en", "--task", "transcribe",
        "--word-timestamps", "--vad",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    data = json.loads((tmp_path / "jfk.json").read_text())
    assert "ask not what your country" in data["text"] and data["segments"][0]["words"]
    assert "revenue" in json.loads((tmp_path / "dev004.json").read_text())["text"]


def test_bad_input_is_one_line_and_nonzero(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    for args in ([corrupt], ["/no/such/file.mp3"], [SAMPLE, "--format", "docx"], [SAMPLE, "--model", "bundled:huge"]):
        result = run("transcribe", *args)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr


def test_convert_both_directions(tmp_path):
    hf = tmp_path / "tiny-hf"
    assert run("convert", "bundled:tiny.en", hf, "--to", "transformers").returncode == 0
    config = json.loads((hf / "config.json").read_text())
    assert config["dtype"] == "float16" and config["d_model"] == 384
    checkpoint = (Path(json.loads(run("info", "--json").stdout)["location"]) / "model.bin").stat().st_size
    assert (hf / "model.safetensors").stat().st_size < 1.05 * checkpoint  # fp16 kept, not doubled
    back = tmp_path / "tiny-ct2"
    result = run("convert", hf, back, "--to", "ctranslate2")
    assert result.returncode == 0, result.stderr
    out = run("transcribe", SAMPLE, "--model", back)
    assert "ask not what your country" in out.stdout, out.stderr
    shutil.rmtree(back)


def test_unexpected_failure_is_one_line_with_a_way_to_details(tmp_path):
    """A broken model file makes CTranslate2 fail in a way asrflow does not anticipate: still one line."""
    from asrflow.models import resolve_model

    broken = tmp_path / "broken-model"
    shutil.copytree(resolve_model("bundled:tiny.en").location, broken)
    weights = broken / "model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    result = run("transcribe", SAMPLE, "--model", broken)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "--debug" in lines[0] and "Traceback" not in result.stderr
    detailed = run("--debug", "transcribe", SAMPLE, "--model", broken)
    assert detailed.returncode == result.returncode and "Traceback" in detailed.stderr
