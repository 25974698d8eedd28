"""OpenAI's logprobs (files' include[]=logprobs, realtime's include), a word at a time, for both routes that give
them: from Whisper's word probabilities, which the ctranslate2 backend computes with word timestamps."""

from __future__ import annotations

import math

from asrflow.server.errors import HTTPError
from asrflow.transcript import Segment


def check_word_probabilities(served, param: str) -> None:
    """Refuses logprobs from a model whose backend gives no word probabilities (transformers), naming the fix."""
    backend = served.transcriber.backend.name
    if backend != "ctranslate2":
        raise HTTPError(
            400,
            "logprobs need word probabilities, which the ctranslate2 backend gives and this model's "
            f"{backend} backend does not: serve it with --backend ctranslate2.",
            param,
        )


def logprobs_of(segments: list[Segment], first: bool = True) -> list[dict]:
    """Each word (with the space before it, as the text has it, but for the transcript's first) and its log
    probability (Whisper's, of its tokens: the mean of their probabilities, as word timestamps compute it, to 4
    decimals), and its UTF-8 bytes: joined, they are the text."""
    words = [w for s in segments for w in s.words if w.probability is not None]
    return word_logprobs([w.word for w in words], [w.probability for w in words], first)


def word_logprobs(words: list[str], probabilities: list[float], first: bool = True) -> list[dict]:
    """OpenAI's logprobs of `words` with their `probabilities` (see logprobs_of)."""
    tokens = [("" if first and i == 0 else " ") + w for i, w in enumerate(words)]
    return [
        {"token": t, "logprob": round(math.log(max(p, 1e-4)), 6), "bytes": list(t.encode())}
        for t, p in zip(tokens, probabilities)
    ]
