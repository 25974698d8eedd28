"""Batch transcription of collections: resumable on one machine, or on Spark, with the same outputs."""

from __future__ import annotations

import csv
import importlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from asrflow.errors import AsrflowError, InvalidOptionError
from asrflow.evaluate import AUDIO_EXTENSIONS
from asrflow.journal import journal_path, transcribe_resumably
from asrflow.options import TranscribeOptions
from asrflow.writers import WRITERS, output_folder, remove_dead_temp_files, write_file

ERRORS_FILE = "errors.jsonl"
# engine -> "module:function(jobs, model, output_dir, formats, changes, summary, show_progress=, master=)"
ENGINES = {"local": "asrflow.batch:run_local", "spark": "asrflow.spark:run_spark"}


@dataclass(frozen=True)
class Job:
    source: str  # the audio file
    relative: str  # its place in the output tree, with its own extension (call.wav -> call.wav.json)


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
    return str(PurePosixPath(*parts))


def find_jobs(source: str | Path) -> list[Job]:
    """A folder (recursive, by audio extension) or a manifest (.jsonl / .csv with an 'audio' column)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        return unique_jobs([Job(str(p), safe_relative(str(p.relative_to(source)))) for p in files])
    if not source.is_file():
        raise InvalidOptionError(f"{source} does not exist: give a folder of audio or a .jsonl/.csv manifest.")
    return unique_jobs([Job(str(source.parent / entry), safe_relative(entry)) for entry in manifest_entries(source)])


def manifest_entries(manifest: Path) -> list[str]:
    """The 'audio' column of a .jsonl or .csv manifest; a bad line is an error naming it."""
    if manifest.suffix not in (".jsonl", ".csv"):
        raise InvalidOptionError(f"{manifest} is neither a folder nor a .jsonl/.csv manifest with an 'audio' column.")
    try:
        if manifest.suffix == ".jsonl":
            rows = [
                (n, json.loads(line)) for n, line in enumerate(manifest.read_text().splitlines(), 1) if line.strip()
            ]
        else:
            with open(manifest, newline="") as f:
                rows = list(enumerate(csv.DictReader(f), 2))
    except (ValueError, OSError) as e:
        raise InvalidOptionError(f"{manifest} cannot be read as a manifest ({e}).") from None
    entries = []
    for line, row in rows:
        audio = row.get("audio") if isinstance(row, dict) else None
        if not isinstance(audio, str) or not audio.strip():
            raise InvalidOptionError(f"{manifest}, line {line}: no 'audio' path; each row needs one.")
        entries.append(audio)
    return entries


def unique_jobs(jobs: list[Job], fix: str = "put them in different folders") -> list[Job]:
    """The same file listed twice is one job; two files that would write the same outputs are an error (saying
    `fix`, or rename one)."""
    by_target: dict[str, Job] = {}
    for job in jobs:
        other = by_target.setdefault(job.relative, job)
        if other is not job and Path(other.source).resolve() != Path(job.source).resolve():
            raise InvalidOptionError(
                f"{other.source} and {job.source} would write the same outputs ({job.relative}.*): "
                f"rename one, or {fix}."
            )
    return list(by_target.values())


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
        raise InvalidOptionError(
            f"unknown format(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(WRITERS)}."
        )
    return formats


def transcribe_job(transcriber, job: Job, output_dir: Path, formats: list[str], options: TranscribeOptions) -> dict:
    """Transcribe one file and write its outputs atomically; a failure becomes a record, not an exception.
    Its segments are journaled as decoded: a re-run after a crash continues the file after the last one."""
    try:
        paths = outputs(job, output_dir, formats)
        journal = journal_path(paths[0])
        result = transcribe_resumably(transcriber, job.source, options, journal).collect()
        for fmt, path in zip(formats, paths):
            write_file(result, path, fmt)
        journal.unlink(missing_ok=True)
    except AsrflowError as e:
        return {"path": job.source, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - one file's failure (permissions, a bug) must not stop the run
        return {"path": job.source, "error": f"{type(e).__name__}: {e}"}
    return {
        "path": job.source,
        "text": result.text,
        "language": result.language,
        "duration": result.duration,
        "segments": json.dumps([asdict(s) for s in result.segments]),
    }


def pending(jobs: list[Job], output_dir: Path, formats: list[str]) -> list[Job]:
    """Jobs whose outputs are not all there (outputs are written atomically, so present means complete)."""
    return [j for j in jobs if not all(p.is_file() for p in outputs(j, output_dir, formats))]


def run_local(
    jobs: list[Job],
    model: str,
    output_dir: Path,
    formats: list[str],
    changes: dict,
    summary: BatchSummary,
    show_progress: bool = False,
    **_,
):
    """The local engine: one process, one model, files one after another."""
    from tqdm import tqdm

    from asrflow.transcriber import load_transcriber

    transcriber = load_transcriber(model)
    options = transcriber.resolve(changes)
    started = time.perf_counter()
    with (
        open(output_dir / ERRORS_FILE, "w") as errors,
        tqdm(total=len(jobs), unit="file", disable=not show_progress) as bar,
    ):
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
            bar.set_postfix(
                audio_h=f"{summary.audio_seconds / 3600:.2f}", rtf=summary.real_time_factor, failed=summary.failed
            )
            bar.update()


def run_batch(
    source: str | Path,
    model: str,
    output_dir: str | Path,
    formats: list[str],
    options: dict | None = None,
    engine: str = "local",
    master: str = "local[2]",
    show_progress: bool = False,
    log_to_mlflow: bool = True,
) -> BatchSummary:
    """Transcribe every file of `source` into `output_dir`, skipping files already done."""
    formats = check_formats(formats)
    if engine not in ENGINES:
        raise InvalidOptionError(f"unknown engine {engine!r}: choose {' or '.join(ENGINES)}.")
    changes = dict(options or {})
    TranscribeOptions.check(changes)  # bad values fail before anything runs
    output_dir = output_folder(output_dir)
    remove_dead_temp_files(output_dir)  # left by a run that was killed mid-write
    jobs = find_jobs(source)
    todo = pending(jobs, output_dir, formats)
    summary = BatchSummary(files=len(jobs), skipped=len(jobs) - len(todo), engine=engine, output_dir=str(output_dir))
    if todo:
        module, function = ENGINES[engine].split(":")
        run = getattr(importlib.import_module(module), function)
        run(todo, model, output_dir, formats, changes, summary, show_progress=show_progress, master=master)
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
