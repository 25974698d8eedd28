"""Partial work survives crashes: the segments of a file being transcribed, appended to a journal as decoded.

A journal is a JSON-lines file beside the outputs (`.NAME.asrflow-journal.jsonl`): a first line with the
language, then one segment per line, each flushed as it is decoded. A run killed anywhere leaves a journal whose
complete lines are the segments so far; resuming reads them back and transcribes from the end of the last one
(the samples before it are decoded and skipped, not transcribed again). The journal is removed once the
outputs are written.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from asrflow.audio import AudioInput
from asrflow.options import TranscribeOptions
from asrflow.transcript import Segment, SegmentStream
from asrflow.writers import FORMATS

JSONL = FORMATS["jsonl"]


def journal_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.asrflow-journal.jsonl")


def read_journal(path: Path) -> tuple[dict, list[Segment]]:
    """The header and the complete segments of a journal (a line cut short by a crash is ignored)."""
    header, segments = {}, []
    if not path.is_file():
        return header, segments
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            break  # the line being written when the run stopped
        if i == 0:
            header = data
        else:
            segments.append(Segment.from_dict(data))
    return header, segments


def transcribe_resumably(transcriber, audio: AudioInput, options: TranscribeOptions, journal: Path,
                         resume: bool = True, **kwargs) -> SegmentStream:
    """Like `transcriber.stream(audio, options)`, keeping a journal; with `resume`, the segments a previous run
    journaled with the same options come first and decoding goes on after them. Remove the journal once the
    outputs are written."""
    header, done = read_journal(journal) if resume else ({}, [])
    if header.get("options") != options.to_dict():
        header, done = {}, []  # other options (or none journaled): that work does not count
    decoding = replace(options, language=header.get("language") or options.language)
    stream = transcriber.stream(audio, decoding, start=done[-1].end if done else 0.0, **kwargs)
    journal.parent.mkdir(parents=True, exist_ok=True)
    out = open(journal, "w", encoding="utf-8")
    out.write(json.dumps({"language": stream.language, "options": options.to_dict()}) + "\n")
    decoded = stream.segments

    def segments() -> Iterator[Segment]:
        with out:
            for segment in itertools.chain(done, decoded):
                out.write(JSONL.piece(0, segment))  # the jsonl writer's line
                out.flush()
                yield segment

    stream.segments = segments()  # the same stream: its duration still grows as blocks are decoded
    return stream
