"""Hostile input: only audio formats are opened (an upload never makes FFmpeg read another file), forged headers are
refused before decoding, and hundreds of mutated uploads get no 5xx."""

import base64
import contextlib
import os
import random
import re
import resource
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import DATA, SAMPLE, serve_in_process

from asrflow import AudioDecodeError, decode_audio
from asrflow.audio import check_audio, declared_seconds
from asrflow.encoding import encode_audio

REPO = Path(__file__).parents[1]
NOT_AUDIO = "is not audio in a format asrflow reads"
EXISTING, MISSING = "tests/data/dev004.wav", "tests/data/no-such-file.wav"  # relative: FFmpeg's "safe" names


def png() -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


def naming(path: str) -> dict[str, bytes]:
    """Inputs that are not audio but make a demuxer read the file they name (concat, HLS, a playlist)."""
    return {
        "ffconcat": f"ffconcat version 1.0\nfile '{path}'\n".encode(),
        "hls": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{path}\n#EXT-X-ENDLIST\n".encode(),
        "playlist": f"{path}\n".encode(),
    }


NOT_AUDIO_INPUTS = {
    **{f"{k}-existing": v for k, v in naming(EXISTING).items()},
    **{f"{k}-missing": v for k, v in naming(MISSING).items()},
    "image": png(),
    "text": b"hello, this is not audio\n",
}


def wav_header(rate: int, channels: int = 1, frames: int = 2000) -> bytes:
    data = b"\x00" * frames * channels * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


@pytest.fixture(scope="module")
def server(ct2_transcriber):
    with serve_in_process(ct2_transcriber, max_upload_mb=2) as url:
        yield url


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # where the playlists' relative names point: the files they name exist


@pytest.mark.check
@pytest.mark.parametrize("name", NOT_AUDIO_INPUTS)
def test_inputs_naming_other_files_are_not_opened_as_bytes_paths_or_file_objects(name, tmp_path):
    data = NOT_AUDIO_INPUTS[name]
    path = tmp_path / "upload.wav"  # the extension a client claims
    path.write_bytes(data)
    messages = []
    for given in (data, path, open(path, "rb")):  # noqa: SIM115 - an open file is one of the inputs
        with pytest.raises(AudioDecodeError) as e:
            decode_audio(given)
        messages.append(str(e.value))
    with pytest.raises(AudioDecodeError, match=NOT_AUDIO):
        check_audio(path)
    assert all(NOT_AUDIO in m for m in messages), messages
    assert declared_seconds(data) is None


def test_a_file_that_exists_and_one_that_does_not_read_alike(server):
    for kind in naming(EXISTING):
        answers = [
            httpx.post(f"{server}/v1/audio/transcriptions", files={"file": ("x.wav", naming(p)[kind])}, timeout=30)
            for p in (EXISTING, MISSING)
        ]
        assert [a.status_code for a in answers] == [400, 400], [a.text for a in answers]
        assert answers[0].json() == answers[1].json()
        assert NOT_AUDIO in answers[0].json()["error"]["message"]
        assert "/" not in answers[0].json()["error"]["message"].split(":")[0]  # no local path


def test_the_cli_refuses_a_playlist_in_one_line(tmp_path):
    path = tmp_path / "meeting.wav"
    path.write_bytes(naming(EXISTING)["ffconcat"])
    result = subprocess.run(
        [Path(sys.executable).with_name("asrflow"), "transcribe", path],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert NOT_AUDIO in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.check
@pytest.mark.parametrize(
    "format, wrong",
    [("wav", "mp3"), ("mp3", "wav"), ("flac", "ogg"), ("ogg", "flac"), ("webm", "m4a"), ("mp4", "webm")],
)
def test_each_audio_format_opens_under_a_wrong_extension(format, wrong, tmp_path):
    source = decode_audio(DATA / "dev000.wav")
    path = tmp_path / f"clip.{wrong}"
    path.write_bytes(encode_audio(source, format))
    assert abs(len(decode_audio(path)) - len(source)) < 0.2 * 16000
    check_audio(path)


def test_an_upload_under_the_wrong_extension_is_transcribed(server):
    answer = httpx.post(
        f"{server}/v1/audio/transcriptions", files={"file": ("jfk.mp3", SAMPLE.read_bytes())}, timeout=60
    )
    assert answer.status_code == 200 and "country" in answer.json()["text"]


@pytest.mark.check
@pytest.mark.parametrize(
    "rate, channels, match",
    [
        (1, 1, "sample rate of 1 Hz"),
        (0, 1, NOT_AUDIO),
        (900, 1, "sample rate"),
        (384000, 1, "re-encode it at 48 kHz or less"),  # decoding it would cost 24x 16 kHz's
        (16000, 12, "12 channels"),
    ],
)
def test_forged_sample_rates_and_channel_counts_are_refused_before_decoding(server, rate, channels, match):
    data = wav_header(rate, channels)
    assert (declared_seconds(data) or 0) < 1  # never admitted as hours of audio
    with pytest.raises(AudioDecodeError, match=match):
        decode_audio(data)
    answer = httpx.post(f"{server}/v1/audio/transcriptions", files={"file": ("x.wav", data)}, timeout=30)
    assert answer.status_code == 400 and match in answer.json()["error"]["message"]


@pytest.mark.check
def test_a_header_declaring_more_than_the_file_holds_is_admitted_for_what_it_holds():
    data = bytearray(wav_header(16000, 1, 16000))  # 1 s of samples
    data[40:44] = struct.pack("<I", 0x7FFFFFF0)  # a data chunk of 18 hours
    assert declared_seconds(bytes(data)) == pytest.approx(1.0)


def test_only_audio_py_opens_containers_for_reading():
    """Every path (library, CLI, batch, Spark, flavor, server, URL fetch) decodes through audio.open_container."""
    opening = [p.relative_to(REPO).as_posix() for p in (REPO / "src").rglob("*.py") if "av.open(" in p.read_text()]
    assert sorted(opening) == ["src/asrflow/audio.py", "src/asrflow/encoding.py"]
    assert 'mode="w"' in re.search(r"av\.open\((.*)\)", (REPO / "src/asrflow/encoding.py").read_text()).group(1)
    assert (REPO / "src/asrflow/audio.py").read_text().count("av.open(") == 1


def mutants(count: int, seed: int = 35):
    """Byte flips, truncations, spliced headers, huge and tiny headers, of half-second clips in every format.
    One in ten is of speech, which the model decodes (a quarter of a second each, a window's encoding); the rest
    are of silence, which the containers and codecs parse all the same and VAD then finds no speech in."""
    rng = random.Random(seed)
    speech = decode_audio(DATA / "dev000.wav")[: 16000 // 2]
    formats = ("wav", "mp3", "flac", "ogg", "webm", "mp4")
    spoken = [encode_audio(speech, f) for f in formats]
    silent = [encode_audio(np.zeros_like(speech), f) for f in formats]
    for i in range(count):
        seeds = spoken if rng.random() < 0.1 else silent
        data = bytearray(rng.choice(seeds))
        kind = i % 5
        if kind == 0:
            for _ in range(rng.randint(1, 40)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1:
            data = data[: rng.randrange(1, len(data))]
        elif kind == 2:
            other = rng.choice(seeds)
            cut = rng.randrange(1, 200)
            data = bytearray(other[:cut]) + data[cut:]
        elif kind == 3:
            at = rng.randrange(0, min(64, len(data) - 4))
            data[at : at + 4] = struct.pack("<I", rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(2**32)]))
        else:
            data = data[: rng.randrange(0, 64)] + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 2000)))
        yield bytes(data)


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def test_five_hundred_mutated_uploads_get_no_5xx_no_hang_and_memory_returns(server):
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=60) as http:  # a hang fails the request at 60 s
        http.post(f"{server}/v1/audio/transcriptions", files={"file": ("jfk.flac", SAMPLE.read_bytes())})
        baseline = rss_mb()
        for i, data in enumerate(mutants(500)):
            # VAD and one temperature: the decoding of the mutants is under test, not Whisper's fallback on noise
            status = http.post(
                f"{server}/v1/audio/transcriptions",
                files={"file": (f"m{i}.wav", data)},
                data={"chunking_strategy": "auto", "temperature": "1"},
            ).status_code
            statuses[status] = statuses.get(status, 0) + 1
        good = http.post(f"{server}/v1/audio/transcriptions", files={"file": ("jfk.flac", SAMPLE.read_bytes())})
    assert not [s for s in statuses if s >= 500], statuses
    assert set(statuses) <= {200, 400, 413} and statuses.get(400, 0) > 100, statuses
    assert good.status_code == 200 and "country" in good.json()["text"]
    assert rss_mb() < baseline + 150, (baseline, rss_mb())


def get_models(url: str, **headers) -> httpx.Response:
    return httpx.get(f"{url}/v1/models", headers=headers, timeout=30)


@pytest.mark.check
def test_a_dns_rebinding_page_gets_no_answer(server):
    """A page at http://evil.example:PORT whose name now resolves to 127.0.0.1: to the browser its requests are
    same-origin, so only the Host tells them apart."""
    port = server.rsplit(":", 1)[1]
    page = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    assert get_models(server, **page).status_code == 421
    answer = httpx.post(
        f"{server}/v1/audio/transcriptions", headers=page, files={"file": ("jfk.flac", SAMPLE.read_bytes())}
    )
    assert answer.status_code == 421 and "--allowed-host" in answer.json()["error"]["message"]
    assert get_models(server, Host="evil.example").status_code == 421


@pytest.mark.check
def test_a_foreign_origin_is_refused_and_the_page_own_origin_is_not(server):
    port = server.rsplit(":", 1)[1]
    foreign = httpx.post(
        f"{server}/v1/audio/transcriptions",
        headers={"Origin": "http://evil.example"},
        files={"file": ("jfk.flac", SAMPLE.read_bytes())},
    )
    assert foreign.status_code == 403 and "--cors-origin" in foreign.json()["error"]["message"]
    assert get_models(server, Origin="null").status_code == 403
    assert get_models(server, Origin=f"http://127.0.0.1:{port}").status_code == 200  # the page's own
    assert get_models(server, Host=f"localhost:{port}", Origin=f"http://localhost:{port}").status_code == 200
    assert get_models(server).status_code == 200  # clients that are not browsers send no Origin


@pytest.mark.check
def test_a_foreign_page_cannot_open_a_realtime_session(server):
    import websockets.sync.client

    ws_url = server.replace("http", "ws") + "/v1/realtime?intent=transcription"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        websockets.sync.client.connect(ws_url, origin="http://evil.example", open_timeout=10)
    assert refused.value.response.status_code == 403
    with websockets.sync.client.connect(ws_url, open_timeout=10) as ws:
        assert '"session.created"' in ws.recv(timeout=10)


@pytest.mark.check
def test_allowed_hosts_and_cors_origins_are_answered(ct2_transcriber):
    with serve_in_process(
        ct2_transcriber, allowed_hosts=("asr.example",), cors_origins=("https://app.example",)
    ) as url:
        assert get_models(url, Host="asr.example").status_code == 200
        assert get_models(url, Host="other.example").status_code == 421
        allowed = get_models(url, Origin="https://app.example")
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
        preflight = httpx.options(
            f"{url}/v1/audio/transcriptions",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert get_models(url, Origin="https://evil.example").status_code == 403


def longest_turn(url: str) -> float:
    """At least the longest turn the model thread has taken: the smallest bucket of /metrics' histogram that
    holds them all (its largest, 10 s, when one took longer: a bound a clip's wait must still keep)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    total = re.search(r"^asrflow_model_turn_seconds_count (\S+)$", text, re.MULTILINE).group(1)
    buckets = re.findall(r'^asrflow_model_turn_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.MULTILINE)
    return min(10.0, min(float(le) for le, count in buckets if float(count) == float(total)))


def gauge(url: str, name: str) -> float:
    """One unlabelled series of /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))


def admitted_audio(url: str) -> float:
    """The seconds of audio admitted and not yet answered (withdrawn when a client leaves)."""
    return gauge(url, "asrflow_admitted_audio_seconds")


def turns(url: str) -> float:
    """How many turns (a window's work each) the model thread has taken."""
    return gauge(url, "asrflow_model_turn_seconds_count")


def settled_turns(url: str) -> float:
    """The turn count once the model thread is idle (it stops moving)."""
    last = turns(url)
    while True:
        time.sleep(1.5)
        if (now := turns(url)) == last:
            return now
        last = now


def spooled_files() -> int:
    """Files this process holds open that are deleted temporary files: uploads spooled to disk."""
    links = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            links.append(os.readlink(fd))
    return sum(1 for link in links if re.fullmatch(r".*/#\d+ \(deleted\)", link))


def test_a_departed_or_timed_out_request_stops_at_its_next_window(ct2_transcriber):
    """... and its upload, spooled to disk, leaves the disk: the file is closed when the request is over."""
    from test_server import long_speech

    minutes = long_speech(10, "flac")  # a minute of the model's work or more
    with serve_in_process(ct2_transcriber, timeout_s=3) as url:
        answer = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("long.flac", minutes)}, timeout=60)
        assert answer.status_code == 504
        at_timeout = turns(url)
        assert settled_turns(url) - at_timeout <= 2  # the turn under way when the timeout struck, and at most one more
    with serve_in_process(ct2_transcriber) as url:
        before, spooled = turns(url), spooled_files()
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("long.flac", minutes)}, timeout=4)
        at_departure = turns(url)
        settled = settled_turns(url)
        # the ten minutes are 20 windows: the file was not done when its client left, and its work stopped then
        assert settled - at_departure <= 2 and at_departure - before < 20, (before, at_departure, settled)
        assert spooled_files() == spooled
        metrics = httpx.get(f"{url}/metrics").text
        assert re.search(r"^asrflow_audio_seconds_total 0\.0$", metrics, re.MULTILINE)  # none of it was transcribed


def test_a_registered_model_cannot_point_the_server_at_other_files(tmp_path):
    """What an MLmodel says (model_files, a reference-only model's name) must not make a server load a directory
    of its machine or, unless allowed, a hub model."""
    import yaml

    from asrflow.errors import ModelNotFoundError
    from asrflow.flavor import save_model, transcriber_from_model_dir

    save_model(tmp_path / "m", "bundled:tiny.en", reference_only=True)
    mlmodel = tmp_path / "m" / "MLmodel"
    conf = yaml.safe_load(mlmodel.read_text())
    for model_files, model, allowed, match in [
        ("../../../etc", None, ("bundled",), "outside its own directory"),
        (None, str(tmp_path), ("bundled",), "local model"),
        (None, "openai/whisper-tiny", ("bundled",), "--allow-hub"),
    ]:
        conf["flavors"]["asrflow"].update(model_files=model_files, model=model or conf["flavors"]["asrflow"]["model"])
        mlmodel.write_text(yaml.safe_dump(conf))
        with pytest.raises(ModelNotFoundError, match=match):
            transcriber_from_model_dir(tmp_path / "m", "models:/x/1", references=allowed)


def test_the_duration_limit_holds_for_each_channel_of_a_split_file(ct2_transcriber, tmp_path):
    from test_diarize import stereo_call

    from asrflow.errors import AudioTooLongError

    call = stereo_call(tmp_path / "call.wav")
    with pytest.raises(AudioTooLongError):
        ct2_transcriber.transcribe(call, channels="split", max_seconds=2.0)
    assert ct2_transcriber.transcribe(call, channels="split", max_seconds=600).segments


@pytest.mark.alone  # its idle latency and its latency beside the long requests are measured at different times
def test_a_short_clip_beside_diarized_multilingual_and_30_temperature_requests_waits_little(ct2_transcriber):
    """No request holds the model past one turn's work, and the scheduler serves the request that has had the
    least of the model first: a 6 s clip's latency stays within 3x its idle latency beside long requests of every
    kind (diarization and multilingual detection advance one window or region a turn), plus at most the longest
    turn, which it may arrive during (a multilingual batch of 8 regions of base: 5-10 s on a 2-core CPU without
    VNNI, where float32 decodes)."""
    import asyncio

    from test_server import long_speech

    clip = (DATA / "dev004.wav").read_bytes()
    minutes = long_speech(10)  # Ogg Opus, as measured: its bound held on it, and failed once on FLAC
    with serve_in_process(ct2_transcriber) as url:

        def latency() -> float:
            started = time.perf_counter()
            answer = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("clip.wav", clip)}, timeout=120)
            assert answer.status_code == 200 and "revenue" in answer.json()["text"]
            return time.perf_counter() - started

        with pytest.raises(httpx.ReadTimeout):  # loads base, then leaves
            httpx.post(
                f"{url}/v1/audio/transcriptions",
                files={"file": ("clip.wav", clip)},
                data={"model": "bundled:base"},
                timeout=httpx.Timeout(60, read=0.1),
            )
        deadline = time.monotonic() + 120
        while not any(m["id"] == "bundled:base" and m.get("loaded") for m in get_models(url).json()["data"]):
            assert time.monotonic() < deadline, "bundled:base did not load"
            time.sleep(0.5)
        idle = sorted(latency() for _ in range(3))[1]
        hot = httpx.post(
            f"{url}/invocations",
            json={"inputs": [base64.b64encode(clip).decode()], "params": {"temperature": ",".join(["0.5"] * 30)}},
        )
        assert hot.status_code == 400 and "at most 6" in hot.json()["message"]

        async def beside_long_requests() -> float:  # under way while the clip is measured, then left (cancelled)
            async with httpx.AsyncClient(timeout=120) as http:
                long = [
                    asyncio.ensure_future(
                        http.post(f"{url}/v1/audio/transcriptions", files={"file": ("long.ogg", minutes)}, data=data)
                    )
                    for data in (
                        {"response_format": "diarized_json"},
                        {"multilingual": "true", "model": "bundled:base"},
                    )
                ]
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and turns(url) < 5:  # both long requests under way
                    await asyncio.sleep(0.2)
                await asyncio.sleep(3)
                busy = sorted(latency() for _ in range(3))[1]
                longest = longest_turn(url)
                assert not any(request.done() for request in long), "a long request was over before the clip"
                for request in long:
                    request.cancel()
                return busy, longest

        busy, longest = asyncio.run(beside_long_requests())
        # the long requests' clients are gone: their work is withdrawn, and nothing of it loads the tests after this
        deadline = time.monotonic() + 30
        while admitted_audio(url) > 0:
            assert time.monotonic() < deadline, "a departed client's long request still held audio after 30 s"
            time.sleep(0.5)
        settled_turns(url)
    print(f"clip: {idle:.2f} s idle, {busy:.2f} s beside long requests; longest turn at most {longest:g} s")
    assert busy < 3 * idle + longest, (busy, idle, longest)


def test_eight_channels_split_are_decoded_one_by_one_without_crashing(server, tmp_path):
    """PyAV's planar frames of 8 or more channels report a plane too many: reading one crashed the server."""
    import wave

    samples = decode_audio(SAMPLE)[: 16000 * 3]
    path = tmp_path / "eight.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(8), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.stack([samples] * 8, 1) * 32767).astype("<i2").tobytes())
    answer = httpx.post(
        f"{server}/v1/audio/transcriptions",
        files={"file": ("eight.wav", path.read_bytes())},
        data={"channels": "split", "response_format": "verbose_json"},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert {s["speaker"] for s in answer.json()["segments"]} <= {f"channel {k}" for k in range(1, 9)}


def test_a_batch_larger_than_a_turn_is_refused(server):
    answer = httpx.post(
        f"{server}/invocations",
        json={
            "inputs": [base64.b64encode(SAMPLE.read_bytes()).decode()],
            "params": {"batch_size": 64, "vad_filter": True},
        },
        timeout=60,
    )
    assert answer.status_code == 400 and "batch_size takes at most 8" in answer.json()["message"]
    assert httpx.get(f"{server}/metrics").text.count("asrflow_admitted_audio_seconds 0.0") == 1  # released


def test_windows_that_yield_no_segment_are_still_a_step_each(ct2_transcriber):
    """Noise that Whisper skips as silence yields no segment, and faster-whisper's loop goes straight on: under a
    Stepper (a server's turns) each window's encoding ends a step, so one turn is one window, not the block."""
    from asrflow.steps import END, Stepper

    noise = (np.random.RandomState(35).randn(16000 * 120) * 0.3).astype(np.float32)  # 2 minutes: 4 windows or more
    stepper = Stepper(ct2_transcriber.stream(noise, temperature=0.0, beam_size=1).segments)  # steps, not search
    results = []
    while (result := stepper.step()) is not END:
        results.append(result)
    ends = [r.end for r in results if r is not None]
    assert len(results) >= 4 and (not ends or max(ends) >= 90), results  # a step per window at least
    closed = Stepper(ct2_transcriber.stream(noise, temperature=0.0, beam_size=1).segments)
    closed.step()
    closed.close()
    closed.thread.join(30)
    assert not closed.thread.is_alive()  # a withdrawn job's generator unwinds


def test_each_fallback_decoding_is_a_step_of_its_own(ct2_transcriber):
    """A window whose every decoding fails the compression test (a prompt that makes Whisper repeat itself does so
    for real) is decoded once per temperature: each decoding is a step, so a turn is at most one decoding."""
    from asrflow.steps import END, Stepper

    options = {"temperature": "0,0.2,0.4", "compression_ratio_threshold": 0.01}  # every decoding falls back
    stepper = Stepper(ct2_transcriber.stream(SAMPLE, **options).segments)
    results = []
    while (result := stepper.step()) is not END:
        results.append(result)
    assert results.count(None) >= 3, results  # the window's encoding, then a step per temperature


@pytest.mark.check
def test_waiting_for_decoded_audio_ends_a_step_and_holds_no_turn():
    """A file slow to decode (hours of silence, a high sample rate) must not hold the model while its decoder works:
    under a Stepper, waiting for the decoder ends the step, and the job is not runnable until audio is ready."""
    from asrflow import steps

    def slow_decoder():
        for i in range(3):
            time.sleep(0.5)
            yield i

    def job():  # as a server's job: the decoder is wrapped inside the Stepper's thread
        yield from steps.ahead(slow_decoder())

    stepper = steps.Stepper(job())
    started, taken, ticks = time.monotonic(), [], 0
    while (result := stepper.step()) is not steps.END:
        if result is None:
            ticks += 1
            assert time.monotonic() - started < 0.3 or taken  # the step ended at once: nothing held
            while not stepper.runnable():
                time.sleep(0.01)
        else:
            taken.append(result)
    assert taken == [0, 1, 2] and ticks >= 3
    assert list(steps.ahead(iter([1, 2]))) == [1, 2]  # outside a Stepper: the iterator itself


def test_a_request_that_is_not_audio_reserves_nothing(server):
    """Inputs that are not audio are refused before admission: 64 of them are a 400, not a 503 for everyone."""
    answer = httpx.post(f"{server}/invocations", json={"inputs": [1] * 64}, timeout=30)
    assert answer.status_code == 400 and "base64-encoded audio" in answer.json()["message"]


@pytest.mark.check
@pytest.mark.parametrize(
    "path, body",
    [
        ("/render/srt", "[" * 100_000 + "]" * 100_000),
        ("/invocations", '{"inputs":' + "[" * 100_000 + "]" * 100_000 + "}"),
        ("/render/srt", '{"text": "x", "segments": [{"start": 0, "end": Infinity, "text": "x"}]}'),
        ("/render/vtt", '{"text": "x", "segments": [{"start": 1e308, "end": 1e308, "text": "x"}]}'),
        ("/render/tsv", '{"text": "x", "segments": [{"start": 0, "end": NaN, "text": "x"}]}'),
        ("/render/txt", '{"text": 5, "segments": [{"start": 0, "end": 1, "text": 5}]}'),
        ("/render/srt", '{"text": "x", "segments": [{"start": 0, "end": 1, "text": "x", "words": [{"word": 1}]}]}'),
    ],
)
def test_json_nested_too_deep_or_with_impossible_values_is_a_400(server, path, body):
    answer = httpx.post(f"{server}{path}", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 400, answer.text[:300]


@pytest.mark.check
def test_a_host_with_credentials_or_two_origins_is_refused(server):
    port = server.rsplit(":", 1)[1]
    assert get_models(server, Host=f"evil.example@localhost:{port}").status_code == 421
    two = httpx.get(
        f"{server}/v1/models", headers=[("Origin", "http://evil.example"), ("Origin", f"http://127.0.0.1:{port}")]
    )
    assert two.status_code == 403


def test_known_speaker_clips_are_decoded_after_the_upload_is_admitted(server):
    """Reference clips are decoded in a worker thread once the upload has passed admission, never on the event loop
    ahead of it: a request whose file is not audio is refused before its references cost anything."""
    reference = "data:audio/wav;base64," + base64.b64encode(b"not a clip at all").decode()
    answer = httpx.post(
        f"{server}/v1/audio/transcriptions",
        files={"file": ("x.wav", b"not audio either" * 100)},
        data={
            "response_format": "diarized_json",
            "known_speaker_names[]": "ann",
            "known_speaker_references[]": reference,
        },
        timeout=30,
    )
    message = answer.json()["error"]["message"]
    assert answer.status_code == 400 and NOT_AUDIO in message and "known speaker" not in message, message


@pytest.mark.parametrize("fault", [RuntimeError, __import__("asrflow").AsrflowError])
def test_a_fault_of_the_server_is_a_500_that_tells_no_internals(ct2_transcriber, fault):
    """A failure that is not the client's doing (here the model breaks mid-request) is a 500 in each protocol's
    format, its details in the log only; never a 400 that would tell the client to change its request."""
    from fastapi.testclient import TestClient

    from asrflow import Transcriber
    from asrflow.server import ServerConfig, create_app

    class Broken(Transcriber):
        def stream(self, *args, **kwargs):
            raise fault("/srv/models/secret.bin: the model's memory is corrupt")

    broken = Broken(ct2_transcriber.backend, ct2_transcriber.source, ct2_transcriber.options)
    clip = (DATA / "dev000.wav").read_bytes()
    with TestClient(create_app(ServerConfig(), transcriber=broken), base_url="http://localhost") as client:
        openai = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", clip)})
        mlflow = client.post("/invocations", json={"inputs": [base64.b64encode(clip).decode()]})
        assert client.get("/health").status_code == 200  # and it serves on
    assert openai.status_code == 500 and openai.json()["error"]["type"] == "server_error", openai.text
    assert mlflow.status_code == 500 and mlflow.json()["error_code"] == "INTERNAL_ERROR", mlflow.text
    assert "secret" not in openai.text + mlflow.text


def test_a_malformed_form_a_client_gone_mid_upload_and_a_fault_mid_stream_are_answered_in_openais_shape(
    ct2_transcriber, caplog
):
    """Starlette's own 400 for a malformed form comes in OpenAI's error shape; a client that leaves halfway
    through its upload is a 499, logged as nothing; a client's fault raised mid-stream keeps its message in the
    stream's error event."""
    import socket

    from fastapi.testclient import TestClient

    from asrflow import AudioDecodeError, Transcriber
    from asrflow.server import ServerConfig, create_app

    with TestClient(create_app(ServerConfig(), transcriber=ct2_transcriber), base_url="http://localhost") as client:
        answer = client.post(
            "/v1/audio/transcriptions", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"}
        )
    assert answer.status_code == 400 and "multipart/form-data" in answer.json()["error"]["message"], answer.text

    with serve_in_process(ct2_transcriber) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n".encode()
                + b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
                + bytes(20_000)
            )
            time.sleep(0.5)
        time.sleep(1)
        metrics = httpx.get(f"{url}/metrics").text
    assert 'status="499"' in metrics and 'status="500"' not in metrics, metrics
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]

    class Corrupt(Transcriber):
        def stream(self, *args, **kwargs):
            raise AudioDecodeError("the audio stops in the middle of a frame: send the whole file.")

    corrupt = Corrupt(ct2_transcriber.backend, ct2_transcriber.source, ct2_transcriber.options)
    with TestClient(create_app(ServerConfig(), transcriber=corrupt), base_url="http://localhost") as client:
        streamed = client.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", (DATA / "dev000.wav").read_bytes())},
            data={"stream": "true"},
        )
    assert "send the whole file" in streamed.text and '"type": "error"' in streamed.text, streamed.text
