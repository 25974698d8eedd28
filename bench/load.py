"""Bounded load test of `asrflow serve` on loopback: 8 clients x 25 requests of real audio, then it stops.

Prints errors, p50/p95 latency and throughput, and the ratio to offline batched throughput on the same files.
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
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("BENCH_CORPUS", ROOT.parent / "shared" / "data" / "dev"))
if not (CORPUS / "manifest.jsonl").is_file():
    CORPUS = ROOT / "tests" / "data"
CLIENTS, REQUESTS, BATCH = 8, 25, 8


def files():
    rows = [json.loads(line) for line in (CORPUS / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [(r["audio"], (CORPUS / r["audio"]).read_bytes()) for r in rows]


def offline_throughput(items) -> float:
    """Audio seconds per wall second when the same files are transcribed in batches of BATCH, in process."""
    from asrflow import decode_audio, load_transcriber

    transcriber = load_transcriber("bundled:tiny.en")
    audio = [decode_audio(data) for _, data in items]
    transcriber.transcribe_batch(audio[:BATCH])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(audio), BATCH):
        transcriber.transcribe_batch(audio[i : i + BATCH])
    return sum(len(a) for a in audio) / 16000 / (time.perf_counter() - started)


async def client(http, url, items, offset, latencies, errors, seconds):
    for i in range(REQUESTS):
        name, data = items[(offset + i) % len(items)]
        started = time.perf_counter()
        try:
            response = await http.post(f"{url}/v1/audio/transcriptions", files={"file": (name, data)}, data={"response_format": "verbose_json"})
            response.raise_for_status()
            seconds.append(response.json()["duration"])
        except httpx.HTTPError as e:
            errors.append(repr(e))
            continue
        latencies.append(time.perf_counter() - started)


async def load(url, items):
    latencies, errors, seconds = [], [], []
    async with httpx.AsyncClient(timeout=300) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http, url, items, c * 3, latencies, errors, seconds) for c in range(CLIENTS)))
        wall = time.perf_counter() - started
    return latencies, errors, sum(seconds) / wall, wall


def main():
    items = files()
    offline = offline_throughput(items)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([Path(sys.executable).with_name("asrflow"), "serve", "bundled:tiny.en", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        latencies, errors, throughput, wall = asyncio.run(load(url, items))
    finally:
        server.terminate()
        server.wait(timeout=30)
    quantiles = statistics.quantiles(latencies, n=20)
    result = {
        "clients": CLIENTS, "requests": CLIENTS * REQUESTS, "errors": len(errors), "wall_s": round(wall, 1),
        "latency_p50_s": round(statistics.median(latencies), 3), "latency_p95_s": round(quantiles[18], 3),
        "throughput_audio_s_per_s": round(throughput, 2), "offline_batched_audio_s_per_s": round(offline, 2),
        "ratio_to_offline": round(throughput / offline, 2),
    }
    for key, value in result.items():
        print(f"{key:32} {value}")
    (ROOT / "bench" / "results" / "load.json").write_text(json.dumps(result, indent=2) + "\n")
    if errors:
        print("first error:", errors[0])


if __name__ == "__main__":
    main()
