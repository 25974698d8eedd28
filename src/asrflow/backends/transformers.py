"""The transformers backend: the automatic-speech-recognition pipeline, as MLflow's tutorial builds it."""

from __future__ import annotations

import re
import warnings

import numpy as np

from asrflow.audio import SAMPLE_RATE
from asrflow.errors import ModelNotFoundError
from asrflow.models import ModelSource, hub_error, transformers_dir
from asrflow.options import TranscribeOptions
from asrflow.transcript import Segment, Transcript, Word
from asrflow.vad import speech_regions


def build_pipeline(model_dir: str, device: str = "cpu", dtype=None):
    """The tutorial's pipeline: model, tokenizer and feature extractor loaded separately."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
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


class TransformersBackend:
    name = "transformers"

    def __init__(self, source: ModelSource, device: str = "cpu", compute_type: str = "default"):
        self.compute_type = "float32" if device == "cpu" else "float16"
        try:
            self.pipeline = build_pipeline(transformers_dir(source), device)
        except OSError as e:
            if source.is_local:
                raise ModelNotFoundError(f"could not load {source.name} with transformers: {e}") from None
            raise hub_error(source.name, e) from None
        self.model = self.pipeline.model
        self.multilingual = bool(getattr(self.model.generation_config, "is_multilingual", False))

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions, progress=None) -> Transcript:
        duration = len(audio) / SAMPLE_RATE
        language, probability = (options.language, 1.0) if options.language else self.detect_language(audio)
        pieces = [(0.0, audio)]
        if options.vad_filter:
            pieces = [(start / SAMPLE_RATE, audio[start:end]) for start, end in speech_regions(audio)]
        segments: list[Segment] = []
        for offset, samples in pieces:
            found = self._transcribe_piece(samples, offset, duration, language, options)
            segments += found
            for segment in found if progress else []:
                progress(segment)
        return Transcript.from_segments(segments, language, probability, duration)

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        if not self.multilingual:
            return "en", 1.0
        return detect_language_of(self.model, self.pipeline.feature_extractor, audio)

    def _transcribe_piece(self, audio, offset, duration, language, options) -> list[Segment]:
        # Only what differs from the model's generation config: an explicit num_beams=1 decodes worse.
        generate_kwargs = {"num_beams": options.beam_size} if options.beam_size > 1 else {}
        if options.temperature > 0:
            generate_kwargs.update(do_sample=True, temperature=options.temperature)
        if self.multilingual:
            generate_kwargs.update(language=language, task=options.task)
        if options.initial_prompt:
            generate_kwargs["prompt_ids"] = self.pipeline.tokenizer.get_prompt_ids(options.initial_prompt, return_tensors="pt")
        kwargs = {}
        if len(audio) > 30 * SAMPLE_RATE or options.stride_length_s is not None:
            kwargs = {"chunk_length_s": options.chunk_length_s, "batch_size": options.batch_size}
            if options.stride_length_s is not None:
                kwargs["stride_length_s"] = list(options.stride_length_s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.pipeline(
                audio.copy(),
                return_timestamps="word" if options.word_timestamps else True,
                generate_kwargs=generate_kwargs,
                **kwargs,
            )
        end_of = lambda t, fallback: fallback if t is None else offset + t  # noqa: E731
        chunks = [(offset + (c["timestamp"][0] or 0.0), c["timestamp"][1], c["text"]) for c in out.get("chunks", [])]
        limit = min(duration, offset + len(audio) / SAMPLE_RATE)
        if not options.word_timestamps:
            return [
                Segment(round(s, 3), round(min(end_of(e, limit), limit), 3), t.strip())
                for s, e, t in chunks
                if t.strip()
            ]
        words = [Word(round(s, 3), round(min(end_of(e, limit), limit), 3), t.strip()) for s, e, t in chunks if t.strip()]
        return segments_from_words(words)


def detect_language_of(model, feature_extractor, audio: np.ndarray) -> tuple[str, float]:
    import torch

    features = feature_extractor(audio[: 30 * SAMPLE_RATE], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    lang_to_id = model.generation_config.lang_to_id
    with torch.inference_mode():
        encoded = model.model.encoder(features.to(model.dtype))
        start = torch.tensor([[model.generation_config.decoder_start_token_id]])
        logits = model(encoder_outputs=encoded, decoder_input_ids=start).logits[0, -1]
    ids = torch.tensor(list(lang_to_id.values()))
    probs = torch.softmax(logits[ids].float(), dim=-1)
    best = int(probs.argmax())
    return list(lang_to_id)[best].strip("<|>"), round(float(probs[best]), 4)


def segments_from_words(words: list[Word], max_seconds: float = 30.0) -> list[Segment]:
    """Group words into sentence-like segments (the pipeline gives words or segments, never both)."""
    segments, current = [], []
    for word in words:
        current.append(word)
        if re.search(r"[.!?。]$", word.word) or current[-1].end - current[0].start >= max_seconds:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return [Segment(ws[0].start, ws[-1].end, " ".join(w.word for w in ws), ws) for ws in segments]
