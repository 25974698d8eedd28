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


def character_error_rate(references: list[str], hypotheses: list[str], language: str | None = "en") -> float:
    refs = [normalize(r, language) for r in references]
    hyps = [normalize(h, language) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    return jiwer.cer([refs[i] for i in keep], [hyps[i] for i in keep])
