"""The CTranslate2 backend: faster-whisper (int8 on CPU), sequential or batched over speech regions."""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, pad_or_trim

from asrflow.audio import SAMPLE_RATE
from asrflow.backends.encoder import TrimmedEncoder
from asrflow.backends.features import SilencePaddedExtractor, WindowedExtractor
from asrflow.backends.languages import by_language, dominant
from asrflow.backends.openvino_encoder import openvino_encoder
from asrflow.backends.prompts import MAX_PROMPT, PerItemPrompts
from asrflow.backends.workers import Workers, layout
from asrflow.errors import ModelNotFoundError
from asrflow.models import ModelSource, ctranslate2_dir, hub_error, local_cache
from asrflow.options import TranscribeOptions
from asrflow.transcript import Draft, Segment, SegmentStream, Word, fit_segment
from asrflow.vad import merged, snapped, speech_edges, speech_regions, vad_settings

CANDIDATES = 3  # languages decoded per speech region to choose its language (multilingual)
VNNI = {"avx512_vnni", "avx_vnni", "amx_int8"}  # x86 instructions whose 8-bit dot products do not saturate


def default_compute_type(device: str, info: dict[str, str] | None = None) -> str:
    """GPU: float16. CPU: int8, the fastest type within half a WER point of float32 (README, Performance), except
    on x86 CPUs without VNNI (`info`: /proc/cpuinfo's fields, by default this machine's): their 8-bit dot products
    saturate (oneDNN's AVX2 path), and int8 cost the fast path 1.5 WER points on the bench's long audio and 2.6
    on a 2-minute file against VNNI's arithmetic, so float32 there. Where the flags cannot be read: int8."""
    if device != "cpu":
        return "float16"
    info = cpu_info() if info is None else info
    x86 = "flags" in info  # ARM's cpuinfo has "Features" (int8 there accumulates in 32 bits)
    return "float32" if x86 and not VNNI & set(info["flags"].split()) else "int8"


def cpu_info() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "flags" ...); empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n")[0].splitlines()
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first if ":" in line)}


class CTranslate2Backend:
    name = "ctranslate2"

    @staticmethod
    def cuda_usable() -> bool:
        return ctranslate2.get_cuda_device_count() > 0

    def __init__(self, source: ModelSource, device: str = "cpu", compute_type: str = "default"):
        if compute_type == "default":
            compute_type = default_compute_type(device)
        self.compute_type = compute_type
        model_dir = ctranslate2_dir(source)
        # the encoder: OpenVINO's on CPU (backends/openvino_encoder.py), else CTranslate2's; the decoder reads either
        self.encoder = openvino_encoder(model_dir, device, compute_type)
        workers, threads = layout(compute_type, self.encoder is None) if device == "cpu" else (1, 0)
        try:
            self.model = WhisperModel(
                model_dir, device=device, compute_type=compute_type, cpu_threads=threads, num_workers=workers
            )
        except (OSError, ValueError) as e:
            if source.is_local:
                raise ModelNotFoundError(f"could not load {source.name} with CTranslate2: {e}") from None
            raise hub_error(source.name, e) from None
        self.multilingual = self.model.model.is_multilingual
        self.model.model = Workers(self.model.model, workers)  # a batch's decoding split among them
        self.encode = self.encoder or (
            lambda features: self.model.model.encode(ctranslate2.StorageView.from_array(features))
        )
        # the batched pipeline (speech regions shorter than a window), with each region padded with silence
        padded = copy.copy(self.model)
        padded.feature_extractor = SilencePaddedExtractor(self.model.feature_extractor)
        engine = self.encoder.engine if self.encoder else f"ctranslate2-{self.model.model.compute_type}"
        # found once, when first needed (a home that cannot be written costs the encoding only); a GPU's take ms
        store = functools.cache(functools.partial(_silence_store, model_dir, engine)) if device == "cpu" else None
        padded.encode = TrimmedEncoder(self.encode, store)
        tokens = self.model.hf_tokenizer
        padded.model = self.prompts = PerItemPrompts(
            self.model.model, tokens.token_to_id("<|startofprev|>"), tokens.token_to_id("<|startoftranscript|>")
        )
        self.batched = BatchedInferencePipeline(padded)
        # the sequential decoder, with the spectrogram computed a window at a time (same values, bounded memory)
        self.sequential = copy.copy(self.model)
        self.sequential.feature_extractor = WindowedExtractor(self.model.feature_extractor)
        self.sequential.encode = padded.encode

    def stream(self, audio: np.ndarray, options: TranscribeOptions) -> SegmentStream:
        """Segments as faster-whisper decodes them, one window (or one batch of VAD chunks) at a time."""
        kwargs = {
            "language": options.language,
            "task": options.task,
            "beam_size": options.beam_size,
            "temperature": list(options.temperature),
            "compression_ratio_threshold": options.compression_ratio_threshold,
            "log_prob_threshold": options.log_prob_threshold,
            "no_speech_threshold": options.no_speech_threshold,
            "condition_on_previous_text": options.condition_on_previous_text,
            "initial_prompt": options.initial_prompt,
            "hotwords": options.hotwords,
            "word_timestamps": options.word_timestamps,
            "vad_filter": options.vad_filter,
            "chunk_length": int(options.chunk_length_s),
        }
        if options.multilingual:
            return self._by_language(audio, options, kwargs)
        # Batching needs cut points, which VAD finds; without VAD decode sequentially (long-form seeking).
        if options.vad_filter and options.batch_size > 1:
            return self._batched(audio, options, kwargs)
        segments, info = self.sequential.transcribe(audio, **kwargs, vad_parameters=vad_settings(options))
        probability = round(float(info.language_probability), 4)
        return SegmentStream(_fitted(segments), info.language, probability, float(info.duration))

    def drafts(self, clips: list[np.ndarray], options: TranscribeOptions, probabilities: bool = False) -> list[Draft]:
        """Quick guesses at short clips' words, for live hypotheses (never a final transcript), decoded as one batch
        (several live sessions' drafts at once: scheduler.Scheduler): the encoder takes each clip and a second of
        silence, in whole seconds (the longest clip's, the others padded with silence), instead of a 30 s window
        (CTranslate2 accepts shorter input), and nothing falls back or seeks. With tiny.en on 2 cores: 0.18 s for
        2 s of speech (beam 5) against 0.44 s. Tokens are capped near speech rate, so a guess cannot loop long. The
        language is the options' (English for English-only models): a few seconds are too few to tell it. With
        `probabilities`, each word's (of the text split at spaces): the mean of its tokens', as word timestamps
        compute it, from CTranslate2's alignment of the tokens to the same encoding."""
        frames = [min(3000, int(np.ceil(len(clip) / SAMPLE_RATE + 1.0)) * 100) for clip in clips]
        most = max(frames)
        features = np.stack(
            [
                self.model.feature_extractor(np.pad(clip[: most * 160], (0, max(0, most * 160 - len(clip)))))[:, :most]
                for clip in clips
            ]
        )
        encoded = self.encode(np.ascontiguousarray(features, dtype=np.float32))
        tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.multilingual, task=options.task, language=options.language or "en"
        )
        prompt = list(tokenizer.sot_sequence) + [tokenizer.no_timestamps]
        results = self.model.model.generate(
            encoded,
            [prompt] * len(clips),
            beam_size=options.beam_size,
            suppress_blank=True,
            max_length=len(prompt) + 10 + int(most / 100 * 6),
        )
        tokens = [[t for t in result.sequences_ids[0] if t < tokenizer.eot] for result in results]
        texts = [tokenizer.decode(found).strip() for found in tokens]
        if not probabilities:
            return [Draft(text) for text in texts]
        which = [i for i, found in enumerate(tokens) if found]
        aligned = {}
        if which:
            # the rows that gave tokens: encoded again when some gave none (a StorageView on a GPU has no rows to take)
            rows = (
                encoded if len(which) == len(clips) else self.encode(np.ascontiguousarray(features[which], np.float32))
            )
            found = self.model.model.align(
                rows, list(tokenizer.sot_sequence), [tokens[i] for i in which], [frames[i] for i in which]
            )
            aligned = dict(zip(which, found))
        return [
            Draft(
                text,
                _word_probabilities(tokenizer, tokens[i], text, aligned[i].text_token_probs) if i in aligned else [],
            )
            for i, text in enumerate(texts)
        ]

    def _batched(self, audio: np.ndarray, options: TranscribeOptions, kwargs: dict) -> SegmentStream:
        """Speech regions (VAD, merged up to one window, pauses kept) decoded a batch at a time.

        faster-whisper's batched pipeline drops the words after a window's last complete timestamp pair (the
        sequential decoder seeks back and decodes them again): here such a region's rest goes back to the
        front of the queue, to be decoded in the next batch, and segments come out in time order.
        """
        spans = speech_regions(audio, options)
        regions = [{"start": a / SAMPLE_RATE, "end": b / SAMPLE_RATE} for a, b in merged(spans, options.chunk_length_s)]
        duration = len(audio) / SAMPLE_RATE
        if not regions:
            return SegmentStream(iter(()), options.language or (None if self.multilingual else "en"), None, duration)
        kwargs = {k: v for k, v in kwargs.items() if k != "vad_filter"} | {"without_timestamps": False}
        batches = self._region_batches(audio, regions, options.batch_size, kwargs)
        first, info = next(batches)  # the first batch tells the language
        segments = itertools.chain(first, itertools.chain.from_iterable(ready or [None] for ready, _ in batches))
        segments = snapped(_fitted(segments), speech_edges(spans, len(audio), options.vad_speech_pad_ms))
        return SegmentStream(segments, info.language, round(float(info.language_probability), 4), duration)

    def _by_language(self, audio: np.ndarray, options: TranscribeOptions, kwargs: dict) -> SegmentStream:
        """Each stretch of speech (VAD, between pauses) in its own language: detected per region, decoded in
        runs of regions of one language (joined up to a window, in batches), each segment tagged with it.
        Nothing is translated unless task=translate. The stream's language is the one spoken longest, known
        once every region's is: the segments yield a step (None) per region detected, so that a scheduler
        takes the detection a region at a time too."""
        regions = speech_regions(audio, options)
        window = self.model.feature_extractor.n_samples  # the language of each region's 30 s block is a candidate too
        kwargs = {k: v for k, v in kwargs.items() if k != "vad_filter"} | {"without_timestamps": False}
        stream = SegmentStream(iter(()), None, None, len(audio) / SAMPLE_RATE)

        def decode(code: str, spans: list) -> Iterator[Segment | None]:
            clips = [{"start": a / SAMPLE_RATE, "end": b / SAMPLE_RATE} for a, b in spans]
            decoded = self._region_batches(audio, clips, options.batch_size, kwargs | {"language": code})
            return _fitted(itertools.chain.from_iterable(ready or [None] for ready, _ in decoded))

        def segments() -> Iterator[Segment | None]:
            around, detected = {}, []
            for a, b in regions:
                if (k := (a + b) // 2 // window) not in around:
                    around[k] = self._ranked(audio[k * window : (k + 1) * window], options)[1][0][0]
                detected.append(self._language_of(audio[a:b], options, around[k]))
                yield None
            stream.language, stream.language_probability = dominant(detected, regions)
            yield from by_language(regions, detected, options, decode, len(audio))

        stream.segments = segments()
        return stream

    def _language_of(self, clip: np.ndarray, options: TranscribeOptions, nearby: str) -> tuple[str, float]:
        """A region's language and its detection probability. The detector's best guesses (among
        `options.languages` when given) are each decoded, and the one whose language token and transcript are
        likeliest together wins (log-probability per token, as beam search ranks; a repetitive transcript, over
        the compression-ratio threshold, loses): the detector alone reads one token, and takes short synthetic
        French for Thai or Spanish for Italian. One encoding serves both, the detector's own (faster-whisper's
        `detect_language`: the clip's frames, zero-padded to a window): on 30 mixed-language turns the same
        languages came out as with a second, silence-padded encoding for the candidates, in 0.73x the time
        (an encoding of just the clip's seconds, as `draft` uses, was faster still but got 22 of 30 right
        against 26). The language detected over the 30 s around the clip (`nearby`) is a candidate as well: a
        short clip's own detection can miss its language altogether (`tests/data/german.mp3`'s first 4.8 s: en
        0.68, de 0.04), and a wrong candidate only costs a decode."""
        encoded, ranked = self._ranked(clip, options)
        total = sum(p for _, p in ranked) or 1.0
        candidates = ranked[:CANDIDATES]
        candidates += [(code, p) for code, p in ranked[CANDIDATES:] if code == nearby]
        if len(candidates) > 1:
            candidates = [self._likeliest(encoded, candidates, options)]
        code, p = candidates[0]
        return code, round(float(p / total), 4)

    def _ranked(self, clip: np.ndarray, options: TranscribeOptions):
        """The clip's encoding (its frames, zero-padded to a window) and its languages, likeliest first."""
        extractor = self.model.feature_extractor
        encoded = self.encode(pad_or_trim(extractor(clip[: extractor.n_samples])[:, : extractor.nb_max_frames])[None])
        ranked = [(token[2:-2], p) for token, p in self.model.model.detect_language(encoded)[0]]
        return encoded, [(code, p) for code, p in ranked if not options.languages or code in options.languages]

    def _likeliest(self, encoded, candidates: list[tuple[str, float]], options: TranscribeOptions) -> tuple[str, float]:
        prompts = [
            [
                *Tokenizer(self.model.hf_tokenizer, True, task=options.task, language=code).sot_sequence,
                self.model.hf_tokenizer.token_to_id("<|notimestamps|>"),
            ]
            for code, _ in candidates
        ]
        repeated = ctranslate2.StorageView.from_array(np.repeat(np.array(encoded), len(candidates), axis=0))
        results = self.model.model.generate(repeated, prompts, beam_size=options.beam_size, return_scores=True)

        def score(pair) -> tuple[bool, float]:
            (_, p), result = pair
            text = self.model.hf_tokenizer.decode(result.sequences_ids[0])
            fluent = (
                options.compression_ratio_threshold is None
                or get_compression_ratio(text) <= options.compression_ratio_threshold
            )
            n = len(result.sequences_ids[0]) + 1  # and its end token
            return fluent, (np.log(max(p, 1e-10)) + result.scores[0] * n) / (n + 1)

        return max(zip(candidates, results), key=score)[0]

    def _region_batches(self, audio: np.ndarray, regions: list[dict], batch_size: int, kwargs: dict, retries: int = 2):
        """Yields (segments now complete in time order, info) after each batch.

        With condition_on_previous_text (Whisper's default) the regions are decoded as contiguous streams in
        lockstep, as many as make the fewest batches: a batch holds the next region of each stream whose regions
        before it are decoded, prompted with the tokens its stream decoded so far, timestamps included, as the
        sequential decoder's prompt has them (backends/prompts.py). Without the timestamps a prompted window is
        decoded as one long segment."""
        conditioned = kwargs.get("condition_on_previous_text", True)
        runs = max(1, -(-len(regions) // batch_size))  # batches needed: stream k is regions k*runs ... (k+1)*runs - 1
        queue = deque((i, region, retries) for i, region in enumerate(regions))
        decoded, unfinished, released = [[] for _ in regions], [1] * len(regions), 0
        contexts = [[] for _ in regions]  # each region's stream's tokens up to its end

        def before(i: int, region: dict) -> list[int]:  # a region's rest follows its own tokens, a region the last's
            return contexts[i] if region is not regions[i] else contexts[i - 1] if i % runs else []

        def due(i: int, region: dict) -> bool:  # all of its stream before it is decoded (a rest's is)
            return not conditioned or region is not regions[i] or not i % runs or not unfinished[i - 1]

        while queue:
            batch = []
            for item in list(queue):
                if len(batch) < batch_size and due(*item[:2]):
                    batch.append(item)
                    queue.remove(item)
            # shortest first: the decoder's workers take a batch in contiguous parts, the first ones the largest
            batch.sort(key=lambda item: item[1]["end"] - item[1]["start"])
            if conditioned:
                self.prompts.set_contexts([before(i, region) for i, region, _ in batch])
            segments, info = self.batched.transcribe(
                audio, clip_timestamps=[r for _, r, _ in batch], batch_size=batch_size, **kwargs
            )
            kwargs["language"] = info.language  # one language for the file, detected on its first batch
            segments = list(segments)
            for i, region, left in reversed(batch):
                ours = [s for s in segments if region["start"] - 0.01 <= s.start < region["end"]]
                if (again := self._fallen_back(audio, region, ours, kwargs)) is not None:
                    ours, left = again, 0  # decoded whole: no rest
                decoded[i] += ours
                contexts[i] = self._context(before(i, region), ours, kwargs)
                if left and (rest := _unfinished(region, ours)):
                    queue.appendleft((i, rest, left - 1))
                else:
                    unfinished[i] = 0
            ready = []
            while released < len(regions) and not unfinished[released]:
                ready += sorted(decoded[released], key=lambda s: s.start)
                decoded[released], released = [], released + 1
            yield ready, info

    def _fallen_back(self, audio: np.ndarray, region: dict, segments: list, kwargs: dict) -> list | None:
        """A region whose text repeats itself (its compression ratio over the threshold: Whisper looping, "No, no,
        no, ..." for a whole held-out clip) decoded again by the sequential decoder, which falls back to sampling
        at higher temperatures as Whisper does (the batched pipeline has no fallback); None when its text does not
        repeat, or no temperature is left to fall back to."""
        if len(kwargs.get("temperature", ())) < 2 or not _repeats(segments, kwargs):
            return None
        start, end = (int(region[edge] * SAMPLE_RATE) for edge in ("start", "end"))
        again, _ = self.sequential.transcribe(audio[start:end], **kwargs)
        at = lambda t: min(t + region["start"], region["end"])  # within the region (sampled timestamps stray)
        shift = lambda item, **more: dataclasses.replace(item, start=at(item.start), end=at(item.end), **more)
        return [shift(s, words=[shift(w) for w in s.words] if s.words else s.words) for s in again]

    def _context(self, before: list[int], segments, kwargs: dict) -> list[int]:
        """A stream's tokens after `segments`: none after a repetitive text (where the sequential decoder would
        fall back to sampling, and so drop its prompt), nor after text sampled above 0.5 (faster-whisper's
        prompt_reset_on_temperature)."""
        if _repeats(segments, kwargs) or any((s.temperature or 0.0) > 0.5 for s in segments):
            return []  # a loop, or text sampled hot (a fallback): no prompt, as Whisper's
        return (before + [t for s in segments for t in s.tokens])[-MAX_PROMPT:]


def _repeats(segments, kwargs: dict) -> bool:
    """Whether the segments' text repeats itself past the compression ratio threshold (Whisper looping: where its
    sequential decoder falls back to sampling)."""
    threshold, text = kwargs.get("compression_ratio_threshold"), "".join(s.text for s in segments)
    return threshold is not None and bool(text) and get_compression_ratio(text) > threshold


def _silence_store(model_dir: str, engine: str) -> Path | None:
    """Where the encoded silent windows of this model's encoder are kept (TrimmedEncoder): named by the model's
    files and the encoder's engine and precision, whose numbers they are; None for a model that is no local folder."""
    return local_cache(Path(model_dir), f"silence-{engine}") if (Path(model_dir) / "model.bin").is_file() else None


def _word_probabilities(tokenizer: Tokenizer, tokens: list[int], text: str, token_probs) -> list[float]:
    """Each word's probability (of `text` split at spaces): the mean of its tokens'."""
    words: list[list[float]] = [[] for _ in text.split()]
    for i, p in enumerate(token_probs):  # a token's word: the last of the text decoded up to it
        if at := len(tokenizer.decode(tokens[: i + 1]).split()):
            words[min(at, len(words)) - 1].append(p)
    return [float(np.mean(w)) if w else 0.0 for w in words]


def _unfinished(region: dict, segments, at_least: float = 1.0) -> dict | None:
    """The part of `region` after its last decoded segment, when that is more than `at_least` seconds."""
    last = min(max((s.end for s in segments), default=region["start"]), region["end"])
    return {"start": last, "end": region["end"]} if region["end"] - last > at_least else None


def _fitted(segments) -> Iterator[Segment | None]:
    previous_end = 0.0
    for s in segments:
        if s is None:  # a batch that completed no segment: a step of work all the same (SegmentStream)
            yield s
            continue
        words = [
            Word(_seconds(w.start), _seconds(w.end), w.word.strip(), round(float(w.probability), 4))
            for w in s.words or []
        ]
        segment = fit_segment(_seconds(s.start), _seconds(s.end), s.text.strip(), words, previous_end)
        previous_end = segment.end
        yield segment


def _seconds(t) -> float:
    return round(float(t), 3)
