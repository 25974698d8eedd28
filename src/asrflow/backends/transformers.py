"""The transformers backend: the automatic-speech-recognition pipeline, as MLflow's tutorial builds it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from asrflow.audio import SAMPLE_RATE
from asrflow.backends.languages import by_language, dominant
from asrflow.errors import InvalidOptionError, ModelNotFoundError
from asrflow.models import ModelSource, hub_error, transformers_dir
from asrflow.options import TranscribeOptions
from asrflow.transcript import Segment, SegmentStream, Word, fit_segment
from asrflow.vad import merged, snapped, speech_edges, speech_regions

WINDOW_S = 30  # Whisper's window


def build_pipeline(model_dir: str, device: str = "cpu", dtype=None):
    """The tutorial's pipeline: model, tokenizer and feature extractor loaded separately."""
    import torch
    import transformers

    model = transformers.WhisperForConditionalGeneration.from_pretrained(
        model_dir, dtype=dtype or (torch.float32 if device == "cpu" else torch.float16), attn_implementation="sdpa"
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    feature_extractor = transformers.AutoFeatureExtractor.from_pretrained(model_dir)
    return transformers.pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=tokenizer,
        feature_extractor=feature_extractor,
        device=device,
    )


def reorder_self_attention(cache, beam_idx):
    """Beam search's reordering of the decoder's cache between steps, less the cross-attention half: every beam of
    a piece attends to the same encoder output, so its cross-attention keys and values are the same rows in any
    order. Without the copy a beam-5 decode of tiny.en on CPU is 1.75x faster, with the same tokens (README,
    Performance; tested)."""
    from transformers.cache_utils import EncoderDecoderCache

    (cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache).reorder_cache(beam_idx)
    return cache


class TransformersBackend:
    name = "transformers"

    @staticmethod
    def cuda_usable() -> bool:
        import torch

        return torch.cuda.is_available()

    def __init__(self, source: ModelSource, device: str = "cpu", compute_type: str = "default"):
        self.compute_type = "float32" if device == "cpu" else "float16"
        try:
            self.pipeline = build_pipeline(transformers_dir(source), device)
        except OSError as e:
            if source.is_local:
                raise ModelNotFoundError(f"could not load {source.name} with transformers: {e}") from None
            raise hub_error(source.name, e) from None
        self.model = self.pipeline.model
        self.model._reorder_cache = reorder_self_attention  # generate's hook for models that reorder their own cache
        self.multilingual = bool(getattr(self.model.generation_config, "is_multilingual", False))

    def stream(self, audio: np.ndarray, options: TranscribeOptions) -> SegmentStream:
        """Segments as decoded: with VAD, one batch of speech regions at a time; else the whole audio in one call."""
        duration = len(audio) / SAMPLE_RATE
        if options.multilingual:
            return self._by_language(audio, options, duration)
        language, probability = (options.language, 1.0) if options.language else self.detect_language(audio)
        # Long audio goes through speech regions unless the caller asks for the tutorial's chunk/stride merge by
        # passing stride_length_s (as the tutorial's params do): the merge is less accurate (README, Performance).
        if options.vad_filter or (duration > WINDOW_S and options.stride_length_s is None):
            # Speech regions of at most one window, decoded in batches: no overlap, no stride, no wasted work.
            spans = speech_regions(audio, options)
            pieces = [(start / SAMPLE_RATE, audio[start:end]) for start, end in merged(spans, options.chunk_length_s)]
            decoded = self._decode(pieces, options.batch_size, language, duration, options)
            segments = snapped(decoded, speech_edges(spans, len(audio), options.vad_speech_pad_ms))
        else:
            segments = self._decode([(0.0, audio)], 1, language, duration, options)
        return SegmentStream(segments, language, probability, duration)

    def _by_language(self, audio: np.ndarray, options: TranscribeOptions, duration: float) -> SegmentStream:
        """As the CTranslate2 backend: each stretch of speech in its own language, in runs of one language."""
        regions = speech_regions(audio, options)
        detected = [self.detect_language(audio[a:b], options.languages) for a, b in regions]

        def decode(code: str, spans: list) -> Iterator[Segment]:
            pieces = [(a / SAMPLE_RATE, audio[a:b]) for a, b in spans]
            return self._decode(pieces, options.batch_size, code, duration, options)

        segments = by_language(regions, detected, options, decode, len(audio))
        return SegmentStream(segments, *dominant(detected, regions), duration)

    def _decode(self, pieces: list, step: int, language, duration: float, options) -> Iterator[Segment]:
        previous_end = 0.0
        for i in range(0, len(pieces), step):
            batch = pieces[i : i + step]
            outputs = self._run_pipeline([samples for _, samples in batch], language, options)
            for (offset, samples), out in zip(batch, outputs):
                for segment in self._segments(out, offset, min(duration, offset + len(samples) / SAMPLE_RATE), options):
                    fitted = fit_segment(*segment, previous_end)
                    previous_end = fitted.end
                    yield fitted

    def detect_language(self, audio: np.ndarray, among: tuple[str, ...] | None = None) -> tuple[str, float]:
        if not self.multilingual:
            return "en", 1.0
        return detect_language_of(self.model, self.pipeline.feature_extractor, audio, among)

    def _run_pipeline(self, pieces: list[np.ndarray], language, options) -> list[dict]:
        # num_beams always explicit: the pipeline's own default is 5, whatever the model's config says.
        generate_kwargs = {"num_beams": options.beam_size}
        fallback = options.temperature != (0.0,)
        if fallback:
            # Whisper's fallback: transformers retries hotter while the thresholds say the text is wrong
            generate_kwargs.update(
                temperature=options.temperature,
                compression_ratio_threshold=options.compression_ratio_threshold,
                logprob_threshold=options.log_prob_threshold,
                no_speech_threshold=options.no_speech_threshold,
                condition_on_prev_tokens=options.condition_on_previous_text,
            )
        if self.multilingual:
            generate_kwargs.update(language=language, task=options.task)
        if prompt := " ".join(
            p for p in (options.hotwords, options.initial_prompt) if p
        ):  # hotwords first, as faster-whisper
            generate_kwargs["prompt_ids"] = self.pipeline.tokenizer.get_prompt_ids(prompt, return_tensors="pt")
        kwargs = {"batch_size": options.batch_size}
        if any(len(p) > WINDOW_S * SAMPLE_RATE for p in pieces) or options.stride_length_s is not None:
            # The tutorial's chunking: overlapping windows merged at their strides.
            kwargs["chunk_length_s"] = options.chunk_length_s
            if options.stride_length_s is not None:
                kwargs["stride_length_s"] = list(options.stride_length_s)

        timestamps = "word" if options.word_timestamps else True
        run = lambda batch: self.pipeline(
            [p.copy() for p in batch], return_timestamps=timestamps, generate_kwargs=generate_kwargs, **kwargs
        )
        try:
            return run(pieces)
        except (IndexError, ValueError) as e:
            if not (options.word_timestamps and fallback and skipped_piece(e)):
                raise
            if "chunk_length_s" in kwargs:  # the pipeline's own windows: one skipped fails the whole call
                raise InvalidOptionError(
                    "transformers' pipeline cannot give word timestamps with the tutorial's chunking "
                    "(stride_length_s) where Whisper's fallback skips a window as no speech: leave out "
                    "stride_length_s (asrflow decodes speech regions) or word_timestamps."
                ) from None
        # a piece of the batch was skipped as no speech (transformers 5 fails the batch): each by itself
        return [words_or_none(run, piece) for piece in pieces]

    @staticmethod
    def _segments(out: dict, offset: float, limit: float, options) -> list[tuple]:
        end_of = lambda t: limit if t is None else min(offset + t, limit)
        chunks = [
            (round(offset + (c["timestamp"][0] or 0.0), 3), round(end_of(c["timestamp"][1]), 3), c["text"].strip())
            for c in out.get("chunks", [])
        ]
        if not options.word_timestamps:
            return [(s, e, t, []) for s, e, t in chunks if t]
        return segments_from_words([Word(s, e, t) for s, e, t in chunks if t])


def skipped_piece(error: Exception) -> bool:
    """Whether transformers 5's pipeline failed joining the word timestamps of a piece that Whisper's fallback
    skipped as no speech: torch.cat of an empty list (the piece alone), an IndexError (in a batch; tests/
    test_transcribe.py holds pieces that give both)."""
    return isinstance(error, IndexError) or "non-empty list of Tensors" in str(error)


def words_or_none(run, piece: np.ndarray) -> dict:
    """The pipeline's output for one piece with word timestamps; none where Whisper's fallback skipped the piece
    as no speech, as without word timestamps."""
    try:
        return run([piece])[0]
    except ValueError as e:
        if not skipped_piece(e):
            raise
        return {"text": "", "chunks": []}


def detect_language_of(
    model, feature_extractor, audio: np.ndarray, among: tuple[str, ...] | None = None
) -> tuple[str, float]:
    """The likeliest language of `audio` (among those codes, when given) and its probability among them."""
    import torch

    features = feature_extractor(
        audio[: 30 * SAMPLE_RATE], sampling_rate=SAMPLE_RATE, return_tensors="pt"
    ).input_features
    lang_to_id = {k: v for k, v in model.generation_config.lang_to_id.items() if not among or k.strip("<|>") in among}
    with torch.inference_mode():
        encoded = model.model.encoder(features.to(model.dtype))
        start = torch.tensor([[model.generation_config.decoder_start_token_id]])
        logits = model(encoder_outputs=encoded, decoder_input_ids=start).logits[0, -1]
    ids = torch.tensor(list(lang_to_id.values()))
    probs = torch.softmax(logits[ids].float(), dim=-1)
    best = int(probs.argmax())
    return list(lang_to_id)[best].strip("<|>"), round(float(probs[best]), 4)


def segments_from_words(words: list[Word], max_seconds: float = 30.0) -> list[tuple]:
    """Group words into sentence-like segments (the pipeline gives words or segments, never both)."""
    segments, current = [], []
    for word in words:
        current.append(word)
        if re.search(r"[.!?。]$", word.word) or current[-1].end - current[0].start >= max_seconds:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return [(ws[0].start, ws[-1].end, " ".join(w.word for w in ws), ws) for ws in segments]
