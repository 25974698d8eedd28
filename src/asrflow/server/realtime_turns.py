"""A realtime session's turns once committed (realtime.LiveSession's half that transcribes): each admitted like a
file request and bounded per session, drafted while it is spoken (deltas of the words two drafts agree on), then
transcribed in the order spoken (completed, or failed), every decode through the server's scheduler."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import numpy as np
from fastapi import WebSocketDisconnect
from starlette.websockets import WebSocketDisconnected

from asrflow.audio import SAMPLE_RATE
from asrflow.errors import AsrflowError
from asrflow.live import Agreement
from asrflow.server.errors import HTTPError
from asrflow.server.logprobs import logprobs_of, word_logprobs
from asrflow.server.realtime_events import error_event

LOG = logging.getLogger("asrflow.server")
GONE = (WebSocketDisconnect, WebSocketDisconnected)  # the client went away (or the session was closed)
PARTIAL_EVERY = 0.2  # seconds of new speech between hypotheses of the turn being spoken
PAUSING = 0.2  # seconds of silence after which no new hypothesis starts: the turn may be ending, its final comes first
MAX_PENDING = 3  # turns of one session committed and not yet completed


class Turns:
    """The turn-transcribing half of a LiveSession, whose state (set in LiveSession.__init__ and _reset_audio) and
    send/error it shares. A turn is transcribed with the model, options and include the session had when it was
    committed: a session.update meanwhile changes the turns after it."""

    async def committed(self, turn: np.ndarray) -> None:
        """A turn is admitted like a file request (the server's queued-audio limit), then transcribed in order.
        A session holds at most MAX_PENDING turns not yet completed: each costs a window, however short, so a
        client committing bits of audio must not fill the server's queue (every file request would get a 503)."""
        if self.pending >= MAX_PENDING:
            return await self.error(
                f"{self.item} was dropped: {MAX_PENDING} turns of this session are still being "
                "transcribed; commit longer turns, or wait for their completed events.",
                code="too_many_pending_turns",
            )
        try:
            reservation = self.holder.admission.reserve(len(turn) / SAMPLE_RATE, 1)
        except HTTPError as e:
            return await self.error(f"{self.item} was dropped: {e.message}", code="server_at_capacity")
        await self.send(
            {"type": "input_audio_buffer.committed", "previous_item_id": self.previous_item, "item_id": self.item}
        )
        self.previous_item = self.item
        self.pending += 1
        settings = (self.served, self.options, self.include)
        task = self._spawn(self.complete(self.item, turn, self.agreement, self.partial, settings))
        task.add_done_callback(lambda _: self._settled(reservation))  # also when cancelled before it started

    def _settled(self, reservation) -> None:
        self.pending -= 1
        reservation.release()
        if not self.pending:
            self.quiet_since = time.monotonic()

    def _idle_left(self) -> float:
        """Seconds until the session is idle: a client waiting for its own turns' transcripts is not idle, and its
        silence counts from the later of its last event and its last turn's completion."""
        return self.idle if self.pending else max(0.0, self.idle - (time.monotonic() - self.quiet_since))

    def maybe_hypothesis(self) -> None:
        """While a turn is spoken: a new hypothesis every PARTIAL_EVERY seconds, one at a time, and only while no
        live turn waits for the model (a completed turn comes before any draft; drafts and turns, live work, come
        before file windows: scheduler.Scheduler._next)."""
        end = self.offset + len(self.buffer)
        idle = not self.holder.ready().live_waiting()
        pausing = self.turn_detection is not None and end - self.detector.last_speech > PAUSING * SAMPLE_RATE
        if (
            idle
            and not pausing
            and (self.partial is None or self.partial.done())
            and end - self.hypothesis_at >= PARTIAL_EVERY * SAMPLE_RATE
        ):
            self.hypothesis_at = end
            turn = self.buffer[self.turn_start - self.offset :].copy()
            self.partial = self._spawn(self.hypothesise(self.item, turn, self.agreement))

    async def hypothesise(self, item: str, turn: np.ndarray, agreement: Agreement) -> None:
        """A draft of the turn so far; the words it newly agrees on are a delta (with their logprobs, from this
        draft, when the session includes them)."""
        try:
            draft = await self.transcribe(turn, draft=True, probabilities=bool(self.include))
        except Exception:  # noqa: BLE001 - the scheduler logged the model's own failures
            return  # a courtesy: the turn's final text counts
        if new := agreement.update(words := draft.text.split()):
            at = len(agreement.confirmed) - len(new)  # the new words' place in this draft
            known = draft.probabilities is not None and len(draft.probabilities) == len(words)
            await self.delta(item, agreement, new, draft.probabilities[at : at + len(new)] if known else None)

    async def complete(self, item: str, turn: np.ndarray, agreement: Agreement, partial, settings: tuple) -> None:
        served, options, include = settings
        async with self.order:  # turns complete in the order they were committed
            if partial is not None:
                await asyncio.gather(partial, return_exceptions=True)
            started = time.perf_counter()
            try:
                result = await self.transcribe(turn, settings=(served, options)) if len(turn) else None
            except (HTTPError, AsrflowError) as e:
                return await self.fail_turn(item, getattr(e, "message", None) or str(e), "transcription_failed")
            except Exception as e:  # the model's own failure (or a bug): logged, and the client told
                LOG.error("a realtime transcription failed", exc_info=e)
                return await self.fail_turn(item, "the server failed on this turn.", "server_error")
            text = result.text if result else ""
            logprobs = logprobs_of(result.segments if result else []) if include else None
            if rest := agreement.rest(text.split()):
                agreement.confirmed += rest
                known = logprobs is not None and len(logprobs) == len(text.split())
                await self.delta(item, agreement, rest, logprobs=logprobs[-len(rest) :] if known else None)
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item,
                    "content_index": 0,
                    "transcript": text,
                    **({"logprobs": logprobs} if include else {}),
                    "usage": {"type": "duration", "seconds": round(len(turn) / SAMPLE_RATE, 3)},
                    "asrflow": {"seconds": round(time.perf_counter() - started, 3), "model": served.name},
                }
            )

    async def fail_turn(self, item: str, message: str, code: str) -> None:
        """The turn's `failed` event, in place of its `completed`: the client waiting for it is told."""
        failure = error_event(f"could not transcribe {item}: {message}", code=code)["error"]
        event = {"type": "conversation.item.input_audio_transcription.failed", "item_id": item, "content_index": 0}
        await self.send(event | {"error": failure})

    async def delta(self, item: str, agreement: Agreement, words: list[str], probabilities=None, logprobs=None) -> None:
        """The newly agreed words; their logprobs (OpenAI's, a word at a time, joined the delta) from a draft's
        word `probabilities` or the final's `logprobs`, when the session includes them and they are known."""
        first = len(agreement.confirmed) == len(words)
        if probabilities is not None:
            logprobs = word_logprobs(words, probabilities, first)
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item,
                "content_index": 0,
                "delta": ("" if first else " ") + " ".join(words),
                **({"logprobs": logprobs} if logprobs is not None else {}),
            }
        )

    async def transcribe(
        self, samples: np.ndarray, draft: bool = False, settings: tuple | None = None, probabilities: bool = False
    ):
        """Through the scheduler; hypotheses of a turn still spoken are drafts (Transcriber.draft: quick, on the
        turn's length instead of a 30 s window, without word timestamps: their text), the final one a full
        transcription with the (model, options) it was committed with (its Transcript)."""
        served, options = settings or (self.served, self.options)
        options = replace(options, word_timestamps=False) if draft else options
        job = self.holder.ready().submit(
            served.transcriber, samples, options, draft=draft, live=True, probabilities=probabilities
        )
        try:
            result = await asyncio.wrap_future(job.future)
        finally:
            job.future.cancel()  # cancelled (the session closed): the scheduler drops it at its next turn
        return result

    def _spawn(self, work) -> asyncio.Task:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), GONE):
            LOG.error("a realtime transcription failed", exc_info=task.exception())
