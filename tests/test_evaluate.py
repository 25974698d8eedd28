"""Evaluation logged to a real MLflow store, checked against an independent jiwer computation; promotion."""

import json
import shutil
import uuid
from pathlib import Path

import jiwer
import mlflow
import pytest
from conftest import DATA, cli
from mlflow import MlflowClient

from asrflow import registry
from asrflow.evaluate import load_dataset, promote, run_evaluation
from asrflow.lifecycle import log


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Four utterances of the dev corpus, as a JSONL manifest elsewhere (paths relative to it)."""
    root = tmp_path_factory.mktemp("dataset")
    rows = [json.loads(line) for line in (DATA / "manifest.jsonl").read_text().splitlines()][:4]
    for row in rows:
        (root / row["audio"]).write_bytes((DATA / row["audio"]).read_bytes())
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps({"audio": r["audio"], "text": r["text"]}) + "\n" for r in rows))
    return path


def test_dataset_formats(manifest, tmp_path):
    assert len(load_dataset(manifest)) == 4
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(
        "audio,text\n"
        + "".join(f"{manifest.parent / u.audio.name},{u.text.replace(',', '')}\n" for u in load_dataset(manifest))
    )
    assert len(load_dataset(csv_path, limit=2)) == 2
    folder = tmp_path / "folder"
    folder.mkdir()
    for u in load_dataset(manifest):
        (folder / u.audio.name).write_bytes(u.audio.read_bytes())
        (folder / u.audio.name).with_suffix(".txt").write_text(u.text)
    assert [u.text for u in load_dataset(folder)] == [u.text for u in load_dataset(manifest)]


def test_evaluate_logs_metrics_matching_jiwer(manifest):
    from whisper_normalizer.english import EnglishTextNormalizer

    result = run_evaluation("bundled:tiny.en", manifest)
    run = MlflowClient().get_run(result.run_id)
    normalizer = EnglishTextNormalizer()
    by_audio = {r["audio"]: r for r in result.rows}
    refs = [normalizer(u.text) for u in load_dataset(manifest)]
    hyps = [normalizer(by_audio[u.audio.name]["hypothesis"]) for u in load_dataset(manifest)]
    expected = jiwer.wer(refs, hyps)
    assert run.data.metrics["wer"] == pytest.approx(expected, abs=1e-4)
    assert run.data.metrics["real_time_factor"] > 0 and run.data.metrics["peak_rss_mb"] > 100
    assert run.data.metrics["latency_p95"] >= run.data.metrics["latency_p50"] > 0
    table = json.loads(
        Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="per_utterance.json")).read_text()
    )
    wers = [row[table["columns"].index("wer")] for row in table["data"]]
    assert wers == sorted(wers, reverse=True) and len(wers) == 4


def test_promote_refuses_worse_and_accepts_better(manifest):
    name = f"whisper-promotion-{uuid.uuid4().hex[:8]}"  # a new model: versions 1-2 whatever the store holds
    # reference-only: the registry's versions name the bundled models (promotion does not read the weights' copies)
    tiny = log("bundled:tiny.en", register_as=name, alias="champion", reference_only=True)  # v1 holds champion
    base = log("bundled:base", register_as=name, reference_only=True)  # v2: multilingual base, better WER
    assert (tiny.registered, base.registered) == (f"models:/{name}/1", f"models:/{name}/2")

    better = promote(name, "champion", "2", manifest, language="en")
    assert better.promoted and better.candidate_wer < better.champion_wer
    assert str(MlflowClient().get_model_version_by_alias(name, "champion").version) == "2"

    # the champion it was, now the worse candidate: its WER tag, written as champion, is taken off to be written anew
    MlflowClient(registry.tracking_uri()).delete_model_version_tag(name, "1", "asrflow.wer")
    result = cli("promote", name, "--candidate", "1", "--dataset", str(manifest), "--language", "en")
    assert result.returncode == 1 and result.stdout.startswith("refused: "), result.stdout + result.stderr
    client = MlflowClient(registry.tracking_uri())
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    tags = client.get_model_version(name, "1").tags
    assert tags["asrflow.promotion.champion"] == "refused" and float(tags["asrflow.wer"]) > float(
        client.get_model_version(name, "2").tags["asrflow.wer"]
    )


def test_evaluate_cli_json(manifest):
    result = cli("evaluate", "bundled:tiny.en", str(manifest), "--limit", "2", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["utterances"] == 2 and 0 <= data["wer"] < 0.5


def test_the_normalizer_follows_the_utterances_language(tmp_path, ct2_base):
    """No language given: German is scored with Whisper's basic normalizer, which keeps diacritics
    (the English one strips them, and would score a reference without them as perfect)."""
    from asrflow.evaluate import evaluate

    hypothesis = ct2_base.transcribe(DATA / "german.mp3").text
    assert any(c in hypothesis for c in "äöüÄÖÜ"), hypothesis
    reference = hypothesis.translate(str.maketrans("äöüÄÖÜ", "aouAOU"))
    shutil.copy(DATA / "german.mp3", tmp_path / "german.mp3")
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": "german.mp3", "text": reference}) + "\n")
    result = evaluate("bundled:base", tmp_path / "m.jsonl")
    assert result.rows[0]["hypothesis"] == hypothesis and result.wer > 0


def test_evaluate_scores_speakers_and_languages_where_references_give_them(tmp_path):
    """A manifest row with an RTTM is diarized and scored by DER; one with turn languages is transcribed
    multilingual and scored by the share of segments in their turn's language; both logged like WER."""
    from asrflow.audio import decode_audio
    from asrflow.encoding import encode_audio

    speakers = run_evaluation("bundled:tiny.en", DATA / "conversations.jsonl")
    metrics = MlflowClient().get_run(speakers.run_id).data.metrics
    assert metrics["der"] == speakers.der and 0 <= speakers.der <= 0.10
    assert "language_accuracy" not in metrics and speakers.wer < 0.2

    turns = [json.loads(line) for line in (DATA / "mixed-languages.jsonl").read_text().splitlines()][:2]  # en, de
    encode_audio(
        decode_audio(DATA / "mixed-languages.ogg")[: int((turns[1]["end"] + 0.5) * 16000)],
        "flac",
        file=tmp_path / "en-de.flac",
    )
    (tmp_path / "en-de.jsonl").write_text("".join(json.dumps(t) + "\n" for t in turns))
    (tmp_path / "manifest.jsonl").write_text(
        json.dumps({"audio": "en-de.flac", "text": " ".join(t["text"] for t in turns), "languages": "en-de.jsonl"})
        + "\n"
    )
    languages = run_evaluation("bundled:base", tmp_path / "manifest.jsonl")
    # at least one turn of two: unlisted, base takes this short synthetic German turn for Latvian on some CPUs' int8 arithmetic
    assert 0.5 <= languages.language_accuracy <= 1.0 and languages.der is None
    assert MlflowClient().get_run(languages.run_id).data.metrics["language_accuracy"] == languages.language_accuracy
