"""Load tests of `asrflow serve` (bundled tiny.en) on loopback, each against its peer measured in the same run.

- throughput: 8 clients sending the dev clips, against the same clips transcribed offline in process, one
  after another (what `asrflow batch` does);
- fairness: p95 latency of 8 clients sending 5 s clips while one client transcribes a 30-minute file, against
  their p95 on an idle server;
- flood: 64 clients sending max-size (25 MB) Opus uploads of long audio for 60 s: every status, requests left
  without an answer, /health answered throughout, the server's peak RSS;
- hostile (docs/security.md): the short clips' p95 beside a diarized and a multilingual 10-minute request (and
  30 temperatures, refused), against idle; the model's turns after a 10-minute request's client leaves; 64
  clients sending forged headers and playlists for 20 s.

Run: `python bench/load.py` (or `make bench`); writes bench/results/load.json and prints the table.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import stamp

from asrflow import decode_audio, load_transcriber
from asrflow.encoding import encode_audio

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("BENCH_CORPUS", ROOT.parent / "shared" / "data" / "dev"))
if not (CORPUS / "manifest.jsonl").is_file():
    CORPUS = ROOT / "tests" / "data"
SR = 16000


def clips() -> list[tuple[str, bytes]]:
    rows = [json.loads(line) for line in (CORPUS / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [(r["audio"], (CORPUS / r["audio"]).read_bytes()) for r in rows]


def speech(seconds: float, every: float | None = None) -> np.ndarray:
    """The dev clips back to back (or one every `every` seconds over faint noise), `seconds` long."""
    audio = [decode_audio(data) for _, data in clips()]
    if every:
        audio = [np.pad(a[: int(every * SR)], (0, max(0, int(every * SR) - len(a)))) for a in audio]
    out = np.concatenate(audio * int(seconds / (sum(map(len, audio)) / SR) + 1))[: int(seconds * SR)]
    return out + (np.random.RandomState(0).randn(len(out)) * 0.003).astype(np.float32)


class Server:
    def __init__(self, *args: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{s.getsockname()[1]}"
        command = [
            Path(sys.executable).with_name("asrflow"),
            "serve",
            "bundled:tiny.en",
            "--port",
            self.url.rsplit(":", 1)[1],
            *args,
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(240):
            try:
                if httpx.get(f"{self.url}/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the server did not get ready")

    def peak_rss_mb(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) // 1024

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


async def post(http, url, name, data, fields=None):
    started = time.perf_counter()
    response = await http.post(f"{url}/v1/audio/transcriptions", files={"file": (name, data)}, data=fields or {})
    return response, time.perf_counter() - started


async def throughput(url, items, clients=8, rounds=3) -> tuple[float, int]:
    seconds, errors = [], 0

    async def client(http, offset):
        nonlocal errors
        for i in range(rounds * len(items) // clients):
            response, _ = await post(http, url, *items[(offset + i) % len(items)], {"response_format": "verbose_json"})
            if response.status_code == 200:
                seconds.append(response.json()["duration"])
            else:
                errors += 1

    async with httpx.AsyncClient(timeout=600) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http, c * 3) for c in range(clients)))
    return sum(seconds) / (time.perf_counter() - started), errors


def offline(items) -> float:
    transcriber = load_transcriber("bundled:tiny.en")
    audio = [decode_audio(data) for _, data in items]
    transcriber.transcribe(audio[0])  # warm-up
    started = time.perf_counter()
    for a in audio:
        transcriber.transcribe(a)
    return sum(map(len, audio)) / SR / (time.perf_counter() - started)


async def short_latencies(url, clip: bytes, clients=8, requests=6) -> list[float]:
    latencies = []

    async def client(http):
        for _ in range(requests):
            response, seconds = await post(http, url, "clip.wav", clip)
            assert response.status_code == 200, response.text
            latencies.append(seconds)

    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return latencies


async def fairness(url, clip: bytes, long: bytes) -> tuple[float, float]:
    idle = await short_latencies(url, clip)
    async with httpx.AsyncClient(timeout=600) as http:
        busy = asyncio.ensure_future(post(http, url, "long.ogg", long))
        await asyncio.sleep(3)  # uploaded, decoded and being transcribed
        loaded = await short_latencies(url, clip)
        finished = busy.done()
        busy.cancel()  # the client goes away: the server withdraws the work
    assert not finished, "the long file finished before the short requests: make it longer"
    return p95(idle), p95(loaded)


async def flood(url, uploads: list[tuple[str, bytes]], clients=64, seconds=60.0) -> dict:
    statuses, unanswered, health = Counter(), [], []
    stop = time.monotonic() + seconds

    async def client(http, c):
        i = c
        while time.monotonic() < stop:
            try:
                response, _ = await post(http, url, *uploads[i % len(uploads)])
                statuses[response.status_code] += 1
            except httpx.HTTPError as e:
                unanswered.append(repr(e))
            i += 1

    async def probe(http):
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                ok = (await http.get(f"{url}/health", timeout=30)).status_code == 200
            except httpx.HTTPError:
                ok = False
            health.append((ok, time.perf_counter() - started))
            await asyncio.sleep(0.5)

    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=clients + 4)) as http:
        await asyncio.gather(probe(http), *(client(http, c) for c in range(clients)))
    return {
        "statuses": dict(sorted(statuses.items())),
        "unanswered": len(unanswered),
        "health_ok": f"{sum(ok for ok, _ in health)}/{len(health)}",
        "health_max_s": round(max(s for _, s in health), 2),
    }


def turns(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return float(
        next(line.split()[1] for line in text.splitlines() if line.startswith("asrflow_model_turn_seconds_count"))
    )


async def hostile(url, clip: bytes, long: bytes) -> dict:
    """What issue 35's attacks cost now: each figure against its peer in the same run."""
    forged = [
        (
            "x.wav",
            b"RIFF\x00\x10\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x02\x00\x00\x00"
            b"\x02\x00\x10\x00data\xf0\xff\xff\x7f" + bytes(4000),
        ),
        ("x.wav", b"ffconcat version 1.0\nfile 'README.md'\n"),
        ("x.m3u8", b"#EXTM3U\n#EXTINF:10,\nREADME.md\n#EXT-X-ENDLIST\n"),
    ]
    idle = await short_latencies(url, clip, clients=2, requests=6)
    async with httpx.AsyncClient(timeout=600) as http:
        hot = await http.post(
            f"{url}/v1/audio/transcriptions",
            files={"file": ("c.wav", clip)},
            data={"temperature": ",".join(["0.5"] * 30)},
        )
        long_ones = [
            asyncio.ensure_future(post(http, url, "long.ogg", long, fields))
            for fields in ({"response_format": "diarized_json"}, {"multilingual": "true", "model": "bundled:base"})
        ]
        await asyncio.sleep(20)  # base loaded, both under way
        loaded = await short_latencies(url, clip, clients=2, requests=6)
        for request in long_ones:
            request.cancel()  # their clients go away
    await asyncio.sleep(10)
    before = turns(url)
    async with httpx.AsyncClient(timeout=3) as http:
        try:
            await post(http, url, "long.ogg", long)
        except httpx.TimeoutException:
            pass
    left = turns(url)
    await asyncio.sleep(15)
    statuses = Counter()
    stop = time.monotonic() + 20

    async def client(http, c):
        while time.monotonic() < stop:
            response, _ = await post(http, url, *forged[c % len(forged)])
            statuses[response.status_code] += 1

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=68)) as http:
        await asyncio.gather(*(client(http, c) for c in range(64)))
    return {
        "thirty_temperatures_status": hot.status_code,
        "short_p95_idle_s": round(p95(idle), 3),
        "short_p95_beside_diarized_and_multilingual_s": round(p95(loaded), 3),
        "ratio": round(p95(loaded) / p95(idle), 2),
        "turns_before_leaving": int(left - before),
        "turns_after_leaving": int(turns(url) - left),
        "forged_statuses": dict(sorted(statuses.items())),
    }


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def opus_of_size(audio: np.ndarray, megabytes: float) -> bytes:
    return encode_audio(audio, bitrate=int(megabytes * 8e6 / (len(audio) / SR)))


def main():
    items = clips()
    result = {"offline_audio_s_per_s": round(offline(items), 2)}
    clip = encode_audio(speech(5.0), "wav")
    long = encode_audio(speech(30 * 60))
    hour, three_hours = opus_of_size(speech(3600, every=30), 24.5), opus_of_size(speech(3 * 3600, every=30), 24.5)
    server = Server()
    try:
        served, errors = asyncio.run(throughput(server.url, items))
        result |= {
            "served_audio_s_per_s": round(served, 2),
            "throughput_errors": errors,
            "ratio_to_offline": round(served / result["offline_audio_s_per_s"], 2),
        }
        idle, loaded = asyncio.run(fairness(server.url, clip, long))
        result |= {
            "short_p95_idle_s": round(idle, 3),
            "short_p95_beside_30min_s": round(loaded, 3),
            "fairness_ratio": round(loaded / idle, 2),
        }
    finally:
        server.stop()
    server = Server("--max-upload-mb", "25")
    try:
        uploads = [("hour.ogg", hour), ("three-hours.ogg", three_hours)]
        result["flood_upload_mb"] = [round(len(data) / 2**20, 1) for _, data in uploads]
        result |= {f"flood_{k}": v for k, v in asyncio.run(flood(server.url, uploads)).items()}
        result["flood_server_peak_rss_mb"] = server.peak_rss_mb()
    finally:
        server.stop()
    server = Server()
    try:
        result |= {
            f"hostile_{k}": v for k, v in asyncio.run(hostile(server.url, clip, encode_audio(speech(600)))).items()
        }
    finally:
        server.stop()
    print(f"# python bench/load.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs; bundled:tiny.en")
    for key, value in result.items():
        print(f"{key:32} {value}")
    stamp.write("load", result)


if __name__ == "__main__":
    main()
