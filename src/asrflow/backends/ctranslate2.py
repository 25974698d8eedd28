"""The CTranslate2 backend: faster-whisper, int8 on CPU, batched over VAD chunks for long audio."""

from __future__ import annotations

import os

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from asrflow.audio import SAMPLE_RATE
from asrflow.errors import ModelNotFoundError
from asrflow.models import ModelSource, ctranslate2_dir, hub_error
from asrflow.options import TranscribeOptions
from asrflow.transcript import Segment, Transcript, Word, fit_segment


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
            segments, info = self.model.transcribe(audio, **kwargs)
        result: list[Segment] = []
        for s in segments:
            words = [Word(_seconds(w.start), _seconds(w.end), w.word.strip(), round(float(w.probability), 4)) for w in s.words or []]
            result.append(fit_segment(_seconds(s.start), _seconds(s.end), s.text.strip(), words, result[-1].end if result else 0.0))
            if progress:
                progress(result[-1])
        return Transcript.from_segments(result, info.language, round(float(info.language_probability), 4), float(info.duration))

    def transcribe_batch(self, audios: list[np.ndarray], options: TranscribeOptions) -> list[Transcript]:
        """Short clips from several callers in one encoder/decoder call (the server's dynamic batching).

        Clips longer than one window, word timestamps, or language detection on a multilingual
        model take the one-by-one path.
        """
        window = self.model.feature_extractor.n_samples
        if options.word_timestamps or (self.multilingual and not options.language) or any(len(a) > window for a in audios):
            return [self.transcribe(a, options) for a in audios]
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task=options.task, language=options.language or "en")
        previous = tokenizer.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
        prompt = self.model.get_prompt(tokenizer, previous_tokens=previous, without_timestamps=False)
        frames = self.model.feature_extractor.nb_max_frames
        sampling = {"beam_size": options.beam_size}
        if options.temperature[0] > 0:
            sampling = {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": options.temperature[0]}
        features = np.stack([pad_or_trim(self.model.feature_extractor(a)[..., :frames]) for a in audios])
        results = self.model.model.generate(
            self.model.encode(features),
            [list(prompt) for _ in audios],
            max_length=self.model.max_length,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            **sampling,
        )
        return [
            _from_tokens(r.sequences_ids[0], tokenizer, len(a) / SAMPLE_RATE, options.language or "en")
            for r, a in zip(results, audios)
        ]


def _from_tokens(tokens: list[int], tokenizer, duration: float, language: str) -> Transcript:
    """Split decoded tokens into segments at Whisper's timestamp tokens (0.02 s each)."""
    begin = tokenizer.timestamp_begin
    segments, text_tokens, start = [], [], 0.0

    def close(end: float) -> None:
        text = tokenizer.decode(text_tokens).strip() if text_tokens else ""
        if text:
            segments.append(Segment(_seconds(start), _seconds(max(end, start)), text))
        text_tokens.clear()

    for token in tokens:
        if token < tokenizer.eot and token < begin:
            text_tokens.append(token)
        elif token >= begin:
            time = min((token - begin) * 0.02, duration)
            close(time)
            start = time
    close(duration)
    return Transcript.from_segments(segments, language, 1.0, round(duration, 3))


def _seconds(t) -> float:
    return round(float(t), 3)
