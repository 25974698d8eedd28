"""Any audio input -> 16 kHz mono float32 samples, decoded with PyAV (no system ffmpeg)."""

from __future__ import annotations

import io
import itertools
import os
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from asrflow.errors import AudioDecodeError, AudioTooLongError

SAMPLE_RATE = 16000
MAX_URL_BYTES = 200 * 1024 * 1024
PIECE = 60 * SAMPLE_RATE  # samples handed on at once from arrays and WAV files
# The only demuxers ever opened (FFmpeg's names). Left to guess, FFmpeg picks among all it has, and some of those
# read the files or URLs that an input names (concat, HLS, image sequences): an upload could read the server's disk.
DEMUXERS = "wav,w64,mp3,flac,ogg,matroska,webm,mov,mp4,m4a,aac"
FORMATS = "wav, mp3, flac, ogg/opus, webm/mkv, m4a/mp4 or aac"
# sample rates outside these are a forged header, or a rate no speech needs whose decoding costs 12x 16 kHz's and more
MIN_RATE, MAX_RATE = 1000, 192_000
# a data size this large is a streaming writer's placeholder (0xFFFFFFFF, 0x7FFFFFFF, ...), not a length
OPEN_WAV_SIZE = 0x7FFF0000
MAX_CHANNELS, MAX_SPLIT_CHANNELS = 8, 32  # mixed; decoded one by one (channels=split, CLI and library)

AudioInput = bytes | bytearray | str | os.PathLike | BinaryIO | np.ndarray


def decode_audio(
    audio: AudioInput, sample_rate: int = SAMPLE_RATE, allow_urls: bool = False, max_seconds: float | None = None
) -> np.ndarray:
    """Decode `audio` to 16 kHz mono float32.

    `audio` is encoded bytes, a path, a file-like object, an http(s) URL (only with
    `allow_urls=True`), or a numpy array of samples at `sample_rate` (1-D, or 2-D with
    channels in the smaller dimension). Audio longer than `max_seconds` is refused (AudioTooLongError):
    from the container's header where it tells, else as soon as decoding passes the limit.
    """
    if isinstance(audio, np.ndarray):
        samples = _from_samples(audio, sample_rate)
    else:
        chunks = _Chunks(max_seconds)
        for piece in stream_audio(audio, sample_rate, allow_urls, max_seconds):
            chunks.append(piece)
        samples = chunks.samples()
    if max_seconds is not None and len(samples) > max_seconds * SAMPLE_RATE:  # arrays: checked once converted
        raise too_long(max_seconds)
    return samples


def too_long(max_seconds: float) -> AudioTooLongError:
    return AudioTooLongError(
        f"the audio is longer than this server's limit of {max_seconds / 60:g} minutes: split it, or use "
        "`asrflow batch` / `asrflow transcribe`, which have no such limit."
    )


def declared_seconds(data: AudioInput, what: str | None = None) -> float | None:
    """How long encoded audio (bytes or a file object) lasts by its container's header, without decoding it
    (None: the header does not say, or `data` is something else). With `what` (how messages name it), what is
    not audio in a format we open is an AudioDecodeError now, instead of None."""
    if isinstance(data, (bytes, bytearray)):
        data = io.BytesIO(data)
    if not hasattr(data, "read") or not hasattr(data, "seek"):
        return None
    start = data.tell()
    if _is_empty(data):
        return None  # decoding says it is empty
    try:
        if (seconds := _wav_declared_seconds(data, held=True)) is not None:
            return seconds
        with open_container(data, what or "the audio", split=True) as container:
            return container.duration / av.time_base if container.duration else None
    except AudioDecodeError:
        if what:
            raise
        return None  # decoding will name the problem
    except OSError:
        return None
    finally:
        data.seek(start)


def check_audio(audio: AudioInput, allow_urls: bool = False) -> float | None:
    """Fail now, with decode_audio's message, on what cannot be audio (a missing or empty file, a file that is not
    audio, a URL not allowed), reading no more than a header; returns the declared duration when there is one."""
    if isinstance(audio, (str, os.PathLike)) and not str(audio).startswith(("http://", "https://")):
        with open(_audio_file(audio), "rb") as f:
            if (seconds := declared_seconds(f)) is not None:
                return seconds
            with open_container(f, repr(str(audio)), split=True):
                pass
        return None
    if isinstance(audio, str) and allow_urls:
        return None  # an allowed URL is fetched once, when it is decoded
    return sum(len(p) for p in stream_audio(audio, allow_urls=allow_urls)) / SAMPLE_RATE  # bytes, arrays, refused URLs


def stream_audio(
    audio: AudioInput,
    sample_rate: int = SAMPLE_RATE,
    allow_urls: bool = False,
    max_seconds: float | None = None,
    channel: int | None = None,
) -> Iterator[np.ndarray]:
    """`decode_audio`'s samples as they are decoded, a frame (or a minute) at a time: however long the file,
    only the piece at hand is in memory. The same inputs, checks and messages as `decode_audio`.
    `channel`: that channel alone (0 first; see `channel_count`), instead of all channels mixed."""
    if isinstance(audio, np.ndarray):
        samples = _from_samples(audio if channel is None else _channel_of(audio, channel), sample_rate)
        for start in range(0, len(samples), PIECE):
            yield samples[start : start + PIECE]
    elif isinstance(audio, (bytes, bytearray, memoryview)):
        if len(audio) == 0:
            raise AudioDecodeError("the audio is empty (0 bytes): send the content of an audio file.")
        yield from _decode_stream(io.BytesIO(bytes(audio)), "the audio bytes", max_seconds, channel)
    elif isinstance(audio, str) and audio.startswith(("http://", "https://")):
        if not allow_urls:
            raise AudioDecodeError(
                f"URL inputs are disabled, so {audio!r} was not fetched: download the file "
                "and pass its path or bytes, or allow URLs explicitly."
            )
        yield from _decode_stream(io.BytesIO(_fetch(audio)), audio, max_seconds, channel)
    elif isinstance(audio, (str, os.PathLike)):
        with open(_audio_file(audio), "rb") as f:
            yield from _decode_stream(f, repr(str(audio)), max_seconds, channel)
    elif hasattr(audio, "read"):
        if _is_empty(audio):
            raise AudioDecodeError("the audio is empty (0 bytes): send the content of an audio file.")
        yield from _decode_stream(audio, "the audio file", max_seconds, channel)
    elif isinstance(audio, Iterator):  # already decoded: 16 kHz mono pieces (a server's upload, decoded ahead)
        yield from audio
    else:
        raise AudioDecodeError(
            f"cannot read audio from a {type(audio).__name__}: pass bytes, a path, a file object "
            "or a numpy array of samples."
        )


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read(MAX_URL_BYTES + 1)
    except OSError as e:
        raise AudioDecodeError(f"could not download {url}: {e}") from None
    if len(data) > MAX_URL_BYTES:
        raise AudioDecodeError(f"{url} is larger than {MAX_URL_BYTES // 2**20} MB: download it first.")
    if not data:
        raise AudioDecodeError(f"{url} returned no data.")
    return data


def _decode_stream(
    stream: BinaryIO, what: str, max_seconds: float | None = None, channel: int | None = None
) -> Iterator[np.ndarray]:
    """Samples as PyAV decodes and resamples them; refused past `max_seconds` (from the header if it says)."""
    if channel is None and (wav := _pcm16_wav(stream, what)) is not None:
        yield from _limited(wav, max_seconds)
        return
    expected, size = _wav_declared_seconds(stream), 0
    limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    try:
        with open_container(stream, what, split=channel is not None) as container:
            if limit is not None and (container.duration or 0) / av.time_base > max_seconds:
                raise too_long(max_seconds)  # the header says so: refuse before decoding anything
            # one channel: packed samples, reshaped (PyAV's planar frames of 8 or more channels report a plane too
            # many, and reading them crashed the process)
            layout = "mono" if channel is None else container.streams.audio[0].layout.name
            channels = 1 if channel is None else container.streams.audio[0].codec_context.channels
            resampler = av.AudioResampler(format="flt", layout=layout, rate=SAMPLE_RATE)
            frames = itertools.chain(container.decode(container.streams.audio[0]), [None])
            for frame in frames:
                if frame is not None:
                    frame.pts = None  # let the resampler ignore gaps in broken timestamps
                for out in resampler.resample(frame):  # None at the end: what the resampler still holds
                    piece = out.to_ndarray().reshape(-1, channels)[:, 0 if channel is None else channel]
                    size += len(piece)
                    yield piece
                if limit is not None and size > limit:
                    raise too_long(max_seconds)
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, EOFError, IndexError, OSError):
        if size:
            raise AudioDecodeError(
                f"{what} is truncated or corrupt after {size / SAMPLE_RATE:.1f} s of audio."
            ) from None
        raise _not_audio(what) from None
    if size == 0:
        raise AudioDecodeError(f"{what} contains no audio samples: the file is empty or truncated.")
    if expected and size / SAMPLE_RATE < 0.8 * expected - 0.5:
        raise AudioDecodeError(
            f"{what} is truncated: its header announces {expected:.1f} s but only "
            f"{size / SAMPLE_RATE:.1f} s could be decoded."
        )


def channel_count(audio: AudioInput) -> int:
    """How many channels `audio` has (a path, bytes, a file object or an array), from its header."""
    if isinstance(audio, np.ndarray):
        return 1 if audio.ndim == 1 else int(min(audio.shape))
    if isinstance(audio, (bytes, bytearray)):
        audio = io.BytesIO(bytes(audio))
    if isinstance(audio, (str, os.PathLike)):
        with open(_audio_file(audio), "rb") as f:
            return channel_count(f)
    start = audio.tell()
    try:
        with open_container(audio, "the audio", split=True) as container:
            return container.streams.audio[0].channels
    finally:
        audio.seek(start)


def open_container(stream: BinaryIO, what: str, split: bool = False) -> av.container.InputContainer:
    """The input opened by one of the DEMUXERS, its first audio stream checked against sane bounds before
    anything is decoded (a forged header must not declare hours at 1 Hz, or hundreds of channels). `split`: its
    channels will be decoded one by one, so more of them are allowed."""
    try:
        container = av.open(
            stream, mode="r", metadata_errors="ignore", container_options={"format_whitelist": DEMUXERS}
        )
    except (av.error.FFmpegError, ValueError, EOFError, IndexError, OSError):
        raise _not_audio(what) from None
    try:
        if not container.streams.audio:
            raise AudioDecodeError(f"{what} has no audio stream: send an audio file ({FORMATS}).")
        codec = container.streams.audio[0].codec_context  # None where FFmpeg knows no decoder for it
        rate, channels = getattr(codec, "sample_rate", 0), getattr(codec, "channels", 0)
        if not MIN_RATE <= (rate or 0) <= MAX_RATE:
            raise AudioDecodeError(
                f"{what} declares a sample rate of {rate} Hz: asrflow reads audio sampled at {MIN_RATE}-{MAX_RATE} Hz "
                "(speech needs 16 kHz): re-encode it at 48 kHz or less, or the file is corrupt."
            )
        limit = MAX_SPLIT_CHANNELS if split else MAX_CHANNELS
        if not 1 <= channels <= limit:
            raise AudioDecodeError(
                f"{what} declares {channels} channels: at most {limit} are accepted"
                + ("" if split else f" (or {MAX_SPLIT_CHANNELS} decoded one by one, channels=split).")
            )
    except BaseException:
        container.close()
        raise
    return container


def _channel_of(samples: np.ndarray, channel: int) -> np.ndarray:
    """One channel of a (channels x samples) or (samples x channels) array."""
    if samples.ndim != 2:
        return samples
    return samples[channel] if samples.shape[0] <= samples.shape[1] else samples[:, channel]


def _limited(pieces: Iterator[np.ndarray], max_seconds: float | None) -> Iterator[np.ndarray]:
    size = 0
    for piece in pieces:
        size += len(piece)
        if max_seconds is not None and size > max_seconds * SAMPLE_RATE:
            raise too_long(max_seconds)
        yield piece


class _Chunks:
    """Decoded samples as they come. With a known bound they go straight into one buffer of that size (pages
    never written cost no memory), so there is no second copy when decoding ends."""

    def __init__(self, max_seconds: float | None):
        self.size, self.parts = 0, []
        self.buffer = (
            None if max_seconds is None else np.empty(int(max_seconds * SAMPLE_RATE) + SAMPLE_RATE, np.float32)
        )

    def append(self, part: np.ndarray) -> None:
        if self.buffer is not None and self.size + len(part) > len(self.buffer):  # past the bound (refused anyway)
            self.parts, self.buffer = [self.buffer[: self.size]], None
        if self.buffer is not None:
            self.buffer[self.size : self.size + len(part)] = part
        else:
            self.parts.append(part)
        self.size += len(part)

    @property
    def seconds(self) -> float:
        return self.size / SAMPLE_RATE

    def samples(self) -> np.ndarray:
        if self.buffer is not None:
            return self.buffer[: self.size]
        return np.ascontiguousarray(np.concatenate(self.parts), dtype=np.float32)


def _audio_file(audio: str | os.PathLike) -> Path:
    path = Path(audio)
    if not path.is_file():
        raise AudioDecodeError(f"no audio file at {str(path)!r}: check the path.")
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"{str(path)!r} is empty (0 bytes): it holds no audio.")
    return path


def _not_audio(what: str) -> AudioDecodeError:
    """One message for everything that is not audio in a format we open: it says nothing of what FFmpeg saw
    (a playlist naming a file that exists and one that does not must read alike)."""
    return AudioDecodeError(f"{what} is not audio in a format asrflow reads: send {FORMATS}.")


def _is_empty(stream: BinaryIO) -> bool:
    try:
        start = stream.tell()
        empty = not stream.read(1)
        stream.seek(start)
        return empty
    except (OSError, AttributeError, io.UnsupportedOperation):
        return False  # not seekable: decoding tells


def _pcm16_wav(stream: BinaryIO, what: str) -> Iterator[np.ndarray] | None:
    """16 kHz mono 16-bit WAV with a stated length (what clients and our own examples send), read a minute at
    a time without a resampler pass; None for anything else."""
    try:
        start = stream.tell()
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None
    if _wav_declared_seconds(stream) is None:
        return None
    try:
        w = wave.open(stream)  # noqa: SIM115 - read lazily by the pieces it returns; the caller owns the stream
        if (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getcomptype()) == (1, 2, SAMPLE_RATE, "NONE"):
            return _pcm16_pieces(w, what)
    except (wave.Error, EOFError, OSError):
        pass
    stream.seek(start)  # anything else is PyAV's to decode (or to reject with a clear message)
    return None


def _pcm16_pieces(w: wave.Wave_read, what: str) -> Iterator[np.ndarray]:
    size = 0
    while frames := w.readframes(PIECE):
        size += len(frames) // 2
        yield np.frombuffer(frames[: len(frames) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if w.getnframes() and size < 0.8 * w.getnframes() - 0.5 * SAMPLE_RATE:
        raise AudioDecodeError(
            f"{what} is truncated: its header announces {w.getnframes() / SAMPLE_RATE:.1f} s but only "
            f"{size / SAMPLE_RATE:.1f} s could be read."
        )
    if size == 0:
        raise AudioDecodeError(f"{what} contains no audio samples: the file is empty or truncated.")


def _wav_declared_seconds(stream: BinaryIO, held: bool = False) -> float | None:
    """The length a WAV header announces, to catch truncated files (FFmpeg decodes what is there); `held`: no more
    than the bytes there hold (what admission counts: a forged size must not reserve hours)."""
    try:
        start = stream.tell()
        head = stream.read(4096)
        total = stream.seek(0, io.SEEK_END) - start
        stream.seek(start)
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None
    if len(head) < 44 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    fmt, data = head.find(b"fmt "), head.find(b"data")
    if fmt < 0 or data < 0:
        return None
    rate = int.from_bytes(head[fmt + 12 : fmt + 16], "little")
    byte_rate = int.from_bytes(head[fmt + 16 : fmt + 20], "little")
    size, present = int.from_bytes(head[data + 4 : data + 8], "little"), total - data - 8
    if not MIN_RATE <= rate <= MAX_RATE or byte_rate < rate:
        return None  # forged: PyAV's checks and decoding name the problem
    if size == 0 or size >= OPEN_WAV_SIZE:  # written as streamed, its length unknown: as long as its bytes
        return present / byte_rate if held else None
    return (min(size, present) if held else size) / byte_rate


def _from_samples(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    if samples.size == 0:
        raise AudioDecodeError("the sample array is empty: it holds no audio.")
    if np.issubdtype(samples.dtype, np.integer):  # scaled before a downmix, whose mean is no longer integer
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
    if samples.ndim == 2:
        samples = samples.mean(axis=int(np.argmin(samples.shape)))
    if samples.ndim != 1:
        raise AudioDecodeError(f"expected a 1-D (or channels x samples) array, got shape {samples.shape}.")
    samples = samples.astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        raise AudioDecodeError("the sample array contains NaN or infinite values.")
    if sample_rate == SAMPLE_RATE:
        return np.ascontiguousarray(samples)
    if sample_rate <= 0:
        raise AudioDecodeError(f"sample_rate must be positive, not {sample_rate}.")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :], format="flt", layout="mono")
    frame.sample_rate = sample_rate
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)
