"""Batch transcription of collections: resumable on one machine, or on Spark, with the same outputs."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from asrflow.errors import AsrflowError, InvalidOptionError
from asrflow.evaluate import AUDIO_EXTENSIONS
from asrflow.options import TranscribeOptions
from asrflow.writers import WRITERS, write_file

ERRORS_FILE = "errors.jsonl"


@dataclass(frozen=True)
class Job:
    source: str  # the audio file
    relative: str  # its place in the output tree, without extension


@dataclass
class BatchSummary:
    files: int = 0
    transcribed: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    engine: str = "local"
    output_dir: str = ""
    errors: list[dict] = field(default_factory=list, repr=False)

    @property
    def real_time_factor(self) -> float:
        return round(self.audio_seconds / self.wall_seconds, 2) if self.wall_seconds else 0.0

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "errors"}
        return {**data, "real_time_factor": self.real_time_factor}


def safe_relative(path: str) -> str:
    """A relative output path that cannot escape the output folder (no anchors, no '..')."""
    parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", "..", ".", "")]
    parts = [p for p in parts if not p.endswith(":")]  # drive letters
    if not parts:
        raise InvalidOptionError(f"{path!r} names no file.")
    return str(PurePosixPath(*parts).with_suffix(""))


def find_jobs(source: str | Path) -> list[Job]:
    """A folder (recursive, by audio extension) or a manifest (.jsonl / .csv with an 'audio' column)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        return [Job(str(p), safe_relative(str(p.relative_to(source)))) for p in files]
    if source.suffix == ".jsonl":
        entries = [json.loads(line)["audio"] for line in source.read_text().splitlines() if line.strip()]
    elif source.suffix == ".csv":
        with open(source, newline="") as f:
            entries = [row["audio"] for row in csv.DictReader(f)]
    else:
        raise InvalidOptionError(f"{source} is neither a folder nor a .jsonl/.csv manifest with an 'audio' column.")
    return [Job(str(source.parent / entry), safe_relative(entry)) for entry in entries]


def outputs(job: Job, output_dir: Path, formats: list[str]) -> list[Path]:
    paths = [output_dir / f"{job.relative}.{fmt}" for fmt in formats]
    root = output_dir.resolve()
    for path in paths:
        if not path.resolve().is_relative_to(root):
            raise InvalidOptionError(f"output {path} would escape {output_dir}.")
    return paths


def check_formats(formats: list[str]) -> list[str]:
    unknown = [f for f in formats if f not in WRITERS]
    if unknown or not formats:
        raise InvalidOptionError(f"unknown format(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(WRITERS)}.")
    return formats


def transcribe_job(transcriber, job: Job, output_dir: Path, formats: list[str], options: TranscribeOptions) -> dict:
    """Transcribe one file and write its outputs atomically; a failure becomes a record, not an exception."""
    try:
        result = transcriber.transcribe(job.source, options)
    except AsrflowError as e:
        return {"path": job.source, "error": str(e)}
    for fmt, path in zip(formats, outputs(job, output_dir, formats)):
        write_file(result, path, fmt)
    return {"path": job.source, "text": result.text, "language": result.language, "duration": result.duration,
            "segments": json.dumps([asdict(s) for s in result.segments])}


def pending(jobs: list[Job], output_dir: Path, formats: list[str]) -> list[Job]:
    """Jobs whose outputs are not all there (outputs are written atomically, so present means complete)."""
    return [j for j in jobs if not all(p.is_file() for p in outputs(j, output_dir, formats))]


def run_local(jobs, transcriber, output_dir: Path, formats, options, show_progress: bool, summary: BatchSummary):
    from tqdm import tqdm

    started = time.perf_counter()
    with open(output_dir / ERRORS_FILE, "w") as errors, tqdm(total=len(jobs), unit="file", disable=not show_progress) as bar:
        for job in jobs:
            record = transcribe_job(transcriber, job, output_dir, formats, options)
            if "error" in record:
                summary.failed += 1
                summary.errors.append(record)
                errors.write(json.dumps(record) + "\n")
                errors.flush()
            else:
                summary.transcribed += 1
                summary.audio_seconds += record["duration"]
            summary.wall_seconds = time.perf_counter() - started
            bar.set_postfix(audio_h=f"{summary.audio_seconds / 3600:.2f}", rtf=summary.real_time_factor, failed=summary.failed)
            bar.update()


def run_batch(
    source: str | Path,
    model: str,
    output_dir: str | Path,
    formats: list[str],
    options: TranscribeOptions | None = None,
    engine: str = "local",
    master: str = "local[2]",
    show_progress: bool = False,
    log_to_mlflow: bool = True,
) -> BatchSummary:
    """Transcribe every file of `source` into `output_dir`, skipping files already done."""
    formats = check_formats(formats)
    options = options or TranscribeOptions()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.rglob(".*.tmp"):  # left by a run that was killed mid-write
        stale.unlink()
    jobs = find_jobs(source)
    todo = pending(jobs, output_dir, formats)
    summary = BatchSummary(files=len(jobs), skipped=len(jobs) - len(todo), engine=engine, output_dir=str(output_dir))
    if engine == "local":
        from asrflow.transcriber import load_transcriber

        transcriber = load_transcriber(model) if todo else None
        run_local(todo, transcriber, output_dir, formats, options, show_progress, summary)
    elif engine == "spark":
        from asrflow.spark import run_spark

        run_spark(todo, model, output_dir, formats, options, master, summary)
    else:
        raise InvalidOptionError(f"unknown engine {engine!r}: choose local or spark.")
    if log_to_mlflow:
        log_batch(summary, model, output_dir)
    return summary


def log_batch(summary: BatchSummary, model: str, output_dir: Path) -> None:
    import mlflow

    from asrflow.registry import DEFAULT_EXPERIMENT, set_experiment

    set_experiment(DEFAULT_EXPERIMENT)
    with mlflow.start_run(run_name=f"batch {Path(summary.output_dir).name}"):
        mlflow.set_tags({"asrflow.task": "batch", "asrflow.engine": summary.engine})
        mlflow.log_params({"model": model, "model_version": _version_of(model), "output_dir": str(output_dir)})
        mlflow.log_metrics({k: float(v) for k, v in summary.to_dict().items() if isinstance(v, (int, float))})
        if (output_dir / ERRORS_FILE).is_file():
            mlflow.log_artifact(str(output_dir / ERRORS_FILE))


def _version_of(model: str) -> str:
    """The registry version behind a models:/ URI (the logged-model id for models:/m-...), for the record."""
    from asrflow.registry import registered_version

    version = registered_version(model)
    return str(version.version) if version else model.removeprefix("models:/") if model.startswith("models:/") else ""
