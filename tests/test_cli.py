"""The CLI as a user runs it: a real subprocess, real files."""

import itertools
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import DATA, SAMPLE, cli
from test_writers import parse_srt

ASRFLOW = [str(Path(sys.executable).with_name("asrflow"))]


run = cli  # in this process; the tests of signals, terminals and pipes start `asrflow` itself


def test_transcribe_prints_valid_srt():
    result = run("transcribe", DATA / "dev001.mp3", "--format", "srt")
    assert result.returncode == 0, result.stderr
    cues = parse_srt(result.stdout)
    assert "identification card" in " ".join(c[2] for c in cues)
    assert result.stderr == ""


def test_transcribe_writes_files_with_all_options(tmp_path):
    result = run(
        "transcribe",
        SAMPLE,
        DATA / "dev004.wav",
        "--model",
        "bundled:tiny.en",
        "--backend",
        "ctranslate2",
        "--format",
        "json",
        "--output-dir",
        tmp_path,
        "--language",
        "en",
        "--task",
        "transcribe",
        "--word-timestamps",
        "--vad",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    data = json.loads((tmp_path / "jfk.json").read_text())
    assert "ask not what your country" in data["text"] and data["segments"][0]["words"]
    assert "revenue" in json.loads((tmp_path / "dev004.json").read_text())["text"]
    strict = run(
        "transcribe",
        SAMPLE,
        "--vad",
        "--vad-threshold",
        "0.9",
        "--vad-min-silence-duration-ms",
        "300",
        "--vad-speech-pad-ms",
        "100",
    )  # VAD's settings: a high threshold takes the quiet first words for noise
    assert strict.returncode == 0 and "fellow Americans" not in strict.stdout and "your country" in strict.stdout


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
    # CTranslate2's own encoder: the converted model's OpenVINO encoder would be built anew (test_encoder builds one)
    out = run("transcribe", SAMPLE, "--model", back, env={"ASRFLOW_ENCODER": "ctranslate2"})
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
    # the details: the same failure (CTranslate2's own encoder: the OpenVINO build from the broken weights, which
    # fails and falls back silently, was tried by the run above)
    detailed = run("--debug", "transcribe", SAMPLE, "--model", broken, env={"ASRFLOW_ENCODER": "ctranslate2"})
    assert detailed.returncode == result.returncode and "Traceback" in detailed.stderr


@pytest.fixture(scope="module")
def two_minutes(tmp_path_factory):
    """Two minutes of speech with pauses (several windows, several VAD batches): the dev corpus, half a second
    between clips."""
    import numpy as np

    from asrflow import decode_audio
    from asrflow.encoding import encode_audio

    clips = [decode_audio(str(p)) for p in sorted(DATA.glob("dev0*"))]
    gap = np.zeros(8000, dtype=np.float32)
    audio = np.concatenate([part for clip in clips for part in (clip, gap)])
    path = tmp_path_factory.mktemp("long") / "two-minutes.flac"
    path.write_bytes(encode_audio(audio, "flac"))
    return path


@pytest.fixture(scope="module")
def champion():
    from asrflow.lifecycle import log

    name = f"whisper-cli-{uuid.uuid4().hex[:6]}"
    log("bundled:tiny.en", register_as=name, alias="champion")
    return f"models:/{name}@champion"


def assert_well_formed(segments, longest=15.0):
    assert segments
    for a, b in itertools.pairwise(segments):
        assert b["start"] >= a["end"], (a, b)
    for s in segments:
        assert s["end"] - s["start"] <= longest, s
        assert s["words"] and s["words"][0]["start"] == s["start"] and s["words"][-1]["end"] == s["end"], s
        assert all(s["start"] <= w["start"] <= w["end"] <= s["end"] for w in s["words"]), s


def test_registered_model_with_vad_and_words_gives_sentence_segments(two_minutes, champion):
    result = run("transcribe", two_minutes, "--model", champion, "--vad", "--word-timestamps", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["duration"] > 120 and len(data["segments"]) >= 13
    assert_well_formed(data["segments"])


def test_command_options_override_the_models_saved_ones(champion):
    args = ["transcribe", DATA / "dev001.mp3", "--model", champion, "--format", "json"]
    plain = json.loads(run(*args).stdout)
    assert not plain["segments"][0]["words"]
    with_words = json.loads(run(*args, "--word-timestamps", "--beam-size", "1", "--language", "en").stdout)
    assert with_words["segments"][0]["words"] and with_words["language"] == "en"
    refused = run(*args, "--language", "de")
    assert refused.returncode == 2 and "English-only" in refused.stderr
    assert champion in refused.stderr and "mlartifacts" not in refused.stderr  # names the user's model, not our files


@pytest.mark.parametrize(
    "args, message",
    [
        (["transcribe", SAMPLE, "--model", "bundled:base", "--language", "xx"], "not a Whisper language code"),
        (["transcribe", SAMPLE, "--beam-size", "1000000000"], "beam_size must be between 1 and 20"),
        (["transcribe", SAMPLE, "--temperature", "hot"], "temperature cannot be 'hot'"),
        (
            ["transcribe", SAMPLE, "--vad", "--vad-min-silence-duration-ms", "50"],
            "vad_min_silence_duration_ms must be between",
        ),
        (["transcribe", SAMPLE, "--device", "tpu"], "unknown device 'tpu': choose cpu or cuda"),
        (
            ["transcribe", SAMPLE, "--backend", "transformers", "--device", "cuda"],
            "no usable CUDA GPU",
        ),  # torch: CPU build
        (["transcribe", SAMPLE, "-o", SAMPLE], "is a file, not a folder"),
        (["transcribe", SAMPLE, "-o", "/proc/asrflow"], "cannot write outputs to '/proc/asrflow'"),
        (["batch", SAMPLE.parent, "-o", SAMPLE], "is a file, not a folder"),
        (["register", "whisper-nope", "--model-uri", "models:/nope/1"], "could not register models:/nope/1"),
    ],
)
def test_bad_values_are_one_line_naming_them(args, message):
    result = run(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_compute_type_applies_to_registered_models_too(champion):
    """--compute-type is not dropped for models:/ URIs: an unknown type reaches CTranslate2 and is refused."""
    ok = run("transcribe", DATA / "dev001.mp3", "--model", champion, "--compute-type", "float32")
    assert ok.returncode == 0 and "identification card" in ok.stdout, ok.stderr
    bad = run("transcribe", DATA / "dev001.mp3", "--model", champion, "--compute-type", "int3")
    assert bad.returncode != 0 and "int3" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_output_piped_into_a_reader_that_stops_early_is_not_an_error():
    """`asrflow ... | head -1`: the closed pipe ends the command quietly."""
    result = subprocess.run(
        " ".join(
            ASRFLOW
            + ["transcribe", str(DATA / "dev001.mp3"), str(DATA / "dev004.wav"), "--format", "json", "|", "head", "-1"]
        ),
        shell=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout == "{\n" and result.stderr == "", result.stderr


def test_subtitles_are_printed_as_decoded_and_a_killed_run_leaves_a_valid_prefix(two_minutes):
    """stdout gets each cue as soon as it is decoded: kill the run after two cues, what it printed is valid SRT."""
    process = subprocess.Popen(
        ASRFLOW + ["transcribe", str(two_minutes), "-f", "srt"], stdout=subprocess.PIPE, text=True
    )
    printed = ""
    while printed.count(" --> ") < 2:
        line = process.stdout.readline()
        assert line, "the run ended before printing two cues"
        printed += line
    printed += process.stdout.readline()  # the second cue's text
    process.kill()
    assert process.wait(timeout=30) != 0  # killed before it finished: the cues came while it was decoding
    assert len(parse_srt(printed)) == 2


def _stderr_on_a_terminal(args: list, until) -> str:
    """Runs the CLI with stderr on a pseudo-terminal (stdout piped) until `until(terminal_text)` or its first
    line of stdout when `until` is None; kills it and returns what the terminal got."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size: 100 columns
    process = subprocess.Popen(ASRFLOW + ["transcribe", *args], stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    seen = b""
    try:
        while until is not None and not until(seen.decode(errors="replace")):
            ready, _, _ = select.select([leader], [], [], 120)
            assert ready, f"no progress on the terminal: {seen!r}"
            more = _read(leader)
            assert more, f"the run ended: {seen!r}"
            seen += more
        if until is None:
            assert process.stdout.readline()
            while select.select([leader], [], [], 1)[0] and (more := _read(leader)):
                seen += more
    finally:
        process.kill()
        process.wait(timeout=30)
        os.close(leader)
    return seen.decode(errors="replace")


def _read(fd: int) -> bytes:
    import os

    try:
        return os.read(fd, 4096)
    except OSError:  # the terminal's other end closed: the run ended
        return b""


def test_a_progress_bar_on_a_terminal_shows_audio_time_done_of_the_total_and_an_eta(two_minutes):
    """More than a minute of audio, stderr a terminal: the bar counts audio seconds of the file's total (from its
    header, before decoding) with an ETA once a segment is done; -q hides it."""
    import re

    from asrflow import decode_audio

    moving = re.compile(r"transcribing: +\d+%.*?(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?) \[\d\d:\d\d<\d\d:\d\d")
    terminal = _stderr_on_a_terminal([str(two_minutes), "-f", "txt"], lambda text: moving.search(text))
    done, total = map(float, moving.search(terminal).groups())
    assert 0 < done <= total and abs(total - len(decode_audio(two_minutes)) / 16000) < 0.2, terminal
    assert "transcribing" not in _stderr_on_a_terminal([str(two_minutes), "-f", "txt", "-q"], None)


def test_inputs_whose_outputs_would_collide_are_refused_before_anything_runs(tmp_path):
    """a/x.wav and b/x.wav would both write out/x.txt: one line naming both and the way out, before the model
    loads (a model that does not exist is not what it complains of) and before the output folder is made."""
    for folder, clip in [("a", "dev000.wav"), ("b", "dev004.wav")]:
        (tmp_path / folder).mkdir()
        shutil.copy(DATA / clip, tmp_path / folder / "x.wav")
    a, b, out = tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav", tmp_path / "out"
    result = run("transcribe", a, b, "-o", out, "--model", "bundled:huge")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(a) in line and str(b) in line and "different --output-dir" in line, line
    assert not out.exists()


def test_resuming_a_journal_of_another_model_starts_over_with_a_note(tmp_path, ct2_transcriber):
    from asrflow.journal import journal_header, journal_path

    clip, out = DATA / "dev001.mp3", tmp_path / "out"
    header = journal_header(ct2_transcriber, str(clip), ct2_transcriber.options)
    journal = journal_path(out / "dev001.txt")
    out.mkdir()
    other = {"language": "en"} | header | {"model": header["model"] | {"sha256": "0" * 64}}
    journal.write_text(json.dumps(other) + "\n" + json.dumps({"start": 0.0, "end": 1.0, "text": "JOURNALED"}) + "\n")
    result = run("transcribe", clip, "-o", out, "--resume")
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"note: the journal of {out / 'dev001.txt'} was made with another model: starting over\n"
    text = (out / "dev001.txt").read_text()
    assert "JOURNALED" not in text and "identification card" in text and not journal.exists()


def test_a_flag_that_needs_an_option_the_model_saved_is_taken(tmp_path):
    """--languages needs multilingual: a model saved with multilingual on takes --languages alone (the flags were
    checked against the defaults before the model loaded, and refused). Without it, still one clear line."""
    from asrflow import TranscribeOptions
    from asrflow.flavor import save_model

    save_model(tmp_path / "m", "bundled:base", reference_only=True, options=TranscribeOptions(multilingual=True))
    german = str(DATA / "german.mp3")
    taken = cli("transcribe", german, "-m", tmp_path / "m", "--languages", "de,en", "-f", "jsonl")
    assert taken.returncode == 0, taken.stderr
    found = {json.loads(line)["language"] for line in taken.stdout.splitlines()}
    assert "de" in found and found <= {"de", "en"}, found  # each segment's language, among those listed
    refused = cli("transcribe", german, "-m", "bundled:base", "--languages", "de,en")
    assert refused.returncode == 2 and "turn multilingual on" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
