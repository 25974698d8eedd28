"""Partial work survives crashes: the segments of a file being transcribed, appended to a journal as decoded.

A journal is a JSON-lines file beside the outputs (`.NAME.asrflow-journal.jsonl`): a first line with the
language and what the segments came from (options, model, audio), then one segment per line, each flushed as it
is decoded. A run killed anywhere leaves a journal whose complete lines are the segments so far; resuming reads
them back and transcribes from the end of the last one (the samples before it are decoded and skipped, not
transcribed again), unless the options, the model or the audio are not the journal's: then it starts over. The
journal is removed once the outputs are written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from asrflow.audio import AudioInput
from asrflow.models import ModelSource, model_info
from asrflow.options import TranscribeOptions
from asrflow.transcript import Segment, SegmentStream
from asrflow.writers import FORMATS, temp_path

JSONL = FORMATS["jsonl"]
SUFFIX = ".asrflow-journal.jsonl"
# what a journal's segments came from -> how a note names a difference in it
MADE_WITH = {"options": "other options", "model": "another model", "audio": "other audio (the file changed)"}


def journal_path(output: Path) -> Path:
    return output.with_name(f".{output.name}{SUFFIX}")


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


def journal_header(transcriber, audio: AudioInput, options: TranscribeOptions) -> dict:
    """What a journal's segments came from: segments of other options, another model or other audio do not count."""
    return {"options": options.to_dict(), "model": model_identity(transcriber), "audio": audio_identity(audio)}


def model_identity(transcriber) -> dict:
    """The backend, and the SHA-256 of the weights (models.model_info, as logged models record it) or, where there
    are no local weights (a hub id), the model's name. Not the name beside the weights: models:/NAME@champion
    may mean other weights tomorrow, and models:/NAME/3 the same ones under another name."""
    digest = _weights_sha256(transcriber.source)
    named = {"sha256": digest} if digest else {"model": transcriber.source.name}
    return {"backend": transcriber.backend.name} | named


@functools.cache
def _weights_sha256(source: ModelSource) -> str | None:
    """Once a process: a large model's weights (3 GB) take seconds to hash, and batch journals every file."""
    return model_info(source).get("sha256")


def audio_identity(audio: AudioInput) -> dict:
    """A file's size and SHA-256, read a block at a time (hours of audio never sit in memory); a URL as given.

    The whole file rather than its first and last MB: an hour of 48 kHz stereo WAV (690 MB) hashes in about half a
    second, little beside transcribing it, and an edit inside a file (a name bleeped out) keeps its size and ends."""
    if isinstance(audio, (str, Path)) and Path(audio).is_file():
        with open(audio, "rb") as f:
            return {"size": os.fstat(f.fileno()).st_size, "sha256": hashlib.file_digest(f, "sha256").hexdigest()}
    return {"url": audio} if isinstance(audio, str) else {}


def transcribe_resumably(
    transcriber,
    audio: AudioInput,
    options: TranscribeOptions,
    journal: Path,
    resume: bool = True,
    note: Callable[[str], None] | None = None,
    **kwargs,
) -> SegmentStream:
    """Like `transcriber.stream(audio, options)` (audio: a file or URL), keeping a journal; with `resume`, the
    segments a previous run journaled from the same options, model and audio come first and decoding goes on after
    them. `note(message)` hears why a journal was not resumed. Remove the journal once the outputs are written."""
    header = journal_header(transcriber, audio, options)
    journaled, done = read_journal(journal) if resume else ({}, [])
    if journaled and (changed := [key for key in header if journaled.get(key) != header[key]]):
        if note:
            output = journal.with_name(journal.name.removeprefix(".").removesuffix(SUFFIX))
            note(f"the journal of {output} was made with {MADE_WITH[changed[0]]}: starting over")
        journaled, done = {}, []
    decoding = replace(options, language=journaled.get("language") or options.language)
    stream = transcriber.stream(audio, decoding, start=done[-1].end if done else 0.0, **kwargs)
    out = rewrite_journal(journal, {"language": stream.language} | header, done)
    decoded = stream.segments

    def segments() -> Iterator[Segment]:
        yield from done
        with out:
            for segment in decoded:
                if segment is None:  # a step of work without a segment (SegmentStream)
                    yield segment
                    continue
                out.write(JSONL.piece(0, segment))  # the jsonl writer's line
                out.flush()
                yield segment

    stream.segments = segments()  # the same stream: its duration still grows as blocks are decoded
    return stream


def rewrite_journal(path: Path, header: dict, segments: list[Segment]) -> TextIO:
    """The journal holding `header` and `segments`, open for appending more. Written to a temp file beside it,
    synced to disk, then renamed over it: a crash meanwhile leaves the old journal whole (opened with "w" it would
    be empty until its segments were written back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        f.writelines(JSONL.piece(0, segment) for segment in segments)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return open(path, "a", encoding="utf-8")
