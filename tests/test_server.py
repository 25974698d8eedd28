"""The server as clients use it: the real openai client and real HTTP against one real `asrflow serve` process;
servers with other settings run in this process (conftest.serve_in_process), sharing the loaded model."""

import asyncio
import base64
import functools
import os
import time
from collections import Counter

import httpx
import numpy as np
import openai
import pytest
from conftest import BIN, DATA, JFK_TEXT, SAMPLE, environment, free_port, made_once, serve_in_process, start

from asrflow.audio import decode_audio
from asrflow.encoding import encode_audio
from asrflow.metrics import normalize, word_error_rate

AUDIO = SAMPLE.read_bytes()


def serve(*args):
    port = free_port()
    process = start(
        [BIN / "asrflow", "serve", "bundled:tiny.en", "--port", str(port), *args],
        f"http://127.0.0.1:{port}/ready",
        environment(),
    )
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(served_process):
    return served_process[0]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def assert_jfk(text: str, bound: float = 0.1):
    assert word_error_rate([JFK_TEXT], [text]) < bound, text


def test_openai_client_json_and_text(client):
    result = client.audio.transcriptions.create(model="whisper-1", file=("jfk.flac", AUDIO))
    assert_jfk(result.text)
    assert result.usage.type == "duration" and abs(result.usage.seconds - 11.0) < 0.1  # as whisper-1 is billed
    text = client.audio.transcriptions.create(model="whisper-1", file=("jfk.flac", AUDIO), response_format="text")
    assert_jfk(text)


def test_openai_client_newer_models_fields(client):
    """keywords[] are hotwords (dev013 says "bus", which tiny.en hears as "mouse" untold: test_hotwords);
    languages[] naming one language is `language`, naming several is `multilingual` among them, which an
    English-only model refuses by name."""
    clip = (DATA / "dev013.mp3").read_bytes()
    told = client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", clip), keywords=["bus"])
    assert " bus," in told.text, told.text
    english = client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", clip), languages=["en"])
    assert english.text
    with pytest.raises(openai.BadRequestError, match="English-only, so it has no languages to tell apart"):
        client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", clip), languages=["en", "de"])
    with pytest.raises(openai.BadRequestError, match="languages\\[\\] and language both say"):
        client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", clip), languages=["en"], language="fr")
    same = client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", clip), languages=["en", " EN"])
    assert same.text == english.text  # one language, however written


def test_openai_client_logprobs(client):
    """include[]=logprobs: each word's log probability, in json and on every streamed delta and the done event,
    parsed by the SDK's own types; with another response_format or another value, a 400 naming it."""
    from openai.types.audio import Transcription, TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent

    result = client.audio.transcriptions.create(model="whisper-1", file=("jfk.flac", AUDIO), include=["logprobs"])
    logprobs = Transcription.model_validate(result.to_dict()).logprobs
    assert "".join(p.token for p in logprobs) == result.text, [p.token for p in logprobs]  # spaces included
    assert all(p.logprob <= 0 and p.bytes == list(p.token.encode()) for p in logprobs)
    assert sum(p.logprob > -0.7 for p in logprobs) >= 0.8 * len(logprobs)  # JFK, heard clearly: most words likely
    stream = client.audio.transcriptions.create(
        model="whisper-1", file=("jfk.flac", AUDIO), include=["logprobs"], stream=True
    )
    events = [e.to_dict() for e in stream]
    deltas = [TranscriptionTextDeltaEvent.model_validate(e) for e in events[:-1]]
    done = TranscriptionTextDoneEvent.model_validate(events[-1])
    dumped = [p.model_dump() for p in logprobs]  # the types differ by event; their fields are the same
    assert [p.model_dump() for d in deltas for p in d.logprobs] == [p.model_dump() for p in done.logprobs] == dumped
    for refused, needle in (({"response_format": "text"}, "goes with response_format json"), ({}, "not 'tokens'")):
        include = ["logprobs"] if refused else ["tokens"]
        with pytest.raises(openai.BadRequestError, match=needle):
            client.audio.transcriptions.create(model="whisper-1", file=("jfk.flac", AUDIO), include=include, **refused)


def test_logprobs_need_the_ctranslate2_backend(hf_transcriber):
    with serve_in_process(hf_transcriber) as url:
        answer = httpx.post(
            f"{url}/v1/audio/transcriptions", files={"file": ("jfk.flac", AUDIO)}, data={"include[]": "logprobs"}
        )
    assert answer.status_code == 400 and "--backend ctranslate2" in answer.json()["error"]["message"], answer.text


def test_openai_client_subtitles(client):
    srt = client.audio.transcriptions.create(model="whisper-1", file=SAMPLE.open("rb"), response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> ") and "country" in srt
    vtt = client.audio.transcriptions.create(model="whisper-1", file=SAMPLE.open("rb"), response_format="vtt")
    assert vtt.startswith("WEBVTT") and "-->" in vtt


def test_openai_client_verbose_json_with_words(client):
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=("jfk.flac", AUDIO),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
        prompt="Kennedy",
        temperature=0.0,
    )
    assert result.language == "english" and abs(result.duration - 11.0) < 0.1
    assert result.usage.type == "duration" and result.usage.seconds == result.duration
    assert result.segments and result.words and result.words[0].end > result.words[0].start
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and result.words[-1].end <= result.duration + 0.01


def test_openai_client_diarized_json(client, short_call):
    audio = short_call.read_bytes()
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("call.ogg", audio), response_format="diarized_json", chunking_strategy="auto"
    )
    assert type(result).__name__ == "TranscriptionDiarized"  # the client parsed OpenAI's shape
    assert [s.speaker for s in result.segments[:2]] == ["A", "B"] and {s.speaker for s in result.segments} == {"A", "B"}
    assert all(s.type == "transcript.text.segment" and s.end > s.start for s in result.segments)
    assert result.segments[0].text.startswith("Good morning") and result.text.startswith("Good morning")
    # streamed: each delta names its segment, and a transcript.text.segment with its speaker follows (the SDK's types)
    events = list(
        client.audio.transcriptions.create(
            model="whisper-1",
            file=("call.ogg", audio),
            response_format="diarized_json",
            chunking_strategy="auto",
            stream=True,
        )
    )
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    labelled = [e for e in events if e.type == "transcript.text.segment"]
    assert type(labelled[0]).__name__ == "TranscriptionTextSegmentEvent" and events[-1].type == "transcript.text.done"
    assert [d.segment_id for d in deltas] == [e.id for e in labelled] == [s.id for s in result.segments]
    assert [(e.speaker, e.text) for e in labelled] == [(s.speaker, s.text) for s in result.segments]
    # OpenAI's known speakers: short clips of their voices (other sentences) as data URLs name the speakers
    voices = {"agent": "en-us+klatt", "caller": "en-gb-x-rp+f4"}
    references = [
        f"data:audio/ogg;base64,{base64.b64encode((DATA / 'voices' / f'{v}.ogg').read_bytes()).decode()}"
        for v in voices.values()
    ]
    named = client.audio.transcriptions.create(
        model="whisper-1",
        file=("call.ogg", audio),
        response_format="diarized_json",
        extra_body={"known_speaker_names": list(voices), "known_speaker_references": references},
    )
    assert [s.speaker for s in named.segments[:2]] == ["agent", "caller"]
    # OpenAI's bounds: at most 4 speakers, clips of 2 to 10 s
    with pytest.raises(openai.BadRequestError, match="at most 4 known speakers"):
        client.audio.transcriptions.create(
            model="whisper-1",
            file=("call.ogg", audio),
            response_format="diarized_json",
            extra_body={"known_speaker_names": list("abcde"), "known_speaker_references": references[:1] * 5},
        )
    second = encode_audio(decode_audio(DATA / "voices" / "en-us+klatt.ogg")[:16000], "wav")
    with pytest.raises(openai.BadRequestError, match="lasts 1.0 s; OpenAI's API takes clips of 2 to 10 s"):
        client.audio.transcriptions.create(
            model="whisper-1",
            file=("call.ogg", audio),
            response_format="diarized_json",
            extra_body={
                "known_speaker_names": ["agent"],
                "known_speaker_references": [f"data:audio/wav;base64,{base64.b64encode(second).decode()}"],
            },
        )
    with pytest.raises(openai.BadRequestError, match="in pairs"):
        client.audio.transcriptions.create(
            model="whisper-1",
            file=("call.ogg", audio),
            response_format="diarized_json",
            extra_body={"known_speaker_names": ["agent"], "known_speaker_references": []},
        )
    # asrflow's own fields, with the client's extra_body: speakers on verbose_json segments
    verbose = client.audio.transcriptions.create(
        model="whisper-1",
        file=("call.ogg", audio),
        response_format="verbose_json",
        extra_body={"diarize": "true", "num_speakers": "2"},
    )
    assert {s["speaker"] for s in verbose.to_dict()["segments"]} == {"A", "B"}
    vad = client.audio.transcriptions.create(
        model="whisper-1", file=("jfk.flac", AUDIO), chunking_strategy={"type": "server_vad"}
    )
    assert_jfk(vad.text)
    with pytest.raises(openai.BadRequestError, match="chunking_strategy must be"):
        client.audio.transcriptions.create(
            model="whisper-1", file=("call.ogg", audio), chunking_strategy={"type": "fixed"}
        )
    # server_vad's settings are the VAD's: a high threshold takes JFK's quieter first words for noise
    strict = client.audio.transcriptions.create(
        model="whisper-1",
        file=("jfk.flac", AUDIO),
        chunking_strategy={
            "type": "server_vad",
            "threshold": 0.9,
            "silence_duration_ms": 300,
            "prefix_padding_ms": 100,
        },
    )
    assert "fellow Americans" not in strict.text and "your country" in strict.text
    for strategy, message in (
        ({"type": "server_vad", "threshold": 2}, "vad_threshold must be between"),
        ({"type": "server_vad", "eagerness": "high"}, "no field 'eagerness'"),
    ):
        with pytest.raises(openai.BadRequestError, match=message):
            client.audio.transcriptions.create(model="whisper-1", file=("jfk.flac", AUDIO), chunking_strategy=strategy)
    with pytest.raises(openai.BadRequestError, match="turn diarize on"):
        client.audio.transcriptions.create(
            model="whisper-1", file=("call.ogg", audio), extra_body={"num_speakers": "2"}
        )
    with pytest.raises(openai.BadRequestError, match="turn multilingual on"):  # a field of asrflow's, read and checked
        client.audio.transcriptions.create(
            model="whisper-1", file=("call.ogg", audio), extra_body={"languages": "en,de"}
        )


def test_openai_client_streaming(client, server):
    stream = client.audio.transcriptions.create(model="whisper-1", file=("jfk.flac", AUDIO), stream=True)
    events = list(stream)
    assert events[-1].type == "transcript.text.done"
    assert_jfk(events[-1].text)
    deltas = [e.to_dict() for e in events if e.type == "transcript.text.delta"]
    assert deltas and not any("segment_id" in d for d in deltas)  # only when diarizing
    assert {e.type for e in events} == {"transcript.text.delta", "transcript.text.done"}
    # long work shows progress: audio seconds done, of the whole, in each delta
    progress = [d["progress"] for d in deltas]
    assert all(abs(p["total_seconds"] - 11.0) < 0.1 for p in progress)
    assert [p["seconds"] for p in progress] == sorted(p["seconds"] for p in progress) and progress[-1]["seconds"] > 9
    maybe = httpx.post(
        f"{server}/v1/audio/transcriptions", files={"file": ("jfk.flac", AUDIO)}, data={"stream": "maybe"}
    )
    assert maybe.status_code == 400 and "stream cannot be 'maybe'" in maybe.json()["error"]["message"]


def test_invocations_with_mlflows_documented_formats(server):
    encoded = base64.b64encode(AUDIO).decode()
    for body in (
        {"inputs": [encoded]},
        {"dataframe_split": {"columns": ["audio"], "data": [[encoded]]}},
        {"inputs": [encoded], "params": {"return_timestamps": True}},
    ):
        response = httpx.post(f"{server}/invocations", json=body, timeout=120)
        assert response.status_code == 200, response.text
        prediction = response.json()["predictions"][0]
        assert_jfk(prediction if isinstance(prediction, str) else prediction["text"])
    assert isinstance(prediction["segments"], list)
    assert httpx.get(f"{server}/ping").status_code == 200
    assert httpx.get(f"{server}/version").text


def test_an_answer_does_not_depend_on_who_else_is_calling(server):
    """Concurrent requests take the same single path as a request alone: identical text on ten dev clips, sent
    one at a time and then all at once (taking turns on the model a window at a time)."""
    files = sorted(DATA.glob("dev00*"))

    async def post(http, f):
        response = await http.post(f"{server}/v1/audio/transcriptions", files={"file": (f.name, f.read_bytes())})
        assert response.status_code == 200, response.text
        return response.json()["text"]

    async def alone_then_together():
        async with httpx.AsyncClient(timeout=300) as http:
            alone = [await post(http, f) for f in files]
            return alone, await asyncio.gather(*(post(http, f) for f in files))

    alone, together = asyncio.run(alone_then_together())
    assert len(files) == 10 and alone == together


@functools.lru_cache
def long_speech(minutes: float, format: str = "ogg") -> bytes:
    """Minutes of real speech (the dev clips over and over), as Ogg Opus (small enough for the served process's
    2 MB limit) or in another format (FLAC: about 1 MB a minute, encoded some 15 times faster). Encoded once for
    make test's run (ten minutes of Opus take 7 s), whichever test asks first."""

    def encoded() -> bytes:
        import numpy as np

        from asrflow import decode_audio
        from asrflow.encoding import encode_audio

        clips = [decode_audio(str(p)) for p in sorted(DATA.glob("dev00*"))]
        audio = np.concatenate(clips * int(minutes * 60 / sum(len(c) / 16000 for c in clips) + 1))
        return encode_audio(audio[: int(minutes * 60 * 16000)], format)

    return made_once(f"speech-{minutes}-minutes.{format}", encoded)


def test_a_short_request_is_not_stuck_behind_a_long_one(server):
    """Turns of one window each: a 5 s clip sent after a 10-minute file is answered while the file is still being
    transcribed, and more than 3 s before it is done (then its client leaves: its work stops)."""

    async def both():
        async with httpx.AsyncClient(timeout=300) as http:
            long = asyncio.ensure_future(
                http.post(f"{server}/v1/audio/transcriptions", files={"file": ("long.ogg", long_speech(10))})
            )
            await asyncio.sleep(1.5)  # the long file is in and being transcribed
            short = await http.post(
                f"{server}/v1/audio/transcriptions", files={"file": ("short.wav", (DATA / "dev000.wav").read_bytes())}
            )
            assert short.status_code == 200, short.text
            await asyncio.sleep(3)
            assert not long.done(), "the long file was done within 3 s of the short one"
            long.cancel()

    asyncio.run(both())
    assert wait_until(lambda: queue_is_empty(server), 30)  # the departed request's work is withdrawn


def test_live_work_goes_ahead_of_file_windows(ct2_transcriber):
    """A realtime session's draft and turn, queued behind file requests that came first and have had no more of
    the model (least attained service alone would serve those first), are answered before any of them (the turn
    first); until live work has had three quarters of the model's last 10 s: then file requests go first (one
    ahead of a live turn being decoded)."""
    from asrflow import decode_audio
    from asrflow.server.scheduler import Scheduler

    scheduler, order = Scheduler(), []
    clip, options = decode_audio(DATA / "dev000.wav"), ct2_transcriber.resolve({"beam_size": 1})
    with scheduler.wakeup:  # every job queued before the scheduler's thread picks one (the condition's RLock)
        jobs = [scheduler.submit(ct2_transcriber, clip, options) for _ in range(3)]
        jobs += [scheduler.submit(ct2_transcriber, clip[:32000], options, draft=True, live=True)]
        jobs += [scheduler.submit(ct2_transcriber, clip, options, live=True)]
        assert scheduler.live_waiting()  # a live turn (not only a draft) queued: sessions' next drafts wait
        for name, job in zip(["file", "file", "file", "draft", "turn"], jobs):
            job.future.add_done_callback(lambda _, name=name: order.append(name))
    for job in jobs:
        job.future.result(timeout=120)
    assert order == ["turn", "draft", "file", "file", "file"], order
    assert not scheduler.live_waiting()
    # live work beyond its share of the model (three quarters of the last 10 s) no longer goes first
    from asrflow.server.scheduler import LIVE_SHARE

    for _ in range(30):
        scheduler.submit(ct2_transcriber, clip, options, live=True).future.result(timeout=120)
        if scheduler.live_share() >= LIVE_SHARE:
            break
    assert scheduler.live_share() >= LIVE_SHARE and not scheduler.live_waiting()  # no file request waits
    long = np.concatenate([clip] * 6)  # over 30 s: two windows, turns of its own
    live = scheduler.submit(ct2_transcriber, long, options, live=True)
    while not live.used:  # its first turn taken
        time.sleep(0.01)
    with scheduler.wakeup:  # held: the scheduler cannot take the request before it is seen waiting
        short = scheduler.submit(ct2_transcriber, clip, options)
        assert scheduler.live_waiting()  # a file request waits: drafts wait too
    assert short.future.result(timeout=120) is not None and not live.future.done()  # least attained service
    live.future.result(timeout=120)


def test_several_sessions_drafts_are_decoded_in_one_turn_each_with_its_own_words(ct2_transcriber, monkeypatch):
    """Live hypotheses waiting together (several sessions' drafts, one model and settings) are one turn of the
    model and one batch of its fast path: each answered with its own clip's words, and probabilities (as alone for
    the longest; shorter clips are padded with silence to it), the probabilities only where asked; a draft of other
    settings, or one the fast path does not take (multilingual), is a turn of its own."""
    from asrflow.server.scheduler import Scheduler

    turns, batches = [], []
    scheduler = Scheduler(on_turn=turns.append)
    options = ct2_transcriber.resolve({})
    clips = [
        decode_audio(DATA / name)[:n]
        for name, n in (("dev000.wav", 40000), ("dev004.wav", 64000), ("dev001.mp3", 24000))
    ]
    alone = [ct2_transcriber.draft(clip, options, probabilities=True) for clip in clips]
    drafts = ct2_transcriber.backend.drafts
    monkeypatch.setattr(ct2_transcriber.backend, "drafts", lambda c, *a: (batches.append(len(c)), drafts(c, *a))[1])
    with scheduler.wakeup:  # all queued before the scheduler's thread takes one
        jobs = [
            scheduler.submit(ct2_transcriber, clip, options, draft=True, live=True, probabilities=i == 1)
            for i, clip in enumerate(clips)
        ]
        other = scheduler.submit(ct2_transcriber, clips[0], options.resolve({"beam_size": 1}), draft=True, live=True)
    answered = [job.future.result(timeout=60) for job in jobs]
    other.future.result(timeout=60)
    assert len(turns) == 2 and sorted(batches) == [1, 3]  # the three drafts in one batch, the beam-1 draft alone
    for draft, single in zip(answered, alone):  # its own clip's words (a short clip padded longer may end otherwise)
        assert normalize(draft.text).split()[:4] == normalize(single.text).split()[:4], (single.text, draft.text)
    assert answered[0].probabilities is None and answered[2].probabilities is None
    mine, its_own = answered[1].probabilities, alone[1].probabilities
    assert len(mine) == len(its_own) >= 4 and np.abs(np.subtract(mine, its_own)).mean() < 0.1, (mine, its_own)
    assert not ct2_transcriber.drafts_in_batches(options.resolve({"multilingual": True}))


def queue_is_empty(url: str) -> bool:
    metrics = httpx.get(f"{url}/metrics").text
    return "asrflow_queue_depth 0.0" in metrics and "asrflow_admitted_audio_seconds 0.0" in metrics


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def bad_then_good(server, files, data=None, status=400, match=""):
    response = httpx.post(f"{server}/v1/audio/transcriptions", files=files, data=data or {}, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert match in error["message"]
    good = httpx.post(f"{server}/v1/audio/transcriptions", files={"file": ("jfk.flac", AUDIO)}, timeout=60)
    assert good.status_code == 200
    return error


@pytest.mark.parametrize(
    "name, files, data, status, match",
    [
        ("corrupt", {"file": ("x.wav", b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 50)}, None, 400, "not audio"),
        ("empty", {"file": ("x.mp3", b"")}, None, 400, "empty"),
        ("truncated", {"file": ("x.wav", (DATA / "dev000.wav").read_bytes()[:50000])}, None, 400, "truncated"),
        ("text file", {"file": ("notes.txt", b"hello")}, None, 415, "unsupported file type"),
        ("too large", {"file": ("big.wav", b"\x00" * 2_300_000)}, None, 413, "limit"),
        ("unknown param", {"file": ("jfk.flac", AUDIO)}, {"colour": "blue"}, 400, "colour"),
        ("bad format", {"file": ("jfk.flac", AUDIO)}, {"response_format": "docx"}, 400, "response_format"),
        ("no file", {"other": ("jfk.flac", AUDIO)}, None, 400, "other"),
    ],
)
def test_bad_input_gets_its_status_and_the_server_survives(server, name, files, data, status, match):
    bad_then_good(server, files, data, status, match)


def test_translation_needs_a_multilingual_model(server):
    response = httpx.post(f"{server}/v1/audio/translations", files={"file": ("jfk.flac", AUDIO)})
    assert response.status_code == 400 and "English-only" in response.json()["error"]["message"]


def test_urls_are_refused_unless_allowed(server):
    from asrflow.server.errors import HTTPError
    from asrflow.server.fetch import UrlPolicy, checked_address

    response = httpx.post(f"{server}/invocations", json={"inputs": ["http://127.0.0.1:9/a.wav"]})
    assert response.status_code == 400 and "disabled" in response.text
    with pytest.raises(HTTPError, match="non-public"):
        asyncio.run(checked_address("http://localhost/a.wav", UrlPolicy(("localhost",))))
    with pytest.raises(HTTPError, match="not in the server's allowed"):
        asyncio.run(checked_address("http://example.com/a.wav", UrlPolicy(("other.org",))))


def test_health_ready_and_metrics(server):
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server}/ready").json()["status"] == "ready"
    metrics = httpx.get(f"{server}/metrics").text
    for name in (
        "asrflow_requests_total",
        "asrflow_errors_total",
        "asrflow_request_seconds_bucket",
        "asrflow_audio_seconds_total",
        "asrflow_queue_depth",
    ):
        assert name in metrics


def test_api_key(ct2_transcriber):
    with serve_in_process(ct2_transcriber, api_key="s3cret") as url:
        assert httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("jfk.flac", AUDIO)}).status_code == 401
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.audio.transcriptions.create(model="whisper-1", file=("jfk.flac", AUDIO))
        right = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert_jfk(right.audio.transcriptions.create(model="whisper-1", file=("jfk.flac", AUDIO)).text)
        assert httpx.get(f"{url}/health").status_code == 200


def test_overload_gives_503_then_recovers(ct2_transcriber):

    async def flood():
        async with httpx.AsyncClient(timeout=120) as http:
            return await asyncio.gather(
                *(http.post(f"{url}/v1/audio/transcriptions", files={"file": ("jfk.flac", AUDIO)}) for _ in range(10))
            )

    with serve_in_process(ct2_transcriber, queue_size=1) as url:
        statuses = [r.status_code for r in asyncio.run(flood())]
        assert 503 in statuses and 200 in statuses and set(statuses) <= {200, 503}
        rejected = next(r for r in asyncio.run(flood()) if r.status_code == 503)
        assert rejected.headers["retry-after"]
        assert (
            httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("jfk.flac", AUDIO)}, timeout=60).status_code
            == 200
        )


def test_a_chunked_upload_over_the_limit_is_refused_while_it_is_still_sent(server):
    """No Content-Length: the limit counts bytes as they arrive and answers 413 before the upload ends."""
    import select
    import socket
    from urllib.parse import urlparse

    address = urlparse(server)
    boundary = "asrflowboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    sent, answer = 0, b""
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {address.netloc}\r\nTransfer-Encoding: chunked\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
            ).encode()
        )
        for i in range(6 * 16):  # 6 MB in 64 KB chunks against the server's 2 MB limit
            chunk = (head if i == 0 else b"") + bytes(64 * 1024)
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            if select.select([sock], [], [], 0.05)[0]:
                break
        sock.settimeout(30)
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (TimeoutError, ConnectionResetError):
            pass
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 4 * 2**20, sent  # refused long before the 6 MB were sent
    assert httpx.get(f"{server}/health").status_code == 200


def test_audio_longer_than_the_limit_is_a_413_before_it_is_decoded(ct2_transcriber):
    """A small file can hold hours of audio: the duration limit holds from the header, and while decoding."""
    import numpy as np

    from asrflow.encoding import encode_audio

    with serve_in_process(ct2_transcriber, max_audio_minutes=0.5) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert_jfk(client.audio.transcriptions.create(model="whisper-1", file=("jfk.flac", AUDIO)).text)
        quiet = encode_audio(np.zeros(16000 * 180, dtype=np.float32))  # 3 minutes of Opus, 6x the limit: 30 KB
        for name, data in (
            ("quiet.ogg", quiet),
            ("long.wav", encode_audio(np.zeros(16000 * 40, dtype=np.float32), "wav")),
        ):
            with pytest.raises(openai.APIStatusError) as error:
                client.audio.transcriptions.create(model="whisper-1", file=(name, data))
            assert error.value.status_code == 413 and "limit of 0.5 minutes" in error.value.message, name
        body = {"inputs": [base64.b64encode(quiet).decode()]}
        response = httpx.post(f"{url}/invocations", json=body, timeout=60)
        assert response.status_code == 413 and "0.5 minutes" in response.text


def test_a_request_with_more_clips_than_the_queue_is_refused_whole(ct2_transcriber):
    with serve_in_process(ct2_transcriber, queue_size=2) as url:
        clip = base64.b64encode((DATA / "dev001.mp3").read_bytes()).decode()
        too_many = httpx.post(f"{url}/invocations", json={"inputs": [clip] * 3}, timeout=120)
        assert too_many.status_code == 503 and too_many.headers["retry-after"]
        served = httpx.post(f"{url}/invocations", json={"inputs": [clip] * 2}, timeout=120)
        assert served.status_code == 200 and len(served.json()["predictions"]) == 2
        metrics = httpx.get(f"{url}/metrics").text
        assert 'endpoint="/invocations",status="503"' in metrics


def test_sigterm_drains_requests_in_flight_then_exits():
    import signal
    import threading

    import numpy as np

    from asrflow import decode_audio
    from asrflow.encoding import encode_audio

    process, url = serve("--grace", "60")
    minute = encode_audio(np.concatenate([decode_audio(str(p)) for p in sorted(DATA.glob("dev00*"))] * 2), "flac")
    answer = {}
    request = threading.Thread(
        target=lambda: answer.update(
            response=httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("minute.flac", minute)}, timeout=120)
        )
    )
    request.start()
    time.sleep(1.0)  # the upload is in and being transcribed
    os.killpg(process.pid, signal.SIGTERM)
    request.join(timeout=120)
    assert answer["response"].status_code == 200 and "committee" in answer["response"].json()["text"]
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=5)


def test_admission_is_counted_in_audio_seconds(ct2_transcriber):
    """The queue bounds audio, not requests: beyond --max-queued-audio-minutes a request gets 503 at once."""
    with serve_in_process(ct2_transcriber, max_queued_audio_minutes=0.25) as url:  # 15 s of audio in flight at most
        clip = base64.b64encode(AUDIO).decode()  # 11 s
        refused = httpx.post(f"{url}/invocations", json={"inputs": [clip, clip]}, timeout=60)
        assert refused.status_code == 503 and refused.headers["retry-after"]
        served = httpx.post(f"{url}/invocations", json={"inputs": [clip]}, timeout=60)
        assert served.status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert "asrflow_admitted_audio_seconds 0.0" in metrics  # released once answered


@pytest.fixture(scope="module")
def audio_host():
    """A local web server with audio, redirects (to an allowed host and to a host that is not), a slow
    answer, one too large and a missing file."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            port = self.server.server_address[1]
            redirects = {"/to-loopback": f"http://localhost:{port}/jfk.flac", "/to-allowed": "/jfk.flac"}
            if self.path in redirects:
                self.send_response(302)
                self.send_header("Location", redirects[self.path])
                self.end_headers()
            elif self.path in ("/jfk.flac", "/big.flac", "/slow.flac"):
                body = AUDIO if self.path == "/jfk.flac" else bytes(3 * 2**20)
                self.send_response(200)
                self.end_headers()  # no Content-Length: the limit must count what arrives
                try:
                    for i in range(0, len(body), 64 * 1024):
                        self.wfile.write(body[i : i + 64 * 1024])
                        time.sleep(1 if self.path == "/slow.flac" else 0)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server stopped reading: what the test expects
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    host = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{host.server_address[1]}"
    host.shutdown()


def test_url_inputs_are_fetched_safely(audio_host, ct2_transcriber):
    """Allowed host only, redirects checked again, the upload limit and a time limit hold, failures are 400."""
    with serve_in_process(
        ct2_transcriber, max_upload_mb=2, allowed_url_hosts=("127.0.0.1",), allow_private_urls=True, url_timeout_s=3
    ) as url:

        def invoke(*paths):
            body = {"inputs": [f"{audio_host}{p}" for p in paths]}
            return httpx.post(f"{url}/invocations", json=body, timeout=60)

        served = invoke("/jfk.flac", "/to-allowed")
        assert served.status_code == 200, served.text
        assert all(word_error_rate([JFK_TEXT], [p]) < 0.1 for p in served.json()["predictions"])
        for path, status, message in (
            ("/to-loopback", 400, "'localhost' is not in the server's allowed"),
            ("/big.flac", 413, "larger than the 2 MB"),
            ("/slow.flac", 400, "longer than 3 s"),
            ("/missing.flac", 400, "HTTP 404"),
        ):
            response = invoke(path)
            assert response.status_code == status and message in response.json()["message"], (path, response.text)
        too_many = invoke(*["/jfk.flac"] * 5)
        assert too_many.status_code == 400 and "at most 4 URLs" in too_many.json()["message"]
        assert invoke("/jfk.flac").status_code == 200


def malformed_openai_requests(count: int, seed: int = 11):
    """Random mixtures of wrong fields, values, files and bodies for the OpenAI audio routes."""
    import random

    rng = random.Random(seed)
    junk = ["", "x" * 300, "-1", "1e308", "nan", "true", "[]", "{}", "\x00", "whisper-1", "en", "verbose_json", "word"]
    fields = [
        "model",
        "language",
        "prompt",
        "temperature",
        "response_format",
        "timestamp_granularities[]",
        "stream",
        "colour",
    ]
    files = [b"", b"RIFF", AUDIO[:300], bytes(1000), b"ID3" + bytes(100), AUDIO]
    for i in range(count):
        kind = i % 3
        if kind == 0:  # a raw body that is not the multipart form it claims to be
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
            content_type = rng.choice(
                [
                    "multipart/form-data; boundary=x",
                    "multipart/form-data",
                    "application/json",
                    "text/plain",
                    "audio/wav",
                ]
            )
            yield {"content": body, "headers": {"content-type": content_type}}
        else:
            data = {rng.choice(fields): rng.choice(junk) for _ in range(rng.randrange(0, 4))}
            name = rng.choice(["a.wav", "a.mp3", "a", "a.exe", "", "../../x.ogg"])
            yield {"files": {rng.choice(["file", "file", "audio"]): (name, rng.choice(files))}, "data": data}


def test_hundreds_of_malformed_openai_requests_get_no_5xx_and_the_server_serves_on(server):
    statuses = Counter()
    with httpx.Client(timeout=60) as http:
        for i, request in enumerate(malformed_openai_requests(300)):
            route = "translations" if i % 5 == 0 else "transcriptions"
            statuses[http.post(f"{server}/v1/audio/{route}", **request).status_code] += 1
    assert not [s for s in statuses if s >= 500], statuses
    assert sum(statuses.values()) == 300 and statuses[200] > 0
    good = httpx.post(f"{server}/v1/audio/transcriptions", files={"file": ("jfk.flac", AUDIO)}, timeout=60)
    assert good.status_code == 200 and "country" in good.json()["text"]
