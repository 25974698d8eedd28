"""OpenAI's Realtime API, transcription sessions: /v1/realtime?intent=transcription over WebSocket.

Client events: session.update, input_audio_buffer.append (base64 PCM16 mono, 24 kHz as OpenAI sends or 16 kHz),
input_audio_buffer.commit and .clear. Server events: session.created/.updated, input_audio_buffer.speech_started,
.speech_stopped, .committed, .cleared, conversation.item.input_audio_transcription.delta (words settled while the
turn is spoken, live.Agreement) and .completed (the turn's final text), error. Turns are found by server_vad
(live.TurnDetector) or committed by the client (turn_detection null). Every transcription goes through the
server's scheduler, in turns with the file requests.

Bounds: at most --max-sessions sessions at once (one more gets an error and close code 1013); each committed turn
is admitted like a file request (the server's queued-audio limit); audio faster than twice real time, after a burst,
is dropped; Silero (the turn detector) runs off the event loop; a frame that is not a valid event gets an error
event and the session goes on (realtime_events); a session that closes withdraws its turns from the scheduler.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketDisconnected

from asrflow.audio import SAMPLE_RATE
from asrflow.errors import AsrflowError
from asrflow.live import Agreement, TurnDetector, silero
from asrflow.options import TranscribeOptions
from asrflow.server.errors import HTTPError
from asrflow.server.realtime_events import (
    SERVER_VAD,
    EventError,
    Pace,
    audio,
    audio_seconds,
    error_event,
    parse,
    session_update,
)

LOG = logging.getLogger("asrflow.server")
GONE = (WebSocketDisconnect, WebSocketDisconnected)  # the client went away (or the session was closed)
router = APIRouter()
PARTIAL_EVERY = 0.2  # seconds of new speech between hypotheses of the turn being spoken
FIRST_PARTIAL = 0.5  # seconds of turn (prefix padding included) before its first hypothesis
PAUSING = 0.2  # seconds of silence after which no new hypothesis starts: the turn may be ending, its final comes first
MAX_TURN = 30.0  # a turn longer than Whisper's window is committed as it stands
MAX_BUFFER = 600.0  # audio held uncommitted with turn_detection null
MAX_PENDING = 3  # turns of one session committed and not yet completed
ids = itertools.count(1)
# every session's resampling and Silero, off the event loop in one thread: a core stays free for the loop
LISTENER = ThreadPoolExecutor(1, thread_name_prefix="asrflow-listen")


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(ids):012d}"


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket):
    try:
        await open_session(websocket)
    except GONE:
        pass


async def open_session(websocket: WebSocket):
    config, state = websocket.app.state.config, websocket.app.state
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    if getattr(state, "realtime_sessions", 0) >= config.max_sessions:  # one event loop: a plain count
        await websocket.send_text(
            json.dumps(
                {
                    "event_id": new_id("event"),
                    **error_event(
                        f"this server holds at most {config.max_sessions} realtime sessions at once: try again later.",
                        code="session_limit_reached",
                    ),
                }
            )
        )
        await websocket.close(code=1013, reason="too many sessions: try again later")
        return
    state.realtime_sessions = getattr(state, "realtime_sessions", 0) + 1
    try:
        await asyncio.get_running_loop().run_in_executor(LISTENER, silero)  # the first session loads it
        session = LiveSession(websocket, state.holder, config.max_audio_seconds, config.realtime_idle_s)
        try:
            await session.use_model(None)
        except HTTPError as e:
            await session.error(e.message, "model", "model_not_ready")
            await websocket.close(code=1011)
            return
        if websocket.query_params.get("intent", "transcription") != "transcription":
            await session.error(
                "asrflow serves transcription sessions only: connect with ?intent=transcription.", "intent"
            )
            await websocket.close(code=1008)
            return
        await session.run()
    finally:
        state.realtime_sessions -= 1


class LiveSession:
    def __init__(self, websocket: WebSocket, holder, max_seconds: float, idle: float = 60.0):
        self.websocket, self.holder, self.max_samples, self.idle = (
            websocket,
            holder,
            int(max_seconds * SAMPLE_RATE),
            idle,
        )
        self.id, self.sending, self.order = new_id("sess"), asyncio.Lock(), asyncio.Lock()
        self.transcription = {"model": "whisper-1", "language": None, "prompt": ""}
        self.rate, self.turn_detection = 24000, dict(SERVER_VAD)
        self.served, self.options = None, None  # the session's model and options (use_model)
        self._reset_audio()
        self.item, self.previous_item, self.received = None, None, 0
        self.tasks: set[asyncio.Task] = set()
        self.pending = 0  # turns committed and not yet completed
        self.quiet_since = time.monotonic()  # the client's last event, or its last turn's completion if later
        self.pace, self.failed = Pace(), False  # failed: an event failed on a bug (logged with its traceback once)

    async def use_model(self, requested: str | None) -> None:
        """The model the session's transcription names (any the server serves; whisper-1: its default)."""
        self.served = await self.holder.model(requested)
        self.options = self.served.transcriber.resolve({})

    def _reset_audio(self) -> None:
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self.detector = None  # made by _listen, off the event loop (the first one loads Silero)
        self.buffer, self.offset, self.turn_start = np.zeros(0, np.float32), 0, None  # offset: buffer[0]'s sample
        self.agreement, self.hypothesis_at, self.partial = Agreement(), 0, None

    def describe(self) -> dict:
        return {
            "object": "realtime.transcription_session",
            "id": self.id,
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": self.rate},
                    "noise_reduction": None,
                    "transcription": self.transcription,
                    "turn_detection": self.turn_detection,
                }
            },
            "include": None,
        }

    async def send(self, event: dict) -> None:
        async with self.sending:
            await self.websocket.send_text(json.dumps({"event_id": new_id("event"), **event}))

    async def error(self, message: str, param: str | None = None, code: str | None = None, event_id=None) -> None:
        await self.send(error_event(message, param, code, event_id))

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": self.describe()})
        try:
            while True:
                try:
                    message = await asyncio.wait_for(self.websocket.receive(), self._idle_left())
                except TimeoutError:
                    if self.pending or self._idle_left() > 0:  # owed a transcript, or not yet quiet this long
                        continue
                    await self.error(f"no event for {self.idle:g} s: the session is closed.", code="idle_timeout")
                    await self.websocket.close(code=1000)
                    return
                self.quiet_since = time.monotonic()
                if message["type"] == "websocket.disconnect":
                    return
                if not await self.handle(message):
                    await self.websocket.close(code=1008)
                    return
        finally:
            for task in self.tasks:  # turns waiting or being transcribed: withdrawn from the scheduler
                task.cancel()

    async def handle(self, message: dict) -> bool:
        """One client frame; False ends the session (its audio limit reached). A frame that is not a valid event,
        or that the session cannot take, gets an error event and the session goes on."""
        event_id = None
        try:
            event = parse(message)
            event_id = event["event_id"]
            handler = {
                "session.update": self.update,
                "input_audio_buffer.append": self.append,
                "input_audio_buffer.commit": self.commit,
                "input_audio_buffer.clear": self.clear,
            }[event["type"]]
            return await handler(event) is not False
        except EventError as e:
            await self.error(e.message, e.param, e.code, event_id)
        except (HTTPError, AsrflowError) as e:
            code = e.code if isinstance(getattr(e, "code", None), str) else "invalid_value"
            await self.error(getattr(e, "message", None) or str(e), getattr(e, "param", None), code, event_id)
        except GONE:
            raise
        except Exception as e:
            LOG.error("a realtime event failed: %r", e, exc_info=not self.failed)
            self.failed = True
            await self.error("the server failed on this event.", code="server_error", event_id=event_id)
        return True

    async def update(self, event: dict) -> None:
        rate, transcription, detection = session_update(event, self.rate, self.transcription, self.turn_detection)
        model = transcription["model"]
        served = await self.holder.model(model) if model != self.transcription["model"] else self.served
        fields = TranscribeOptions.openai_fields()  # the session's language and prompt: the options OpenAI's set
        options = served.transcriber.resolve({fields[k]: transcription[k] or None for k in ("language", "prompt")})
        self.rate, self.transcription, self.options, self.turn_detection = rate, transcription, options, detection
        self.served = served
        self._reset_audio()
        await self.send({"type": "session.updated", "session": self.describe()})

    async def append(self, event: dict) -> bool:
        self.pace.take(audio_seconds(event, self.rate))  # audio too fast is dropped before it costs any decoding
        pcm = audio(event)
        seconds = len(pcm) / 2 / self.rate
        if self.received + seconds * SAMPLE_RATE > self.max_samples:
            await self.error(
                f"the session passed this server's limit of {self.max_samples / SAMPLE_RATE / 60:g} minutes "
                "of audio: open a new one.",
                code="session_limit",
            )
            return False
        if self.turn_detection is None and len(self.buffer) + seconds * SAMPLE_RATE > MAX_BUFFER * SAMPLE_RATE:
            raise EventError(
                f"the buffer holds {MAX_BUFFER:g} s: commit it (input_audio_buffer.commit).", "audio", "buffer_full"
            )
        samples, events = await asyncio.get_running_loop().run_in_executor(LISTENER, self._listen, pcm)
        self.received += len(samples)
        self.buffer = np.concatenate([self.buffer, samples])
        if self.turn_detection is None:
            return True
        for kind, at in events:
            await (self.started(at) if kind == "started" else self.stopped(at))
        if self.turn_start is None:  # between turns: keep what prefix padding may need
            keep = min(len(self.buffer), SAMPLE_RATE)
            self.offset, self.buffer = self.offset + len(self.buffer) - keep, self.buffer[-keep:]
        elif (self.offset + len(self.buffer) - self.turn_start) / SAMPLE_RATE > MAX_TURN:
            end = self.offset + len(self.buffer)
            await self.stopped(end)  # committed as it stands; the speech goes on in a new turn
            await self.started(end)
        else:
            self.maybe_hypothesis()
        return True

    def _listen(self, pcm: bytes) -> tuple[np.ndarray, list]:
        """The append at 16 kHz, and the turns Silero finds in it (in a thread)."""
        samples, detection = self._resample(np.frombuffer(pcm, "<i2")), self.turn_detection
        if detection is None:
            return samples, []
        if self.detector is None:
            self.detector = TurnDetector(
                detection["threshold"], detection["prefix_padding_ms"], detection["silence_duration_ms"]
            )
        return samples, self.detector.feed(samples)

    def _resample(self, pcm: np.ndarray) -> np.ndarray:
        if not len(pcm):
            return np.zeros(0, np.float32)
        if self.rate == SAMPLE_RATE:
            return pcm.astype(np.float32) / 32768.0
        frame = av.AudioFrame.from_ndarray(pcm[np.newaxis, :].copy(), format="s16", layout="mono")
        frame.sample_rate = self.rate
        return np.concatenate(
            [f.to_ndarray().reshape(-1) for f in self.resampler.resample(frame)] or [np.zeros(0, np.float32)]
        )

    async def started(self, at: int) -> None:
        self.turn_start, self.item = max(at, self.offset), new_id("item")
        self.agreement = Agreement()
        self.hypothesis_at = self.turn_start + int((FIRST_PARTIAL - PARTIAL_EVERY) * SAMPLE_RATE)
        await self.send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": at * 1000 // SAMPLE_RATE,
                "item_id": self.item,
            }
        )

    async def stopped(self, at: int) -> None:
        if self.turn_start is None:
            return
        await self.send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": at * 1000 // SAMPLE_RATE,
                "item_id": self.item,
            }
        )
        end = min(at + SAMPLE_RATE // 5, self.offset + len(self.buffer))  # a little after the last speech
        turn = self.buffer[self.turn_start - self.offset : end - self.offset].copy()
        self.offset, self.buffer = end, self.buffer[end - self.offset :]
        await self.committed(turn)
        self.turn_start = None

    async def commit(self, event: dict) -> None:
        if self.turn_detection is not None and self.turn_start is None or not len(self.buffer):
            raise EventError("the buffer holds no speech to commit.", code="input_audio_buffer_commit_empty")
        if self.turn_detection is not None:
            return await self.stopped(self.offset + len(self.buffer))
        self.item = new_id("item")
        turn, self.buffer = self.buffer, np.zeros(0, np.float32)
        await self.committed(turn)

    async def clear(self, event: dict) -> None:
        self._reset_audio()
        await self.send({"type": "input_audio_buffer.cleared"})

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
        task = self._spawn(self.complete(self.item, turn, self.agreement, self.partial))
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
        """While a turn is spoken: a new hypothesis every PARTIAL_EVERY seconds, one at a time, and only while the
        model has nothing else queued (hypotheses are a courtesy; completed turns and file requests come first)."""
        end = self.offset + len(self.buffer)
        idle = self.holder.ready().depth() == 0
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
        try:
            words = (await self.transcribe(turn, draft=True)).split()
        except (HTTPError, AsrflowError):
            return  # a courtesy: the turn's final text counts
        if new := agreement.update(words):
            await self.delta(item, agreement, new)

    async def complete(self, item: str, turn: np.ndarray, agreement: Agreement, partial) -> None:
        async with self.order:  # turns complete in the order they were committed
            if partial is not None:
                await asyncio.gather(partial, return_exceptions=True)
            started = time.perf_counter()
            try:
                text = await self.transcribe(turn) if len(turn) else ""
            except (HTTPError, AsrflowError) as e:
                return await self.error(
                    f"could not transcribe {item}: {getattr(e, 'message', None) or e}", code="transcription_failed"
                )
            if rest := agreement.rest(text.split()):
                agreement.confirmed += rest
                await self.delta(item, agreement, rest)
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item,
                    "content_index": 0,
                    "transcript": text,
                    "usage": {"type": "duration", "seconds": round(len(turn) / SAMPLE_RATE, 3)},
                    "asrflow": {"seconds": round(time.perf_counter() - started, 3), "model": self.served.name},
                }
            )

    async def delta(self, item: str, agreement: Agreement, words: list[str]) -> None:
        first = len(agreement.confirmed) == len(words)
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item,
                "content_index": 0,
                "delta": ("" if first else " ") + " ".join(words),
            }
        )

    async def transcribe(self, samples: np.ndarray, draft: bool = False) -> str:
        """Through the scheduler; hypotheses of a turn still spoken are drafts (Transcriber.draft: quick, greedy,
        on the turn's length instead of a 30 s window), the final text is a full transcription."""
        job = self.holder.ready().submit(self.served.transcriber, samples, self.options, draft=draft)
        try:
            result = await asyncio.wrap_future(job.future)
        finally:
            job.future.cancel()  # cancelled (the session closed): the scheduler drops it at its next turn
        return result if draft else result.text

    def _spawn(self, work) -> asyncio.Task:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), GONE):
            LOG.error("a realtime transcription failed", exc_info=task.exception())
