"""OpenAI's Realtime transcription sessions over WebSocket, with the real `openai` client's realtime connection."""

import base64
import json
import threading
import time

import numpy as np
import openai
import websockets
import pytest

from asrflow.metrics import normalize, word_error_rate
from conftest import BIN, DATA, environment, free_port, start, stop

COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


@pytest.fixture(scope="module")
def server():
    port = free_port()
    process = start([BIN / "asrflow", "serve", "bundled:tiny.en", "--port", str(port), "--api-key", "secret"],
                    f"http://127.0.0.1:{port}/ready", environment())
    yield f"http://127.0.0.1:{port}"
    stop(process)


def client(server, key="secret"):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=key, max_retries=0)


def pcm(path, rate=24000) -> bytes:
    """A clip as OpenAI's realtime input: PCM16 mono at `rate`."""
    import av

    from asrflow.audio import decode_audio

    samples = decode_audio(path)
    if rate != 16000:
        frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :], format="flt", layout="mono")
        frame.sample_rate = 16000
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in resampler.resample(frame) + resampler.resample(None))
    return (samples * 32767).astype("<i2").tobytes()


def send_paced(connection, audio: bytes, rate: int, speed: float = 2.0, piece_ms: int = 100):
    step = rate * 2 * piece_ms // 1000
    for i in range(0, len(audio), step):
        connection.input_audio_buffer.append(audio=base64.b64encode(audio[i : i + step]).decode())
        time.sleep(piece_ms / 1000 / speed)


def events_until(connection, done, seconds=120):
    seen, deadline = [], time.monotonic() + seconds
    for event in connection:
        seen.append(event)
        if done(seen) or time.monotonic() > deadline:
            return seen
    return seen


def references():
    rows = [json.loads(line) for line in (DATA / "manifest.jsonl").read_text().splitlines()]
    return {r["audio"]: r["text"] for r in rows}


def test_turns_found_by_server_vad_are_transcribed_live(server):
    refs, clips = references(), ["dev004.wav", "dev008.wav"]
    silence = bytes(24000 * 2 * 3 // 2)  # 1.5 s
    with client(server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        connection.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}}}})
        sender = threading.Thread(target=lambda: [send_paced(connection, silence + pcm(DATA / c) , 24000) for c in clips]
                                  + [send_paced(connection, silence, 24000)])
        sender.start()
        seen = events_until(connection, lambda s: sum(e.type == COMPLETED for e in s) == 2)
        sender.join()
    types = [e.type for e in seen]
    assert types[:2] == ["session.created", "session.updated"]
    completed = [e for e in seen if e.type == COMPLETED]
    assert [e.item_id for e in seen if e.type == "input_audio_buffer.committed"] == [e.item_id for e in completed]
    assert types.count("input_audio_buffer.speech_started") == types.count("input_audio_buffer.speech_stopped") == 2
    for clip, event in zip(clips, completed):
        assert word_error_rate([refs[clip]], [event.transcript]) < 0.25, event.transcript
        deltas = "".join(e.delta for e in seen if e.type == DELTA and e.item_id == event.item_id)
        # deltas spell out the turn as it goes (the drafts' words: their case and punctuation may differ)
        assert deltas and normalize(event.transcript).startswith(normalize(deltas)[:20]), (deltas, event.transcript)


def test_client_commits_when_turn_detection_is_off_at_16_khz(server):
    refs = references()
    with client(server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        connection.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None,
            "transcription": {"model": "bundled:base"}}}})  # another model than the server's default, by name
        connection.input_audio_buffer.append(audio=base64.b64encode(pcm(DATA / "dev001.mp3", 16000)).decode())
        connection.input_audio_buffer.commit()
        seen = events_until(connection, lambda s: any(e.type == COMPLETED for e in s))
    [done] = [e for e in seen if e.type == COMPLETED]
    assert word_error_rate([refs["dev001.mp3"]], [done.transcript]) < 0.3
    assert done.model_extra["asrflow"]["model"] == "bundled:base"


def test_bad_events_get_error_events_and_the_session_goes_on(server):
    with client(server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        connection.send({"type": "response.create"})
        connection.send({"type": "input_audio_buffer.append", "audio": "not base64!"})
        connection.session.update(session={"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}}}})
        connection.input_audio_buffer.commit()  # nothing spoken yet
        connection.session.update(session={"type": "transcription", "audio": {"input": {"transcription": {"model": "gpt-9"}}}})
        connection.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        seen = events_until(connection, lambda s: any(e.type == "session.updated" for e in s))
    errors = [e.error.message for e in seen if e.type == "error"]
    assert len(errors) == 5, errors
    assert "unsupported event type" in errors[0] and "base64" in errors[1] and "24000" in errors[2] and "no speech" in errors[3]
    assert "gpt-9" in errors[4] and "/v1/models" in errors[4]


def test_a_wrong_key_is_refused(server):
    with pytest.raises(Exception):
        with client(server, "wrong").realtime.connect(extra_query={"intent": "transcription"}) as connection:
            connection.recv()


def test_limits_hold_for_every_session():
    """At most 15 s an append, --max-audio-minutes a session (then closed), --realtime-idle-seconds of silence from
    the client (then closed); from a browser the key comes in OpenAI's subprotocol."""
    import websockets.sync.client as ws

    port = free_port()
    process = start([BIN / "asrflow", "serve", "bundled:tiny.en", "--port", str(port), "--api-key", "secret",
                     "--max-audio-minutes", "0.1", "--realtime-idle-seconds", "2"], f"http://127.0.0.1:{port}/ready", environment())
    url = f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription"
    try:
        with ws.connect(url, subprotocols=["realtime", "openai-insecure-api-key.secret"]) as connection:
            assert json.loads(connection.recv())["type"] == "session.created"
            big = base64.b64encode(bytes(24000 * 2 * 16)).decode()  # 16 s in one append
            connection.send(json.dumps({"type": "input_audio_buffer.append", "audio": big}))
            assert "at most 15 s" in json.loads(connection.recv())["error"]["message"]
            piece = base64.b64encode(bytes(24000 * 2 * 2)).decode()  # 2 s of silence, 4 times: past 6 s
            for _ in range(4):
                connection.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
            error = json.loads(connection.recv())["error"]
            assert error["code"] == "session_limit" and "0.1 minutes" in error["message"]
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                connection.recv(timeout=5)
        with ws.connect(url, additional_headers={"Authorization": "Bearer secret"}) as connection:
            connection.recv()  # session.created
            started = time.monotonic()
            assert json.loads(connection.recv(timeout=10))["error"]["code"] == "idle_timeout"
            assert 1.5 < time.monotonic() - started < 5
        with pytest.raises(websockets.exceptions.InvalidStatus):
            ws.connect(url, subprotocols=["realtime", "openai-insecure-api-key.wrong"]).recv()
    finally:
        stop(process)


def test_drafts_guess_a_turns_first_words_as_well_as_a_full_decode(ct2_transcriber, corpus):
    """Live hypotheses are drafts (Transcriber.draft): the encoder takes the turn's length, not a 30 s window.
    On the first 2.5 s of each dev clip, their first three words are right as often as a full decode's."""
    from asrflow.audio import decode_audio
    from asrflow.metrics import normalize

    options = ct2_transcriber.resolve({})
    right = {"draft": 0, "full": 0}
    for path, text in corpus:
        start = decode_audio(path)[: int(2.5 * 16000)]
        first = normalize(text).split()[:3]
        right["draft"] += normalize(ct2_transcriber.draft(start, options)).split()[:3] == first
        right["full"] += normalize(ct2_transcriber.transcribe(start, options).text).split()[:3] == first
    assert right["draft"] >= right["full"] - 1 and right["draft"] >= 0.6 * len(corpus), right
