"""Transcriber: decode any audio, check the options against the model, run the backend."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from asrflow import steps
from asrflow.audio import SAMPLE_RATE, AudioInput, channel_count, decode_audio, stream_audio
from asrflow.backends import Backend, load_backend
from asrflow.blocks import stream_blocks
from asrflow.diarize import Diarizer
from asrflow.errors import AudioDecodeError, AudioTooLongError, InvalidOptionError
from asrflow.mlmodel import REFERENCES, is_mlflow_model, saved_model
from asrflow.models import DEFAULT_MODEL, ModelSource, resolve_model
from asrflow.options import TranscribeOptions
from asrflow.transcript import Draft, Segment, SegmentStream, Transcript

REFERENCE_SECONDS = 30.0  # a known speaker's reference clip: a few seconds of their voice is enough


class Transcriber:
    """A loaded model: `transcribe(audio, **options) -> Transcript`, for any backend."""

    def __init__(self, backend: Backend, source: ModelSource, options: TranscribeOptions | None = None):
        self.backend = backend
        self.source = source
        self.options = options or TranscribeOptions()

    @property
    def multilingual(self) -> bool:
        return self.backend.multilingual

    def transcribe(
        self,
        audio: AudioInput,
        options: TranscribeOptions | None = None,
        sample_rate: int = SAMPLE_RATE,
        allow_urls: bool = False,
        progress: Callable[[Segment], None] | None = None,
        **changes,
    ) -> Transcript:
        """The whole transcript; `progress(segment)` hears of each segment as it is decoded."""
        return self.stream(audio, options, sample_rate, allow_urls, **changes).collect(progress)

    def stream(
        self,
        audio: AudioInput,
        options: TranscribeOptions | None = None,
        sample_rate: int = SAMPLE_RATE,
        allow_urls: bool = False,
        start: float = 0.0,
        max_seconds: float | None = None,
        **changes,
    ) -> SegmentStream:
        """Segments as they are decoded (iterate it), with the language known up front. The audio is decoded
        as it is transcribed, a block at a time (blocks.py): memory does not grow with its length. `start`:
        transcribe from there on (seconds; times stay the file's). `max_seconds`: longer audio (each channel's,
        with channels=split) is refused (AudioTooLongError)."""
        options = self.resolve(changes, options)
        default_language = options.language or ("en" if not self.multilingual else None)
        if options.channels == "split":
            return self._by_channel(audio, options, sample_rate, allow_urls, default_language, start, max_seconds)
        pieces = stream_audio(audio, sample_rate=sample_rate, allow_urls=allow_urls, max_seconds=max_seconds)
        if not options.diarize:
            return stream_blocks(self.backend.stream, pieces, options, default_language, start=start)
        # Speakers need the whole file's voices: the segments come, labelled, once the audio is decoded.
        known = {name: known_voice(name, clip) for name, clip in options.known_speakers or ()}
        diarizer = Diarizer(options.num_speakers, options.min_speakers, options.max_speakers, known)
        decoding = replace(options, word_timestamps=True)
        stream = stream_blocks(self.backend.stream, diarizer.hear(pieces), decoding, default_language, start=start)
        stream.segments = diarizer.labelled(stream.segments)
        return stream

    def _by_channel(
        self,
        audio: AudioInput,
        options: TranscribeOptions,
        sample_rate: int,
        allow_urls: bool,
        default_language: str | None,
        start: float,
        max_seconds: float | None = None,
    ) -> SegmentStream:
        """channels="split": each channel transcribed by itself (a stereo call: one voice a channel), the segments
        merged in time order, each with its channel as speaker (left, right; channel 1, 2 ... beyond two)."""
        if isinstance(audio, str) and audio.startswith(("http://", "https://")):
            raise InvalidOptionError("channels=split reads the file once per channel: download it and pass the file.")
        if hasattr(audio, "read"):
            audio = audio.read()  # read once per channel: the encoded bytes (not the samples) are kept
        count = channel_count(audio)
        if count < 2:
            raise InvalidOptionError(
                f"channels=split transcribes each channel by itself, but this audio has {count} channel: "
                "leave channels out (or set it to mix)."
            )
        labels = ["left", "right"] if count == 2 else [f"channel {k + 1}" for k in range(count)]
        streams = [
            stream_blocks(
                self.backend.stream,
                steps.ahead(stream_audio(audio, sample_rate, allow_urls, max_seconds, channel=k)),
                options,
                default_language,
                start=start,
            )
            for k in range(count)
        ]
        merged = SegmentStream(iter(()), streams[0].language, streams[0].language_probability, streams[0].duration)

        def segments():
            labelled = [
                map(labelled_segment, stream, itertools.repeat(label)) for stream, label in zip(streams, labels)
            ]
            yield from heapq.merge(*labelled, key=lambda s: (s.start, s.end))
            merged.duration = max(stream.duration for stream in streams)

        merged.segments = segments()
        return merged

    def draft(self, audio: np.ndarray, options: TranscribeOptions, probabilities: bool = False) -> Draft:
        """A quick guess at the words of a few seconds of 16 kHz samples (live captions' hypotheses)."""
        return self.drafts([audio], options, probabilities)[0]

    def drafts(self, clips: list[np.ndarray], options: TranscribeOptions, probabilities: bool = False) -> list[Draft]:
        """Quick guesses at several clips' words, from the backend's fast path when it has one and the language is
        known, all in one batch (their words' probabilities too, when asked for); otherwise a greedy transcription
        of each (no probabilities)."""
        if language := self._draft_language(options):
            return self.backend.drafts(clips, replace(options, language=language), probabilities)
        greedy = replace(options, beam_size=1, temperature=(0.0,))
        return [Draft(self.backend.stream(clip, greedy).collect().text) for clip in clips]

    def drafts_in_batches(self, options: TranscribeOptions) -> bool:
        """Whether drafts with these options take the backend's fast path, which decodes several clips as one
        batch (and reads nothing of the options but language, task and beam)."""
        return self._draft_language(options) is not None

    def _draft_language(self, options: TranscribeOptions) -> str | None:
        """The language the backend's fast draft path decodes in (English-only models: en); None where that path
        is not taken (no such path, a multilingual request, or no language to draft in)."""
        if not hasattr(self.backend, "drafts") or options.multilingual:
            return None
        return options.language or (None if self.multilingual else "en")

    def resolve(self, changes: dict | None = None, base: TranscribeOptions | None = None) -> TranscribeOptions:
        """This model's options (saved with it, unless `base`) with `changes` from any edge, checked for this model."""
        options = (base or self.options).resolve(changes)
        self.check(options)
        return options

    def check(self, options: TranscribeOptions) -> None:
        if options.multilingual and options.language:
            raise InvalidOptionError(
                f"multilingual detects the language of each segment, so language {options.language!r} cannot be "
                "given with it: leave language out, or turn multilingual off."
            )
        if self.multilingual:
            return
        if options.multilingual:
            raise InvalidOptionError(
                f"{self.source.name} is English-only, so it has no languages to tell apart (multilingual): use a "
                "multilingual model such as bundled:base."
            )
        if options.language not in (None, "en"):
            raise InvalidOptionError(
                f"{self.source.name} is English-only and cannot transcribe language {options.language!r}: "
                "use a multilingual model such as bundled:base."
            )
        if options.task == "translate":
            raise InvalidOptionError(
                f"{self.source.name} is English-only and cannot translate: use a multilingual model such as bundled:base."
            )


def known_voice(name: str, clip: AudioInput, max_seconds: float = REFERENCE_SECONDS) -> np.ndarray:
    """A known speaker's clip (a path, encoded bytes or samples), decoded as any audio is: at most
    `max_seconds` of it. An error names the speaker."""
    try:
        return decode_audio(clip, max_seconds=max_seconds)
    except AudioTooLongError:
        raise AudioDecodeError(
            f"known speaker {name!r}: the clip lasts longer than {max_seconds:.0f} s: give a short one of that "
            "voice (a few seconds is enough)."
        ) from None
    except AudioDecodeError as e:
        raise AudioDecodeError(f"known speaker {name!r}: {e}") from None


def labelled_segment(segment: Segment, speaker: str) -> Segment:
    return replace(segment, speaker=speaker, words=[replace(w, speaker=speaker) for w in segment.words])


def load_transcriber(
    model: str = DEFAULT_MODEL,
    backend: str | None = None,
    device: str = "cpu",
    compute_type: str = "default",
    options: TranscribeOptions | None = None,
    name: str | None = None,
    references: tuple[str, ...] | None = None,
) -> Transcriber:
    """Load `model` with `backend` (ctranslate2 unless the model says otherwise).

    `model` is a bundled name, a local model directory, a hub id, or an MLflow model (models:/NAME@alias,
    models:/NAME/VERSION, runs:/RUN/PATH, or a local MLflow model directory: mlmodel.py reads it, and the
    options, backend and compute type saved with it apply unless given here).
    `name` is how messages refer to the model (default: `model`). `references`: what a reference-only MLflow
    model may name (mlmodel.REFERENCES by default; a server allows fewer).
    """
    if is_mlflow_model(model):
        saved = saved_model(model, references or REFERENCES, name)
        return load_transcriber(
            saved.model,
            backend or saved.backend,
            device,
            saved.compute_type if compute_type == "default" else compute_type,
            options or saved.options,
            name or model,
        )
    source = resolve_model(model)
    backend_ = load_backend(backend or "ctranslate2", source, device, compute_type)
    return Transcriber(backend_, replace(source, name=name) if name else source, options)
