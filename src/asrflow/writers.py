"""Writers: Transcript -> txt, json, srt, vtt, tsv, jsonl text; all but json also a segment at a time, as decoded."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from asrflow.errors import InvalidOptionError
from asrflow.transcript import Segment, Transcript


def format_timestamp(seconds: float, decimal: str = ",", always_hours: bool = True) -> str:
    ms = round(max(seconds, 0.0) * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _cue(segment: Segment) -> tuple[float, float, str] | None:
    """A segment as a subtitle cue: its text on one line, lasting at least a millisecond; None when empty."""
    text = " ".join(segment.text.split()).replace("-->", "->")
    return (segment.start, max(segment.end, segment.start + 0.001), text) if text else None


@dataclass(frozen=True)
class Format:
    """A format written a segment at a time: a head, a piece per segment (numbered from 1; given the file's
    language too), a tail. Written as segments are decoded, an output cut short anywhere between pieces is still a
    valid file of its format."""

    head: Callable[[], str]
    piece: Callable[[int, Segment, str | None], str]
    tail: Callable[[Transcript], str]


def _said(s: Segment, text: str) -> str:
    """A diarized segment's text with its speaker in front: [A] text (srt, txt)."""
    return f"[{s.speaker}] {text}" if s.speaker else text


def _srt(i: int, s: Segment, language: str | None = None) -> str:
    start, end, text = _cue(s)
    return f"{'' if i == 1 else chr(10)}{i}\n{format_timestamp(start)} --> {format_timestamp(end)}\n{_said(s, text)}\n"


def _vtt(i: int, s: Segment, language: str | None = None) -> str:
    """A cue; its speaker in WebVTT's voice span, its language in a language span when not the file's
    (multilingual: a German sentence in an English file is `<lang de>...</lang>`)."""
    start, end, text = _cue(s)
    if s.language and language and s.language != language:
        text = f"<lang {s.language}>{text}</lang>"
    voice = f"<v {s.speaker}>" if s.speaker else ""
    return f"\n{format_timestamp(start, '.')} --> {format_timestamp(end, '.')}\n{voice}{text}\n"


def _txt(i: int, s: Segment, language: str | None = None) -> str:
    """Plain text runs on; with speakers, a line a segment, each with its speaker."""
    if s.speaker:
        return ("" if i == 1 else "\n") + _said(s, s.text.strip())
    return ("" if i == 1 else " ") + s.text.strip()


def _tsv(i: int, s: Segment, language: str | None = None) -> str:
    start, end, text = _cue(s)
    return f"{int(start * 1000)}\t{int(end * 1000)}\t{text}\t{s.language or ''}\t{s.speaker or ''}\n"


def _jsonl(i: int, s: Segment, language: str | None = None) -> str:
    return json.dumps(asdict(s), ensure_ascii=False) + "\n"


FORMATS: dict[str, Format] = {
    "txt": Format(lambda: "", _txt, lambda t: "\n"),
    "srt": Format(lambda: "", _srt, lambda t: ""),
    "vtt": Format(lambda: "WEBVTT\n", _vtt, lambda t: ""),
    "tsv": Format(lambda: "start\tend\ttext\tlanguage\tspeaker\n", _tsv, lambda t: ""),  # Whisper's columns, then ours
    "jsonl": Format(lambda: "", _jsonl, lambda t: ""),
}


def write_incrementally(
    format: str, segments: Iterable[Segment], out: TextIO, language: str | None | Callable[[], str | None] = None
) -> int:
    """Write `segments` (of a file in `language`: or a function that tells it once it is known, as a multilingual
    stream's is after its regions' detection) to `out` as they come (flushed after each); returns how many."""
    spec = FORMATS[format]
    out.write(spec.head())
    count = 0
    for segment in segments:
        if _cue(segment):
            count += 1
            out.write(spec.piece(count, segment, language() if callable(language) else language))
            out.flush()
    return count


def _whole(spec: Format) -> Callable[[Transcript], str]:
    def write(transcript: Transcript) -> str:
        cues = [s for s in sorted(transcript.segments, key=lambda s: (s.start, s.end)) if _cue(s)]
        return (
            spec.head()
            + "".join(spec.piece(i, s, transcript.language) for i, s in enumerate(cues, start=1))
            + spec.tail(transcript)
        )

    return write


def write_txt(transcript: Transcript) -> str:
    if any(s.speaker for s in transcript.segments):
        return _whole(FORMATS["txt"])(transcript)
    return transcript.text.strip() + "\n"


def write_json(transcript: Transcript) -> str:
    return transcript.to_json(indent=2) + "\n"


WRITERS: dict[str, Callable[[Transcript], str]] = {
    "txt": write_txt,
    "json": write_json,
    **{name: _whole(spec) for name, spec in FORMATS.items() if name != "txt"},
}


def get_writer(format: str) -> Callable[[Transcript], str]:
    if format not in WRITERS:
        raise InvalidOptionError(f"unknown output format {format!r}: choose one of {', '.join(WRITERS)}.")
    return WRITERS[format]


TEMP_SUFFIX = re.compile(r"\.asrflow-(\d+)\.tmp$")  # .NAME.asrflow-PID.tmp: whose it is, and whether it is alive


def output_folder(path: str | Path) -> Path:
    """The folder outputs go to, created if need be; one that cannot be is an error naming it (before any work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InvalidOptionError(f"{str(path)!r} is a file, not a folder: give a folder for the outputs.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".asrflow-{os.getpid()}.tmp"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise InvalidOptionError(
            f"cannot write outputs to {str(path)!r} ({e.strerror or e}): give a folder you can "
            "write to (it is created if it does not exist)."
        ) from None
    return path


def temp_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: beside it (a rename within a folder is atomic),
    named after this process so that remove_dead_temp_files can tell a killed run's leftovers."""
    return path.with_name(f".{path.name}.asrflow-{os.getpid()}.tmp")


def write_file(transcript: Transcript, path: Path, format: str) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a half-written output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.write_text(get_writer(format)(transcript), encoding="utf-8")
    tmp.replace(path)
    return path


def remove_dead_temp_files(folder: Path) -> int:
    """Temp files that asrflow processes no longer running left behind (a killed run); nobody else's."""
    removed = 0
    for tmp in folder.rglob(".*.asrflow-*.tmp"):
        found = TEMP_SUFFIX.search(tmp.name)
        if found and not _alive(int(found.group(1))):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, someone else's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
