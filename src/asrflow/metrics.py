"""Word and character error rates after Whisper's text normalizers."""

from __future__ import annotations

import functools

import jiwer


@functools.cache
def _normalizer(english: bool):
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer() if english else BasicTextNormalizer()


def normalize(text: str, language: str | None = "en") -> str:
    """Whisper's English normalizer for English, its basic normalizer for other languages."""
    return " ".join(_normalizer(language in (None, "en"))(text).split())


def word_error_rate(references: list[str], hypotheses: list[str], language: str | None = "en") -> float:
    refs = [normalize(r, language) for r in references]
    hyps = [normalize(h, language) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    return jiwer.wer([refs[i] for i in keep], [hyps[i] for i in keep])


def deleted_share(references: list[str], hypotheses: list[str], language: str | None = "en") -> float:
    """The share of reference words missing from the hypotheses (jiwer's deletions): dropped speech."""
    refs = [normalize(r, language) for r in references]
    hyps = [normalize(h, language) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    out = jiwer.process_words([refs[i] for i in keep], [hyps[i] for i in keep])
    return out.deletions / max(1, out.hits + out.substitutions + out.deletions)


def character_error_rate(references: list[str], hypotheses: list[str], language: str | None = "en") -> float:
    refs = [normalize(r, language) for r in references]
    hyps = [normalize(h, language) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    return jiwer.cer([refs[i] for i in keep], [hyps[i] for i in keep])


def read_rttm(text: str) -> list[tuple[float, float, str]]:
    """(start, end, speaker) turns from RTTM's SPEAKER lines (file, channel, onset, duration, ..., name, ...)."""
    turns = []
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            onset, duration = float(fields[3]), float(fields[4])
            turns.append((onset, onset + duration, fields[7]))
    return turns


def diarization_errors(reference: list[tuple[float, float, str]], segments, collar: float = 0.25) -> dict[str, float]:
    """pyannote.metrics' DER components of diarized segments against reference turns (a 0.25 s collar at each
    reference boundary, overlapped speech not scored): missed speech, false alarm and confusion seconds, and the
    reference speech ("total") they are a share of."""
    from pyannote.core import Annotation
    from pyannote.core import Segment as Span
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref, hyp = Annotation(), Annotation()
    for start, end, speaker in reference:
        ref[Span(start, end)] = speaker
    for s in segments:
        if s.speaker and s.end > s.start:
            hyp[Span(s.start, s.end)] = s.speaker
    return DiarizationErrorRate(collar=collar, skip_overlap=True)(ref, hyp, detailed=True)


def diarization_error_rate(reference: list[tuple[float, float, str]], segments, collar: float = 0.25) -> float:
    return float(diarization_errors(reference, segments, collar)["diarization error rate"])


def language_hits(turns: list[dict], segments) -> tuple[int, int]:
    """(segments whose language is that of the reference turn they overlap most, segments scored)."""
    hits = scored = 0
    for s in segments:
        overlap = [(min(s.end, t["end"]) - max(s.start, t["start"]), t["language"]) for t in turns]
        best, language = max(overlap, default=(0.0, None))
        if best > 0:
            scored += 1
            hits += s.language == language
    return hits, scored
