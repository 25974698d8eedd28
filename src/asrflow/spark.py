"""The batch job on PySpark: the same per-file outputs, plus one Parquet table of transcripts."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from asrflow.batch import ERRORS_FILE, BatchSummary, Job, transcribe_job
from asrflow.errors import AsrflowError, InvalidOptionError
from asrflow.process import configure_process

RESULT_SCHEMA = "path string, text string, language string, duration double, segments string, error string"
RESULT_COLUMNS = [column.split()[0] for column in RESULT_SCHEMA.split(", ")]
_LOADED: dict = {}  # one model per executor process, loaded on first use


def _transcriber(model: str):
    from asrflow.transcriber import load_transcriber

    if model not in _LOADED:
        configure_process()  # the executor's Python worker is asrflow's process (process.py)
        _LOADED[model] = load_transcriber(model)
    return _LOADED[model]


def transcribe_partitions(model: str, output_dir: str, formats: list[str], changes: dict):
    """The mapInPandas function: each executor loads the model once and writes outputs atomically."""

    def run(batches):
        transcriber = _transcriber(model)
        options = transcriber.resolve(changes)
        for frame in batches:
            rows = [
                transcribe_job(transcriber, Job(s, r), Path(output_dir), formats, options)
                for s, r in zip(frame["source"], frame["relative"])
            ]
            yield pd.DataFrame([{k: row.get(k) for k in RESULT_COLUMNS} for row in rows])

    return run


MASTERS = ("local", "spark://", "yarn", "k8s://")  # what Spark's --master takes


def check_master(master: str) -> None:
    """A master Spark cannot use is an error before the JVM starts (it would print a Java trace)."""
    if not master.startswith(MASTERS) or (
        master.startswith("local") and not re.fullmatch(r"local(\[(\*|\d+)(,\d+)?\])?", master)
    ):
        raise InvalidOptionError(
            f"--master {master!r} is not a Spark master: use local[N] (this machine, N cores), "
            "spark://HOST:PORT, yarn or k8s://URL."
        )
    if master == "yarn" and not (os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")):
        raise InvalidOptionError(
            "--master yarn needs the cluster's configuration: set HADOOP_CONF_DIR (or YARN_CONF_DIR) to its folder."
        )


def run_spark(
    jobs: list[Job],
    model: str,
    output_dir: Path,
    formats: list[str],
    changes: dict,
    summary: BatchSummary,
    master: str = "local[2]",
    **_,
):
    """The Spark engine: executors transcribe and write every output (per-file files and the Parquet table);
    the driver only collects counts and the failures."""
    import time

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    started = time.perf_counter()
    if master.startswith("local"):
        # local workers are this Python (with asrflow), not whatever python3 is first on PATH
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    check_master(master)
    try:
        spark = (
            SparkSession.builder.master(master)
            .appName("asrflow-batch")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate()
        )
    except Exception as e:  # noqa: BLE001 - the JVM did not start, or the master did not answer
        raise AsrflowError(
            f"Spark could not start with master {master!r} ({type(e).__name__}): check that the master "
            "is reachable and accepts applications, and that Java 17 is installed."
        ) from None
    spark.sparkContext.setLogLevel("FATAL")  # failures are reported once, below
    try:
        frame = spark.createDataFrame(pd.DataFrame([asdict(j) for j in jobs]))
        partitions = max(1, min(len(jobs), spark.sparkContext.defaultParallelism))
        results = (
            frame.repartition(partitions)
            .mapInPandas(transcribe_partitions(model, str(output_dir.resolve()), list(formats), changes), RESULT_SCHEMA)
            .cache()
        )
        done = results.where(F.col("error").isNull()).drop("error")
        done.write.mode("append").parquet(str((output_dir / "transcripts.parquet").resolve()))
        failed = [row.asDict() for row in results.where(F.col("error").isNotNull()).select("path", "error").collect()]
        totals = results.agg(F.count(F.lit(1)).alias("files"), F.sum("duration").alias("seconds")).first()
    except Exception as e:  # noqa: BLE001 - Py4J and worker errors: one readable line, not a JVM trace
        reason = next((line.strip() for line in reversed(str(e).splitlines()) if line.strip()), type(e).__name__)
        raise AsrflowError(
            f"the Spark job failed: {reason[:300]}. Executors need asrflow installed "
            "(set PYSPARK_PYTHON to a Python that has it) and OUT on storage they can all write."
        ) from None
    finally:
        spark.stop()
    with open(output_dir / ERRORS_FILE, "w") as errors:
        for record in failed:
            errors.write(json.dumps(record) + "\n")
            summary.errors.append(record)
    summary.transcribed = totals["files"] - len(failed)
    summary.failed = len(failed)
    summary.audio_seconds = float(totals["seconds"] or 0.0)
    summary.wall_seconds = time.perf_counter() - started
