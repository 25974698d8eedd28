"""Writers: Transcript -> txt, json, srt, vtt, tsv text, one small function per format."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from asrflow.errors import InvalidOptionError
from asrflow.transcript import Transcript


def format_timestamp(seconds: float, decimal: str = ",", always_hours: bool = True) -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _cues(transcript: Transcript):
    """Non-empty segments in time order, each lasting at least a millisecond."""
    for segment in sorted(transcript.segments, key=lambda s: (s.start, s.end)):
        text = segment.text.strip().replace("-->", "->")
        if text:
            yield segment.start, max(segment.end, segment.start + 0.001), text


def write_txt(transcript: Transcript) -> str:
    return transcript.text.strip() + "\n"


def write_json(transcript: Transcript) -> str:
    return transcript.to_json(indent=2) + "\n"


def write_srt(transcript: Transcript) -> str:
    blocks = [
        f"{i}\n{format_timestamp(start)} --> {format_timestamp(end)}\n{text}\n"
        for i, (start, end, text) in enumerate(_cues(transcript), start=1)
    ]
    return "\n".join(blocks)


def write_vtt(transcript: Transcript) -> str:
    blocks = [
        f"{format_timestamp(start, '.')} --> {format_timestamp(end, '.')}\n{text}\n" for start, end, text in _cues(transcript)
    ]
    return "\n".join(["WEBVTT\n"] + blocks)


def write_tsv(transcript: Transcript) -> str:
    rows = [f"{int(start * 1000)}\t{int(end * 1000)}\t{text}" for start, end, text in _cues(transcript)]
    return "\n".join(["start\tend\ttext"] + rows) + "\n"


WRITERS: dict[str, Callable[[Transcript], str]] = {
    "txt": write_txt,
    "json": write_json,
    "srt": write_srt,
    "vtt": write_vtt,
    "tsv": write_tsv,
}


def get_writer(format: str) -> Callable[[Transcript], str]:
    if format not in WRITERS:
        raise InvalidOptionError(f"unknown output format {format!r}: choose one of {', '.join(WRITERS)}.")
    return WRITERS[format]


TEMP_SUFFIX = re.compile(r"\.asrflow-(\d+)\.tmp$")  # .NAME.asrflow-PID.tmp: whose it is, and whether it is alive


def write_file(transcript: Transcript, path: Path, format: str) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a half-written output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.asrflow-{os.getpid()}.tmp")
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
