"""Batch transcription as users run it: real audio trees, a corrupt file, a kill mid-run, Spark local[2]."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import BIN, DATA, cli, environment

from asrflow import registry
from asrflow.batch import find_jobs, run_batch
from asrflow.metrics import word_error_rate

GOOD = ["dev000.wav", "dev002.flac", "dev005.mp3", "dev007.ogg"]


# The Spark driver's JVM with its quick compiler only and a serial collector: a short job's JVM computed half as
# long (10 against 20 CPU-seconds for four files). A setting of the tests' machine, as OMP_NUM_THREADS is.
SPARK_JVM = {"PYSPARK_SUBMIT_ARGS": '--driver-java-options "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC" pyspark-shell'}


def batch(*args):
    """`asrflow batch ARGS`: in this process, or, for the Spark engine (a JVM and its executors), a process."""
    if "spark" not in args:
        return cli("batch", *args)
    return subprocess.run(
        [BIN / "asrflow", "batch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment(**SPARK_JVM),
    )


@pytest.fixture()
def tree(tmp_path):
    """calls/a/*.wav..., calls/b/*, and one corrupt file."""
    root = tmp_path / "calls"
    for i, name in enumerate(GOOD):
        target = root / ("a" if i % 2 else "b") / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / name, target)
    (root / "b" / "broken.mp3").write_bytes(b"ID3\x03" + os.urandom(3000))
    (root / "notes.txt").write_text("not audio, not picked up")
    return root


def test_directory_with_a_corrupt_file(tree, tmp_path):
    out = tmp_path / "out"
    result = batch(tree, "--output-dir", out, "--format", "json,srt,txt")
    assert result.returncode == 1, result.stderr
    assert "4 transcribed" in result.stdout and "1 failed" in result.stdout
    for name in GOOD:
        job = next(j for j in find_jobs(tree) if j.source.endswith(name))
        for fmt in ("json", "srt", "txt"):
            assert (out / f"{job.relative}.{fmt}").is_file()
        assert json.loads((out / f"{job.relative}.json").read_text())["text"]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["path"].endswith("broken.mp3") and errors[0]["error"]
    assert not list(out.rglob("*.tmp"))
    registry.use_tracking()
    runs = mlflow.search_runs(
        experiment_names=["Whisper Transcription ASR"], filter_string="tags.`asrflow.task` = 'batch'"
    )
    assert len(runs) >= 1 and runs.iloc[0]["metrics.failed"] == 1


def test_kill_mid_run_then_resume(tmp_path):
    source = tmp_path / "many"
    source.mkdir()
    for i in range(12):
        shutil.copy(DATA / GOOD[i % len(GOOD)], source / f"clip{i:02d}{Path(GOOD[i % len(GOOD)]).suffix}")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [BIN / "asrflow", "batch", source, "-o", out, "-f", "json,txt"],
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(list(out.glob("*.txt"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.txt")}
    assert 3 <= len(finished) < 12
    for path in out.glob("clip*.json"):
        json.loads(path.read_text())  # every file present is complete

    result = batch(source, "-o", out, "-f", "json,txt", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["skipped"] >= len(finished) - 1 and summary["transcribed"] + summary["skipped"] == 12
    assert len(list(out.glob("*.txt"))) == 12 and not list(out.rglob(".*.tmp"))
    unchanged = [name for name, mtime in finished.items() if (out / name).stat().st_mtime_ns == mtime]
    assert len(unchanged) >= len(finished) - 1  # at most the file being written at the kill is redone


def test_manifest_paths_never_escape(tmp_path):
    inner = tmp_path / "data" / "inner"
    inner.mkdir(parents=True)
    shutil.copy(DATA / "dev000.wav", tmp_path / "data" / "up.wav")
    shutil.copy(DATA / "dev002.flac", inner / "abs.flac")
    manifest = inner / "manifest.jsonl"
    manifest.write_text(
        json.dumps({"audio": "../up.wav"}) + "\n" + json.dumps({"audio": str(inner / "abs.flac")}) + "\n"
    )
    out = tmp_path / "out"
    summary = run_batch(manifest, "bundled:tiny.en", out, ["txt"], log_to_mlflow=False)
    assert summary.transcribed == 2
    written = [p for p in tmp_path.rglob("*.txt")]
    assert written and all(p.resolve().is_relative_to(out.resolve()) for p in written)


def test_spark_engine_matches_local(tree, tmp_path):
    local, spark = tmp_path / "local", tmp_path / "spark"
    run_batch(tree, "bundled:tiny.en", local, ["txt"], log_to_mlflow=False)
    result = batch(tree, "-o", spark, "-f", "txt", "--engine", "spark", "--master", "local[2]", "--json")
    assert result.returncode == 1, result.stderr  # the corrupt file
    assert json.loads(result.stdout)["transcribed"] == 4
    # the same files; the text may differ in a word: CTranslate2's int8 arithmetic depends on the thread count,
    # and Spark gives each task one thread (OMP_NUM_THREADS=spark.task.cpus)
    assert sorted(p.relative_to(spark) for p in spark.rglob("*.txt")) == sorted(
        p.relative_to(local) for p in local.rglob("*.txt")
    )
    for path in local.rglob("*.txt"):
        assert word_error_rate([path.read_text()], [(spark / path.relative_to(local)).read_text()]) < 0.35
    table = pd.read_parquet(spark / "transcripts.parquet")
    assert len(table) == 4 and set(table.columns) >= {"path", "text", "language", "duration", "segments"}
    assert all(json.loads(s) for s in table["segments"])
    assert "broken.mp3" in (spark / "errors.jsonl").read_text()


def test_spark_failure_is_one_clear_line(tree, tmp_path):
    env = environment(**SPARK_JVM)
    env["PYSPARK_PYTHON"] = str(tmp_path / "no-such-python")  # executors without a usable Python
    result = subprocess.run(
        [BIN / "asrflow", "batch", tree, "-o", tmp_path / "out", "--engine", "spark"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 1
    assert "error: the Spark job failed" in result.stderr and "PYSPARK_PYTHON" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "master, message",
    [
        ("local[x]", "is not a Spark master: use local[N]"),
        ("yarn", "set HADOOP_CONF_DIR"),  # before the JVM starts: no Java trace
    ],
)
def test_a_master_spark_cannot_use_is_one_clear_line(tree, tmp_path, master, message):
    result = batch(tree, "-o", tmp_path / "out", "--engine", "spark", "--master", master)
    assert result.returncode != 0 and result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in result.stderr and "Traceback" not in result.stderr


def test_same_stem_different_extension_both_kept_and_failures_of_any_kind_recorded(tmp_path):
    source = tmp_path / "calls"
    source.mkdir()
    shutil.copy(DATA / "dev000.wav", source / "call.wav")
    shutil.copy(DATA / "dev005.mp3", source / "call.mp3")
    shutil.copy(DATA / "dev002.flac", source / "blocked.flac")
    out = tmp_path / "out"
    (out / "blocked.flac.txt").mkdir(parents=True)  # its output cannot be written: an OS error, not asrflow's
    (out / ".notes.tmp").write_text("the user's own file")
    (out / f".old.txt.asrflow-{os.getpid()}.tmp").write_text("a live asrflow process's temp file")
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / f".old.txt.asrflow-{dead.pid}.tmp").write_text("left by a killed run")
    result = batch(source, "-o", out, "-f", "txt", "--json")
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["transcribed"], summary["failed"]) == (2, 1)
    assert "committee" in (out / "call.wav.txt").read_text() and "temperature" in (out / "call.mp3.txt").read_text()
    [error] = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert error["path"].endswith("blocked.flac") and "IsADirectoryError" in error["error"]
    assert (out / ".notes.tmp").exists() and (out / f".old.txt.asrflow-{os.getpid()}.tmp").exists()
    assert not (out / f".old.txt.asrflow-{dead.pid}.tmp").exists()


def test_manifest_problems_are_one_line(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": str(DATA / "dev000.wav")}) + "\n" + json.dumps({"path": "x.wav"}) + "\n")
    result = batch(manifest, "-o", tmp_path / "out")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {manifest}, line 2: no 'audio' path; each row needs one."
    ]
    clash = tmp_path / "clash.jsonl"
    (tmp_path / "a").mkdir()
    shutil.copy(DATA / "dev000.wav", tmp_path / "a" / "x.wav")
    shutil.copy(DATA / "dev004.wav", tmp_path / "x.wav")
    clash.write_text(
        json.dumps({"audio": "a/x.wav"})
        + "\n"
        + json.dumps({"audio": "../a/x.wav"})
        + "\n"
        + json.dumps({"audio": "x.wav"})
        + "\n"
    )
    result = batch(clash, "-o", tmp_path / "out2")
    assert result.returncode == 2 and "would write the same outputs" in result.stderr, result.stderr


def test_batch_options_override_the_models(tmp_path):
    from asrflow.lifecycle import log

    logged = log("bundled:tiny.en", register_as="whisper-batch-options", alias="champion")
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(DATA / "dev000.wav", source / "a.wav")
    result = batch(
        source,
        "-o",
        tmp_path / "out",
        "-f",
        "json",
        "-m",
        "models:/whisper-batch-options@champion",
        "--word-timestamps",
        "--beam-size",
        "2",
    )
    assert result.returncode == 0, result.stderr
    segments = json.loads((tmp_path / "out" / "a.wav.json").read_text())["segments"]
    assert segments and all(s["words"] for s in segments), logged


def test_a_rerun_continues_a_file_from_its_journal(tmp_path, ct2_transcriber):
    """A file a killed run had half transcribed: the re-run keeps the journaled segments and goes on after them."""
    from asrflow.journal import journal_header, journal_path

    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    shutil.copy(DATA / "dev010.flac", source / "a.flac")
    journal = journal_path(out / "a.flac.json")
    journal.parent.mkdir(parents=True)
    journaled = {"start": 0.0, "end": 1.0, "text": "JOURNALED", "words": []}
    header = {"language": "en"} | journal_header(ct2_transcriber, str(source / "a.flac"), ct2_transcriber.options)
    journal.write_text(json.dumps(header) + "\n" + json.dumps(journaled) + "\n")
    result = batch(source, "-o", out, "-f", "json")
    assert result.returncode == 0, result.stderr
    transcript = json.loads((out / "a.flac.json").read_text())
    assert transcript["segments"][0]["text"] == "JOURNALED" and "weekend" in transcript["text"]
    assert not journal.exists()
