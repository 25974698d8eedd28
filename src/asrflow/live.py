"""Live transcription's two policies, free of any transport: where turns start and stop (OpenAI's server_vad:
Silero speech probabilities, a threshold, prefix padding and a silence duration), and which words of a turn
still being spoken are settled (LocalAgreement-2, as whisper_streaming does: a word is confirmed once two
hypotheses in a row agree on it and on everything before it; confirmed words are never revised)."""

from __future__ import annotations

import re

import numpy as np

from asrflow.audio import SAMPLE_RATE

WINDOW = 512  # Silero's window at 16 kHz (32 ms)
WARM_UP = 16  # windows of context fed again before new ones (Silero's state starts afresh each call)


def silero():
    """Silero's VAD model: loaded by the first call, then shared (faster-whisper keeps it)."""
    from faster_whisper.vad import get_vad_model

    return get_vad_model()


class TurnDetector:
    """Feeds on 16 kHz samples; reports ("started", sample) and ("stopped", sample) in the stream's time."""

    def __init__(
        self,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
        at: int = 0,
    ):
        """`at`: the stream's sample where it starts listening."""
        self.model = silero()
        self.threshold, self.release = threshold, max(threshold - 0.15, 0.01)  # Silero's hysteresis
        self.padding = int(prefix_padding_ms * SAMPLE_RATE / 1000)
        self.silence = int(silence_duration_ms * SAMPLE_RATE / 1000)
        self.pending = np.zeros(0, np.float32)  # samples not yet a whole window
        self.context = np.zeros(0, np.float32)  # the last windows seen, fed again for Silero's state
        self.seen = at  # samples looked at (whole windows)
        self.speaking, self.last_speech = False, at

    def feed(self, samples: np.ndarray) -> list[tuple[str, int]]:
        self.pending = np.concatenate([self.pending, samples])
        whole = len(self.pending) // WINDOW * WINDOW
        if not whole:
            return []
        fresh, self.pending = self.pending[:whole], self.pending[whole:]
        probabilities = self.model(np.concatenate([self.context, fresh]))[len(self.context) // WINDOW :].reshape(-1)
        self.context = np.concatenate([self.context, fresh])[-WARM_UP * WINDOW :]
        events = []
        for i, p in enumerate(probabilities):
            start = self.seen + i * WINDOW
            if not self.speaking and p >= self.threshold:
                self.speaking, self.last_speech = True, start + WINDOW
                events.append(("started", max(0, start - self.padding)))
            elif self.speaking and p >= self.release:
                self.last_speech = start + WINDOW
            elif self.speaking and start + WINDOW - self.last_speech >= self.silence:
                self.speaking = False
                events.append(("stopped", self.last_speech))
        self.seen += whole
        return events


def _key(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


class Agreement:
    """LocalAgreement-2 over successive hypotheses (word lists) of one turn."""

    def __init__(self):
        self.previous: list[str] = []
        self.confirmed: list[str] = []

    def update(self, words: list[str]) -> list[str]:
        """The words newly confirmed by this hypothesis (agreeing with the one before it)."""
        common = 0
        for a, b in zip(self.previous, words):
            if _key(a) != _key(b):
                break
            common += 1
        self.previous = words
        if common <= len(self.confirmed) or [_key(w) for w in words[: len(self.confirmed)]] != [
            _key(w) for w in self.confirmed
        ]:
            return []
        new = words[len(self.confirmed) : common]
        self.confirmed += new
        return new

    def rest(self, final: list[str]) -> list[str]:
        """The final text's words after the confirmed ones, when it begins with them (else none: the final
        transcript, sent whole, is what counts)."""
        head = [_key(w) for w in final[: len(self.confirmed)]]
        return final[len(self.confirmed) :] if head == [_key(w) for w in self.confirmed] else []
