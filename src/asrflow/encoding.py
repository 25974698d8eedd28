"""16 kHz mono samples -> encoded audio (Opus in Ogg, mp3, flac, wav, webm, mp4) with PyAV: input examples,
test and bench files."""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterable
from typing import BinaryIO

import av
import numpy as np

from asrflow.audio import PIECE, SAMPLE_RATE


def encode_audio(
    samples: np.ndarray | Iterable[np.ndarray],
    format: str = "ogg",
    bitrate: int = 24000,
    file: str | os.PathLike | BinaryIO | None = None,
) -> bytes | None:
    """Encode 16 kHz mono samples (Opus in Ogg by default; mp3, flac, wav, ogg, webm, mp4), e.g. for input examples.
    `samples` is an array or an iterable of arrays (hours of audio, never all in memory); with `file` the encoded
    audio goes there and None is returned, else its bytes."""
    codec = {
        "ogg": "libopus",
        "webm": "libopus",
        "flac": "flac",
        "wav": "pcm_s16le",
        "mp4": "aac",
        "mp3": "libmp3lame",
    }[format]
    pieces = (
        (samples[i : i + PIECE] for i in range(0, len(samples), PIECE)) if isinstance(samples, np.ndarray) else samples
    )
    buffer = io.BytesIO() if file is None else file
    with av.open(buffer, mode="w", format=format) as out:
        rate = 48000 if codec == "libopus" else SAMPLE_RATE
        stream = out.add_stream(codec, rate=rate, layout="mono")
        if codec in ("libopus", "libmp3lame"):
            stream.bit_rate = bitrate
        resampler = av.AudioResampler(
            format=stream.format.name, layout="mono", rate=rate, frame_size=stream.frame_size or None
        )
        for piece in itertools.chain(pieces, [None]):
            frame = None
            if piece is not None:
                frame = av.AudioFrame.from_ndarray(
                    np.asarray(piece, np.float32)[np.newaxis, :], format="flt", layout="mono"
                )
                frame.sample_rate = SAMPLE_RATE
            for resampled in resampler.resample(frame):
                out.mux(stream.encode(resampled))
        out.mux(stream.encode(None))
    return buffer.getvalue() if file is None else None
