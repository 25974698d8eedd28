"""Audio of any length in bounded memory: decoded samples gathered into blocks cut at quiet points, each block
transcribed by the backend, the segments shifted to the file's time.

A file shorter than one block is one block: the backends see exactly the samples they saw before. Longer audio
holds at most one block (10 minutes, 38 MB of samples) and what the decoder is working on, however many hours
the file lasts. Each block after the first keeps the first one's language, and its decoding starts afresh
(the text before the cut is not carried over as a prompt; the cut is at the quietest moment near the block's end).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

import numpy as np

from asrflow.audio import SAMPLE_RATE
from asrflow.options import TranscribeOptions
from asrflow.transcript import Segment, SegmentStream
from asrflow.vad import is_silent, quiet_cut

BLOCK_SECONDS = 600.0
SEARCH_SECONDS = 30.0  # the cut is at the quietest half second of a block's last 30 s
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def _glibc():
    """The C library where it is glibc (mallopt, malloc_trim), else None (musl and others: a no-op)."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_libc = _glibc()
_heap_kept = False


def keep_heap_flat() -> None:
    """Have glibc give every allocation of 4 MB or more its own mapping, returned when freed. By default the
    threshold rises to the largest block freed so far (up to 32 MB), after which the decoder's many-MB buffers
    come from the heap and fragment it: an hour of audio then peaked 60-90 MB above ten minutes (545-560 vs
    470 MB); with this it is flat (430 vs 425) and no slower (1 MB was 40% slower).

    A setting of the whole process: asrflow's entry points make it, loading a model never does (process.py)."""
    global _heap_kept
    if not _heap_kept and _libc is not None:
        _libc.mallopt(M_MMAP_THRESHOLD, 4 * 2**20)
        _heap_kept = True


def trim_heap() -> None:
    """Give the free pages of every heap back to the system (glibc's malloc_trim), after each block. The
    encoder's and the decoder's worker threads each allocate from heaps of their own, and what a block's
    decoding freed there stayed mapped: an hour of audio peaked 50-130 MB above ten minutes without this."""
    if _libc is not None:
        _libc.malloc_trim(0)


def blocks(
    pieces: Iterable[np.ndarray], block_seconds: float = BLOCK_SECONDS, start: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """(first sample, samples) for consecutive blocks of at most `block_seconds`, the last one whatever is left,
    from sample `start` on (what comes before it is decoded and dropped)."""
    size = int(block_seconds * SAMPLE_RATE)
    buffer, filled, offset, skip = np.empty(size, np.float32), 0, start, start
    for piece in pieces:
        if skip:
            piece, skip = piece[skip:], max(0, skip - len(piece))
        while len(piece):
            taken = min(len(piece), size - filled)
            buffer[filled : filled + taken], piece, filled = piece[:taken], piece[taken:], filled + taken
            if filled == size:
                cut = quiet_cut(buffer, int(min(SEARCH_SECONDS, block_seconds / 2) * SAMPLE_RATE))
                block, buffer = buffer, np.empty(size, np.float32)  # each block its own array, freed once decoded
                buffer[: size - cut], filled = block[cut:], size - cut
                yield offset, block[:cut]
                offset, block = offset + cut, None
    if filled:
        yield offset, buffer[:filled]


def stream_blocks(
    decode: Callable[[np.ndarray, TranscribeOptions], SegmentStream],
    pieces: Iterable[np.ndarray],
    options: TranscribeOptions,
    default_language: str | None,
    block_seconds: float = BLOCK_SECONDS,
    start: float = 0.0,
) -> SegmentStream:
    """A SegmentStream over all the blocks (from `start` seconds on): language from the first block with sound,
    duration growing as blocks are decoded (the whole file's once the stream is exhausted)."""
    parts = blocks(pieces, block_seconds, int(start * SAMPLE_RATE))
    seen = int(start * SAMPLE_RATE)
    for offset, samples in parts:  # silent blocks before the first sound: nothing to decode
        seen = offset + len(samples)
        if not is_silent(samples):
            first = decode(samples, options)
            break
    else:
        return SegmentStream(iter(()), options.language or default_language, None, seen / SAMPLE_RATE)
    stream = SegmentStream(iter(()), first.language, first.language_probability, seen / SAMPLE_RATE)
    later = replace(options, language=first.language) if first.language and not options.multilingual else options

    def segments() -> Iterator[Segment | None]:
        for segment in shifted(first.segments, offset, first):
            if stream.language is None:  # known once the first block's regions are detected (multilingual)
                stream.language, stream.language_probability = first.language, first.language_probability
            yield segment
        for at, samples in parts:
            trim_heap()
            stream.duration = (at + len(samples)) / SAMPLE_RATE
            if not is_silent(samples):
                yield from shifted(decode(samples, later).segments, at, first)
            del samples  # not held while the next block is read

    stream.segments = segments()
    return stream


def shifted(segments: Iterable[Segment | None], offset: int, file: SegmentStream) -> Iterator[Segment | None]:
    """Segments in the file's time, each with its language (the file's, unless the backend found its own); the
    steps without a segment (None) pass."""
    seconds = offset / SAMPLE_RATE
    for s in segments:
        if s is None:
            yield s
            continue
        if s.language is None:
            s = replace(s, language=file.language, language_probability=file.language_probability)
        if seconds:
            words = [replace(w, start=_t(w.start + seconds), end=_t(w.end + seconds)) for w in s.words]
            s = replace(s, start=_t(s.start + seconds), end=_t(s.end + seconds), words=words)
        yield s


def _t(seconds: float) -> float:
    return round(seconds, 3)
