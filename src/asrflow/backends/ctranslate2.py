"""The CTranslate2 backend: faster-whisper, int8 on CPU, batched over VAD chunks for long audio."""

from __future__ import annotations

import copy
import os
from typing import Iterator

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel

from asrflow.backends.features import WindowedExtractor
from asrflow.errors import ModelNotFoundError
from asrflow.models import ModelSource, ctranslate2_dir, hub_error
from asrflow.options import TranscribeOptions
from asrflow.transcript import Segment, SegmentStream, Word, fit_segment


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
            # with timestamps: sentence-sized segments, not one segment per (up to 30 s) VAD chunk
            segments, info = self.batched.transcribe(audio, batch_size=options.batch_size, without_timestamps=False, **kwargs)
        else:
            segments, info = self.sequential.transcribe(audio, **kwargs)
        probability = round(float(info.language_probability), 4)
        return SegmentStream(_fitted(segments), info.language, probability, float(info.duration))


def _fitted(segments) -> Iterator[Segment]:
    previous_end = 0.0
    for s in segments:
        words = [Word(_seconds(w.start), _seconds(w.end), w.word.strip(), round(float(w.probability), 4)) for w in s.words or []]
        segment = fit_segment(_seconds(s.start), _seconds(s.end), s.text.strip(), words, previous_end)
        previous_end = segment.end
        yield segment


def _seconds(t) -> float:
    return round(float(t), 3)
