"""Evaluation: WER/CER, speed and memory of a model on a dataset, logged to MLflow; promotion on evidence."""

from __future__ import annotations

import csv
import json
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jiwer

from asrflow.audio import SAMPLE_RATE, decode_audio
from asrflow.errors import AsrflowError, InvalidOptionError
from asrflow.metrics import normalize

AUDIO_EXTENSIONS = {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".webm", ".opus", ".mp4"}


@dataclass(frozen=True)
class Utterance:
    audio: Path
    text: str
    language: str | None = None
    rttm: Path | None = None  # who spoke when: diarized and scored by DER
    languages: Path | None = None  # a JSON line a turn (start, end, language): multilingual, scored per segment


@dataclass
class Evaluation:
    model: str
    dataset: str
    utterances: int
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    audio_seconds: float
    wall_seconds: float
    real_time_factor: float  # audio seconds per wall second: higher is faster
    latency_p50: float
    latency_p95: float
    load_seconds: float
    peak_rss_mb: float
    der: float | None = None  # diarization error rate, over the utterances with an RTTM reference
    language_accuracy: float | None = None  # share of segments in their turn's language (references with languages)
    rows: list[dict] = field(default_factory=list, repr=False)
    run_id: str | None = None

    def metrics(self) -> dict[str, float]:
        names = (
            "wer",
            "cer",
            "substitutions",
            "deletions",
            "insertions",
            "audio_seconds",
            "wall_seconds",
            "real_time_factor",
            "latency_p50",
            "latency_p95",
            "load_seconds",
            "peak_rss_mb",
            "der",
            "language_accuracy",
        )
        return {n: float(getattr(self, n)) for n in names if getattr(self, n) is not None}

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "rows"}


def load_dataset(path: str | Path, limit: int | None = None) -> list[Utterance]:
    """A JSONL or CSV manifest (audio, text, optional language), or a folder of audio + same-named .txt."""
    path = Path(path)
    if path.is_dir():
        rows = [
            Utterance(a, a.with_suffix(".txt").read_text().strip())
            for a in sorted(path.rglob("*"))
            if a.suffix.lower() in AUDIO_EXTENSIONS and a.with_suffix(".txt").is_file()
        ]
        if (path / "manifest.jsonl").is_file() and not rows:
            return load_dataset(path / "manifest.jsonl", limit)
    elif path.suffix == ".jsonl":
        rows = [
            _row(json.loads(line), path.parent, i)
            for i, line in enumerate(path.read_text().splitlines(), 1)
            if line.strip()
        ]
    elif path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = [_row(r, path.parent, i) for i, r in enumerate(csv.DictReader(f), 2)]
    else:
        raise InvalidOptionError(
            f"no dataset at {path}: give a .jsonl or .csv manifest, or a folder of audio with .txt references."
        )
    if not rows:
        raise InvalidOptionError(f"{path} holds no utterances with reference texts.")
    return rows[:limit] if limit else rows


def _row(record: dict, root: Path, line: int) -> Utterance:
    if "audio" not in record or "text" not in record:
        raise InvalidOptionError(f"manifest line {line} needs 'audio' and 'text' fields, got {sorted(record)}.")
    extra = {k: root / record[k] for k in ("rttm", "languages") if record.get(k)}
    return Utterance(root / record["audio"], record["text"], record.get("language") or None, **extra)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate(
    model: str,
    dataset: str | Path,
    language: str | None = None,
    limit: int | None = None,
    backend: str | None = None,
    transcriber=None,
) -> Evaluation:
    """Transcribe every utterance and score it; nothing is logged (see `log_evaluation`)."""
    from asrflow.transcriber import load_transcriber

    utterances = load_dataset(dataset, limit)
    started = time.perf_counter()
    transcriber = transcriber or load_transcriber(model, backend=backend)
    load_seconds = time.perf_counter() - started
    rows, latencies, audio_seconds, refs, hyps, extras = [], [], 0.0, [], [], Extras()
    for utt in utterances:
        lang = language or utt.language
        t0 = time.perf_counter()
        try:
            samples = decode_audio(utt.audio)
            t0 = time.perf_counter()
            result = transcriber.transcribe(samples, **extras.options(utt, lang))
            hypothesis, lang = result.text, lang or result.language  # the normalizer follows the language
            audio_seconds += len(samples) / SAMPLE_RATE
            error = None
            extras.score(utt, result)
        except AsrflowError as e:  # a bad file counts as all words deleted, and the run goes on
            hypothesis, error = "", str(e)
        latencies.append(time.perf_counter() - t0)
        ref, hyp = normalize(utt.text, lang), normalize(hypothesis, lang)
        refs.append(ref)
        hyps.append(hyp)
        out = jiwer.process_words(ref or "-", hyp)
        rows.append(
            {
                "audio": utt.audio.name,
                "reference": utt.text,
                "hypothesis": hypothesis,
                "wer": round(out.wer, 4),
                "substitutions": out.substitutions,
                "deletions": out.deletions,
                "insertions": out.insertions,
                "words": len(ref.split()),
                "latency": round(latencies[-1], 3),
                "error": error,
            }
        )
    totals = jiwer.process_words(refs, hyps)
    wall = sum(latencies)
    rows.sort(key=lambda r: (-r["wer"], r["audio"]))
    return Evaluation(
        model=model,
        dataset=str(dataset),
        utterances=len(rows),
        wer=round(totals.wer, 4),
        cer=round(jiwer.cer(refs, hyps), 4),
        substitutions=totals.substitutions,
        deletions=totals.deletions,
        insertions=totals.insertions,
        audio_seconds=round(audio_seconds, 2),
        wall_seconds=round(wall, 3),
        real_time_factor=round(audio_seconds / wall, 2) if wall else 0.0,
        latency_p50=round(statistics.median(latencies), 3),
        latency_p95=round(_percentile(latencies, 95), 3),
        load_seconds=round(load_seconds, 3),
        peak_rss_mb=round(_peak_rss_mb(), 1),
        rows=rows,
        **extras.totals(),
    )


class Extras:
    """Who spoke when and which language, for utterances whose references say: the options that find them,
    and their scores (DER over all the reference speech; the share of segments in the right language)."""

    def __init__(self):
        self.errors = self.speech = 0.0
        self.hits = self.scored = 0

    def options(self, utt: Utterance, language: str | None) -> dict:
        return {
            "language": None if utt.languages else language,
            "multilingual": bool(utt.languages),
            "diarize": bool(utt.rttm),
        }

    def score(self, utt: Utterance, result) -> None:
        from asrflow.metrics import diarization_errors, language_hits, read_rttm

        if utt.rttm:
            found = diarization_errors(read_rttm(utt.rttm.read_text()), result.segments)
            self.errors += found["missed detection"] + found["false alarm"] + found["confusion"]
            self.speech += found["total"]
        if utt.languages:
            turns = [json.loads(line) for line in utt.languages.read_text().splitlines() if line.strip()]
            hits, scored = language_hits(turns, result.segments)
            self.hits, self.scored = self.hits + hits, self.scored + scored

    def totals(self) -> dict:
        return {
            "der": round(self.errors / self.speech, 4) if self.speech else None,
            "language_accuracy": round(self.hits / self.scored, 4) if self.scored else None,
        }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def log_evaluation(result: Evaluation, prefix: str = "") -> None:
    """Log metrics, params and the per-utterance table (worst first) in the active run."""
    import mlflow
    import pandas as pd

    model_id = _logged_model_id(result.model)
    mlflow.log_params(
        {f"{prefix}model": result.model, f"{prefix}dataset": result.dataset, f"{prefix}utterances": result.utterances}
    )
    mlflow.log_metrics({f"{prefix}{k}": v for k, v in result.metrics().items()}, model_id=model_id)
    mlflow.log_table(pd.DataFrame(result.rows), artifact_file=f"{prefix}per_utterance.json")


def _logged_model_id(model: str) -> str | None:
    """The MLflow logged-model id behind a models:/ URI, so metrics attach to the model."""
    from asrflow.registry import registered_version

    if model.startswith("models:/m-"):
        return model.removeprefix("models:/")
    version = registered_version(model)
    return version.model_id if version else None


def run_evaluation(model: str, dataset, language=None, limit=None, experiment: str | None = None) -> Evaluation:
    """Evaluate and log in a new run of the experiment."""
    import mlflow

    from asrflow.registry import DEFAULT_EXPERIMENT, set_experiment

    set_experiment(experiment or DEFAULT_EXPERIMENT)
    result = evaluate(model, dataset, language, limit)
    with mlflow.start_run(run_name=f"evaluate {model}") as run:
        mlflow.set_tag("asrflow.task", "evaluate")
        log_evaluation(result)
    result.run_id = run.info.run_id
    return result


def compare(model_a: str, model_b: str, dataset, language=None, limit=None, experiment: str | None = None):
    """Evaluate both models on the same audio in one run; metrics prefixed a_ and b_."""
    import mlflow

    from asrflow.registry import DEFAULT_EXPERIMENT, set_experiment

    set_experiment(experiment or DEFAULT_EXPERIMENT)
    a = evaluate(model_a, dataset, language, limit)
    b = evaluate(model_b, dataset, language, limit)
    with mlflow.start_run(run_name=f"compare {model_a} vs {model_b}") as run:
        mlflow.set_tag("asrflow.task", "compare")
        log_evaluation(a, "a_")
        log_evaluation(b, "b_")
        mlflow.log_metrics({f"delta_{k}": b.metrics()[k] - a.metrics()[k] for k in a.metrics()})
    a.run_id = b.run_id = run.info.run_id
    return a, b


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    reason: str
    candidate_wer: float
    champion_wer: float | None
    champion_version: str | None


def promote(
    name: str, alias: str, candidate: str, dataset, tolerance: float = 0.0, language=None, limit=None
) -> Promotion:
    """Move `alias` to version `candidate` only if its WER is not worse than the current holder's."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from asrflow.registry import DEFAULT_EXPERIMENT, set_experiment

    set_experiment(DEFAULT_EXPERIMENT)
    client = MlflowClient()
    try:
        champion = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        champion = None
    cand = evaluate(f"models:/{name}/{candidate}", dataset, language, limit)
    champ = (
        evaluate(f"models:/{name}/{champion}", dataset, language, limit)
        if champion and champion != str(candidate)
        else None
    )
    if champ is None:
        promoted = True
        reason = f"no version held @{alias}" if not champion else f"version {candidate} already holds @{alias}"
    else:
        promoted = cand.wer <= champ.wer + tolerance
        verdict = "not worse than" if promoted else "worse than"
        reason = (
            f"candidate v{candidate} WER {cand.wer:.4f} is {verdict} champion v{champion} WER {champ.wer:.4f}"
            f" (tolerance {tolerance})"
        )
    with mlflow.start_run(run_name=f"promote {name} v{candidate} @{alias}"):
        mlflow.set_tags(
            {
                "asrflow.task": "promote",
                "asrflow.decision": "promoted" if promoted else "refused",
                "asrflow.reason": reason,
            }
        )
        log_evaluation(cand, "candidate_")
        if champ:
            log_evaluation(champ, "champion_")
    decision = "promoted" if promoted else "refused"
    client.set_model_version_tag(name, str(candidate), f"asrflow.promotion.{alias}", decision)
    client.set_model_version_tag(name, str(candidate), "asrflow.wer", str(cand.wer))
    client.set_model_version_tag(name, str(candidate), f"asrflow.promotion.{alias}.reason", reason)
    if champ:
        client.set_model_version_tag(name, str(champion), "asrflow.wer", str(champ.wer))
    if promoted:
        client.set_registered_model_alias(name, alias, str(candidate))
    return Promotion(promoted, reason, cand.wer, champ.wer if champ else None, champion)
