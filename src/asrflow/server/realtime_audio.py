"""A realtime session's audio (realtime.LiveSession's half that listens): appends resampled to 16 kHz into one
buffer, in the stream's time (`offset` is buffer[0]'s sample), turns found in it by live.TurnDetector (server_vad
or semantic_vad), and the committed turn handed to realtime_turns. A session.update keeps what is buffered."""

from __future__ import annotations

import itertools

import av
import numpy as np

from asrflow.audio import SAMPLE_RATE
from asrflow.live import Agreement, TurnDetector
from asrflow.server.realtime_turns import PARTIAL_EVERY, Turns

FIRST_PARTIAL = 0.5  # seconds of turn (prefix padding included) before its first hypothesis
ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(ids):012d}"


class Listening(Turns):
    """The listening half of a LiveSession, whose state (LiveSession.__init__) and send it shares."""

    def _reset_audio(self) -> None:
        self._new_format()
        self.detector = None  # made by _listen, off the event loop (the first one loads Silero)
        self.buffer, self.offset, self.turn_start = np.zeros(0, np.float32), 0, None  # offset: buffer[0]'s sample
        self.quiet_from = 0  # the sample after the last turn (idle_timeout_ms counts from it)
        self.agreement, self.hypothesis_at, self.partial = Agreement(), 0, None

    def _new_format(self) -> None:
        """Appends resampled afresh, from the session's format as it is now."""
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self.odd = b""  # a PCM16 append's odd last byte: the first of the next append's first sample

    async def _listen_anew(self, audio_format: dict, detection: dict | None) -> None:
        """A session.update keeps the buffer, as OpenAI's does: a new format resamples from the next append; new
        turn detection commits a turn under way as it stands (its item ends as it began), then listens from the
        buffer's end, audio buffered before it being what precedes speech (commit it first to have it
        transcribed), and idle_timeout_ms counts from there."""
        if audio_format != self.format:
            self._new_format()
        if detection != self.turn_detection:
            if self.turn_start is not None:
                await self.stopped(self.offset + len(self.buffer))
            self.detector, self.agreement = None, Agreement()
            self.quiet_from = self.offset + len(self.buffer)

    def _listen(self, pcm: np.ndarray) -> tuple[np.ndarray, list]:
        """The append at 16 kHz, and the turns Silero finds in it (in a thread)."""
        samples, detection = self._resample(pcm), self.turn_detection
        if detection is None:
            return samples, []
        if self.detector is None:  # listening from the end of the buffer
            self.detector = TurnDetector(
                detection["threshold"],
                detection["prefix_padding_ms"],
                detection["silence_duration_ms"],
                at=self.offset + len(self.buffer),
            )
        return samples, self.detector.feed(samples)

    def _resample(self, pcm: np.ndarray) -> np.ndarray:
        if not len(pcm):
            return np.zeros(0, np.float32)
        if self.format["rate"] == SAMPLE_RATE:
            return pcm.astype(np.float32) / 32768.0
        frame = av.AudioFrame.from_ndarray(pcm[np.newaxis, :].copy(), format="s16", layout="mono")
        frame.sample_rate = self.format["rate"]
        return np.concatenate(
            [f.to_ndarray().reshape(-1) for f in self.resampler.resample(frame)] or [np.zeros(0, np.float32)]
        )

    async def started(self, at: int) -> None:
        self.turn_start, self.item = max(at, self.offset), new_id("item")  # never before the audio committed
        self.agreement = Agreement()  # one draft at a time: one still running holds the next
        self.hypothesis_at = self.turn_start + int((FIRST_PARTIAL - PARTIAL_EVERY) * SAMPLE_RATE)
        await self.send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": self.turn_start * 1000 // SAMPLE_RATE,
                "item_id": self.item,
            }
        )

    async def stopped(self, at: int) -> None:
        if self.turn_start is None:
            return
        at = max(at, self.turn_start)  # a stop the VAD heard before a commit that cut the turn
        await self.send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": at * 1000 // SAMPLE_RATE,
                "item_id": self.item,
            }
        )
        end = min(at + SAMPLE_RATE // 5, self.offset + len(self.buffer))  # a little after the last speech
        turn = self.buffer[self.turn_start - self.offset : end - self.offset].copy()
        self.offset, self.buffer, self.quiet_from = end, self.buffer[end - self.offset :], end
        await self.committed(turn)
        self.turn_start = None

    async def timed_out(self) -> None:
        """server_vad's idle_timeout_ms, as OpenAI's: that much audio without speech since the last turn, and the
        silence is committed as a turn of its own (timeout_triggered, committed, then its transcript: most often
        empty, or speech too quiet for the VAD). Counted in audio, not wall time: a client that sends nothing
        meets the session's idle limit instead."""
        end, self.item = self.offset + len(self.buffer), new_id("item")
        await self.send(
            {
                "type": "input_audio_buffer.timeout_triggered",
                "audio_start_ms": self.quiet_from * 1000 // SAMPLE_RATE,
                "audio_end_ms": end * 1000 // SAMPLE_RATE,
                "item_id": self.item,
            }
        )
        turn = self.buffer[max(0, self.quiet_from - self.offset) :].copy()
        keep = min(len(self.buffer), SAMPLE_RATE)  # what prefix padding may need, should speech start now
        self.offset, self.buffer, self.quiet_from = end - keep, self.buffer[len(self.buffer) - keep :], end
        self.agreement, self.partial = Agreement(), None
        await self.committed(turn)
