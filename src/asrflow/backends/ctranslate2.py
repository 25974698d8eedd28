"""The CTranslate2 backend: faster-whisper, int8 on CPU, batched over VAD chunks for long audio."""

from __future__ import annotations

import copy
import os
from typing import Iterator

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel

from asrflow.audio import SAMPLE_RATE
from asrflow.backends.features import WindowedExtractor
from asrflow.errors import ModelNotFoundError
from asrflow.models import ModelSource, ctranslate2_dir, hub_error
from asrflow.options import TranscribeOptions
from asrflow.transcript import Segment, SegmentStream, Word, fit_segment
from asrflow.vad import speech_regions


class CTranslate2Backend:
    name = "ctranslate2"

    def __init__(self, source: ModelSource, device: str = "cpu", compute_type: str = "default"):
        if compute_type == "default":
            compute_type = "int8" if device == "cpu" else "float16"
        self.compute_type = compute_type
        try:
            self.model = WhisperModel(
                ctranslate2_dir(source), device=device, compute_type=compute_type, cpu_threads=os.cpu_count() or 0
            )
        except (OSError, ValueError) as e:
            if source.is_local:
                raise ModelNotFoundError(f"could not load {source.name} with CTranslate2: {e}") from None
            raise hub_error(source.name, e) from None
        self.multilingual = self.model.model.is_multilingual
        self.batched = BatchedInferencePipeline(self.model)
        # the sequential decoder, with the spectrogram computed a window at a time (same values, bounded memory)
        self.sequential = copy.copy(self.model)
        self.sequential.feature_extractor = WindowedExtractor(self.model.feature_extractor)

    def stream(self, audio: np.ndarray, options: TranscribeOptions) -> SegmentStream:
        """Segments as faster-whisper decodes them, one window (or one batch of VAD chunks) at a time."""
        kwargs = dict(
            language=options.language,
            task=options.task,
            beam_size=options.beam_size,
            temperature=list(options.temperature),
            compression_ratio_threshold=options.compression_ratio_threshold,
            log_prob_threshold=options.log_prob_threshold,
            no_speech_threshold=options.no_speech_threshold,
            condition_on_previous_text=options.condition_on_previous_text,
            initial_prompt=options.initial_prompt,
            word_timestamps=options.word_timestamps,
            vad_filter=options.vad_filter,
            chunk_length=int(options.chunk_length_s),
        )
        # Batching needs cut points, which VAD finds; without VAD decode sequentially (long-form seeking).
        if options.vad_filter and options.batch_size > 1:
            return self._batched(audio, options, kwargs)
        segments, info = self.sequential.transcribe(audio, **kwargs)
        probability = round(float(info.language_probability), 4)
        return SegmentStream(_fitted(segments), info.language, probability, float(info.duration))

    def _batched(self, audio: np.ndarray, options: TranscribeOptions, kwargs: dict) -> SegmentStream:
        """Speech regions (VAD, merged up to one window, pauses kept) decoded a batch at a time.

        faster-whisper's batched pipeline drops the words after a window's last complete timestamp pair (the
        sequential decoder seeks back and decodes them again): here such a region's rest is decoded again,
        as a region of its own, until nothing is left over.
        """
        regions = [{"start": a / SAMPLE_RATE, "end": b / SAMPLE_RATE} for a, b in speech_regions(audio, options.chunk_length_s)]
        duration = len(audio) / SAMPLE_RATE
        if not regions:
            return SegmentStream(iter(()), options.language or (None if self.multilingual else "en"), None, duration)
        kwargs = {k: v for k, v in kwargs.items() if k != "vad_filter"} | {"batch_size": options.batch_size, "without_timestamps": False}
        groups = [regions[i : i + options.batch_size] for i in range(0, len(regions), options.batch_size)]
        first, info = self._decode_regions(audio, groups[0], kwargs)
        kwargs["language"] = info.language  # one language for the file, detected on its first batch

        def segments():
            yield from first
            for group in groups[1:]:
                yield from self._decode_regions(audio, group, kwargs)[0]

        probability = round(float(info.language_probability), 4)
        return SegmentStream(_fitted(segments()), info.language, probability, duration)

    def _decode_regions(self, audio: np.ndarray, regions: list[dict], kwargs: dict, rounds: int = 3):
        """The segments of `regions`, in order, with every region's unfinished rest decoded again."""
        decoded, info = [], None
        while regions and rounds:
            segments, round_info = self.batched.transcribe(audio, clip_timestamps=regions, **kwargs)
            segments, info, rounds = list(segments), info or round_info, rounds - 1
            decoded += segments
            regions = [rest for region in regions if (rest := _unfinished(region, segments))]
        return sorted(decoded, key=lambda s: s.start), info


def _unfinished(region: dict, segments, at_least: float = 1.0) -> dict | None:
    """The part of `region` after its last decoded segment, when that is more than `at_least` seconds."""
    ends = [s.end for s in segments if region["start"] - 0.01 <= s.start < region["end"]]
    last = min(max(ends, default=region["start"]), region["end"])
    return {"start": last, "end": region["end"]} if region["end"] - last > at_least else None


def _fitted(segments) -> Iterator[Segment]:
    previous_end = 0.0
    for s in segments:
        words = [Word(_seconds(w.start), _seconds(w.end), w.word.strip(), round(float(w.probability), 4)) for w in s.words or []]
        segment = fit_segment(_seconds(s.start), _seconds(s.end), s.text.strip(), words, previous_end)
        previous_end = segment.end
        yield segment


def _seconds(t) -> float:
    return round(float(t), 3)
