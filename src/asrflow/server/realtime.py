"""OpenAI's Realtime API, transcription sessions: /v1/realtime?intent=transcription over WebSocket.

Client events: session.update, input_audio_buffer.append (base64 PCM16 mono, 24 kHz as OpenAI sends or 16 kHz;
or G.711 at 8 kHz: audio/pcmu, audio/pcma), input_audio_buffer.commit and .clear. Server events:
session.created/.updated, input_audio_buffer.speech_started, .speech_stopped, .committed, .cleared,
conversation.item.input_audio_transcription.delta (words settled while the turn is spoken, live.Agreement),
.completed (the turn's final text; its word logprobs with include) and .failed, error. Turns are found by
server_vad or semantic_vad (its eagerness as the silence that ends a turn; live.TurnDetector) or committed by the
client (turn_detection null). Every transcription goes through the server's scheduler, in turns with the file
requests (realtime_turns).

Bounds: at most --max-sessions sessions at once (one more gets an error and close code 1013); each committed turn
is admitted like a file request (the server's queued-audio limit); audio faster than twice real time, after a burst,
is dropped; Silero (the turn detector) runs off the event loop; a frame that is not a valid event gets an error
event and the session goes on (realtime_events); a session that closes withdraws its turns from the scheduler.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import APIRouter, WebSocket

from asrflow.audio import SAMPLE_RATE
from asrflow.errors import AsrflowError
from asrflow.live import Agreement, silero
from asrflow.options import TranscribeOptions
from asrflow.server.errors import HTTPError
from asrflow.server.logprobs import check_word_probabilities
from asrflow.server.realtime_audio import Listening, new_id
from asrflow.server.realtime_events import (
    SERVER_VAD,
    EventError,
    Pace,
    audio,
    audio_seconds,
    error_event,
    parse,
    session_update,
    shown,
)
from asrflow.server.realtime_turns import GONE

LOG = logging.getLogger("asrflow.server")
router = APIRouter()
MAX_TURN = 30.0  # a turn longer than Whisper's window is committed as it stands
MAX_BUFFER = 600.0  # audio held uncommitted with turn_detection null
# every session's resampling and Silero, off the event loop in one thread: a core stays free for the loop
LISTENER = ThreadPoolExecutor(1, thread_name_prefix="asrflow-listen")


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


class LiveSession(Listening):
    def __init__(self, websocket: WebSocket, holder, max_seconds: float, idle: float = 60.0):
        self.websocket, self.holder, self.max_samples, self.idle = (
            websocket,
            holder,
            int(max_seconds * SAMPLE_RATE),
            idle,
        )
        self.id, self.sending, self.order = new_id("sess"), asyncio.Lock(), asyncio.Lock()
        self.transcription = {"model": "whisper-1", "language": None, "prompt": ""}
        self.format, self.turn_detection = {"type": "audio/pcm", "rate": 24000}, dict(SERVER_VAD)
        self.include = None  # or [LOGPROBS]: each completed turn's logprobs
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

    def describe(self) -> dict:
        return {
            "object": "realtime.transcription_session",
            "id": self.id,
            "type": "transcription",
            "audio": {
                "input": {
                    "format": self.format,
                    "noise_reduction": None,  # taken, not applied (realtime_events.session_update)
                    "transcription": self.transcription,
                    "turn_detection": shown(self.turn_detection),
                }
            },
            "include": self.include,
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
        audio_format, transcription, detection, include = session_update(
            event, self.format, self.transcription, self.turn_detection, self.include
        )
        model = transcription["model"]
        served = await self.holder.model(model) if model != self.transcription["model"] else self.served
        if include:
            check_word_probabilities(served, "session.include")
        fields = TranscribeOptions.openai_fields()  # the session's language and prompt: the options OpenAI's set
        changes = {fields[k]: transcription[k] or None for k in ("language", "prompt")}
        options = served.transcriber.resolve(changes | ({"word_timestamps": True} if include else {}))
        await self._listen_anew(audio_format, detection)
        self.include = include or None
        self.format, self.transcription, self.options, self.turn_detection = (
            audio_format,
            transcription,
            options,
            detection,
        )
        self.served = served
        await self.send({"type": "session.updated", "session": self.describe()})

    async def append(self, event: dict) -> bool:
        self.pace.take(audio_seconds(event, self.format))  # audio too fast is dropped before it costs any decoding
        pcm, self.odd = audio(event, self.format, self.odd)
        seconds = len(pcm) / self.format["rate"]
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
        if self.turn_start is None:  # between turns: keep what prefix padding (or an idle timeout) may need
            idle = (self.turn_detection.get("idle_timeout_ms") or 0) * SAMPLE_RATE // 1000
            if idle and self.offset + len(self.buffer) - self.quiet_from >= idle:
                await self.timed_out()
            keep = min(len(self.buffer), max(SAMPLE_RATE, idle))
            self.offset, self.buffer = self.offset + len(self.buffer) - keep, self.buffer[-keep:]
        elif (self.offset + len(self.buffer) - self.turn_start) / SAMPLE_RATE > MAX_TURN:
            end = self.offset + len(self.buffer)
            await self.stopped(end)  # committed as it stands; the speech goes on in a new turn
            await self.started(end)
        else:
            self.maybe_hypothesis()
        return True

    async def commit(self, event: dict) -> None:
        if self.turn_detection is not None and self.turn_start is None or not len(self.buffer):
            raise EventError("the buffer holds no speech to commit.", code="input_audio_buffer_commit_empty")
        if self.turn_detection is not None:
            await self.stopped(self.offset + len(self.buffer))
            self.detector = None  # listening afresh: speech going on past the commit is the next turn, from there
            return
        self.item, self.agreement = new_id("item"), Agreement()
        turn, self.buffer, self.offset = self.buffer, np.zeros(0, np.float32), self.offset + len(self.buffer)
        self.quiet_from = self.offset
        await self.committed(turn)

    async def clear(self, event: dict) -> None:
        self._reset_audio()
        await self.send({"type": "input_audio_buffer.cleared"})
