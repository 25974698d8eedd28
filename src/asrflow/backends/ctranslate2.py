"""The CTranslate2 backend: faster-whisper, int8 on CPU, batched over VAD chunks for long audio."""

from __future__ import annotations

import os

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel

from asrflow.errors import ModelNotFoundError
from asrflow.models import ModelSource, ctranslate2_dir, hub_error
from asrflow.options import TranscribeOptions
from asrflow.transcript import Segment, Transcript, Word


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

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions, progress=None) -> Transcript:
        kwargs = dict(
            language=options.language,
            task=options.task,
            beam_size=options.beam_size,
            temperature=options.temperature,
            initial_prompt=options.initial_prompt,
            word_timestamps=options.word_timestamps,
            vad_filter=options.vad_filter,
            chunk_length=int(options.chunk_length_s),
        )
        # Batching needs cut points, which VAD finds; without VAD decode sequentially (long-form seeking).
        if options.vad_filter and options.batch_size > 1:
            segments, info = self.batched.transcribe(audio, batch_size=options.batch_size, **kwargs)
        else:
            segments, info = self.model.transcribe(audio, **kwargs)
        result = []
        for s in segments:
            result.append(
                Segment(
                    start=_seconds(s.start),
                    end=_seconds(s.end),
                    text=s.text.strip(),
                    words=[Word(_seconds(w.start), _seconds(w.end), w.word.strip(), round(float(w.probability), 4)) for w in s.words or []],
                )
            )
            if progress:
                progress(s.end)
        return Transcript.from_segments(result, info.language, round(float(info.language_probability), 4), float(info.duration))


def _seconds(t) -> float:
    return round(float(t), 3)
