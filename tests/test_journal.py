"""The resume journal: rewritten atomically, resumed only for the options, model and audio it was made with."""

import hashlib
import json
import os
import shutil
from dataclasses import replace

import pytest
from conftest import DATA

from asrflow.journal import journal_header, journal_path, read_journal, transcribe_resumably
from asrflow.transcript import Segment

JOURNALED = [Segment(0.0, 1.0, "JOURNALED", []), Segment(1.0, 2.0, "ALSO JOURNALED", [])]


@pytest.fixture()
def clip(tmp_path):
    path = tmp_path / "talk.flac"
    shutil.copy(DATA / "dev010.flac", path)
    return path


def write_journal(journal, header, segments=JOURNALED):
    journal.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"language": "en"} | header] + [{"start": s.start, "end": s.end, "text": s.text} for s in segments]
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_the_header_names_the_model_and_the_audios_size_and_hash(ct2_transcriber, clip):
    header = journal_header(ct2_transcriber, str(clip), ct2_transcriber.options)
    assert header["audio"] == {"size": clip.stat().st_size, "sha256": hashlib.sha256(clip.read_bytes()).hexdigest()}
    assert header["model"]["backend"] == "ctranslate2" and len(header["model"]["sha256"]) == 64
    assert header["options"] == ct2_transcriber.options.to_dict()


def test_a_crash_while_the_journal_is_rewritten_loses_no_segment(ct2_transcriber, clip, tmp_path, monkeypatch):
    journal = journal_path(tmp_path / "out" / "talk.txt")
    write_journal(journal, journal_header(ct2_transcriber, str(clip), ct2_transcriber.options))
    before = journal.read_text()
    # killed right after resuming began, before any new segment: the journaled ones are all there
    transcribe_resumably(ct2_transcriber, str(clip), ct2_transcriber.options, journal)
    assert read_journal(journal)[1] == JOURNALED
    # killed in the middle of the rewrite: the journal is the old one, whole
    journal.write_text(before)

    def crash(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        transcribe_resumably(ct2_transcriber, str(clip), ct2_transcriber.options, journal)
    assert journal.read_text() == before


def test_a_journal_of_other_options_model_or_audio_starts_over_saying_why(ct2_transcriber, clip, tmp_path):
    journal = journal_path(tmp_path / "out" / "talk.txt")
    options = ct2_transcriber.options
    header = journal_header(ct2_transcriber, str(clip), options)

    def resumed(made_with: dict) -> tuple[list[str], list[str]]:
        write_journal(journal, made_with)
        notes = []
        transcript = transcribe_resumably(ct2_transcriber, str(clip), options, journal, note=notes.append).collect()
        return [s.text for s in transcript.segments], notes

    texts, notes = resumed(header)
    assert texts[:2] == ["JOURNALED", "ALSO JOURNALED"] and "weekend" in " ".join(texts) and notes == []
    for changed, why in [
        ({"options": replace(options, beam_size=1).to_dict()}, "other options"),
        ({"model": header["model"] | {"sha256": "0" * 64}}, "another model"),
    ]:
        texts, notes = resumed(header | changed)
        assert "JOURNALED" not in texts and "weekend" in " ".join(texts)
        assert notes == [f"the journal of {tmp_path / 'out' / 'talk.txt'} was made with {why}: starting over"]
    shutil.copy(DATA / "dev002.flac", clip)  # the same name, other audio
    texts, notes = resumed(header)
    assert "JOURNALED" not in texts and "weekend" not in " ".join(texts)
    assert notes and "other audio" in notes[0]
