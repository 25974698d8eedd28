"""`make bench` (memory part): peak memory and speed against the length of the audio, one process per run.

Files of 10 minutes, 1, 3 and 10 hours of speech (the dev corpus concatenated with 0.6 s gaps, repeated),
encoded as mp3 and flac into build/memory/ at bench time (never committed), each transcribed by:
  asrflow            `asrflow transcribe FILE` (its default path: decoded as it is transcribed, a block at a time)
  asrflow-in-memory  the same model and options on the whole decoded array (decode_audio, then the backend)
  fw-sequential      faster-whisper used directly: WhisperModel.transcribe(FILE), int8 (asrflow's CPU default)
All on the bundled tiny.en, beam 5, Whisper's sequential long-form decoding (each system's default). The peers hold the whole file, so they run up to
MEMORY_PEER_HOURS (1 h by default). Lengths: MEMORY_HOURS (comma-separated hours; default 0.1667,1,3,10);
formats MEMORY_FORMATS (mp3,flac), beyond the peers' lengths MEMORY_LONG_FORMATS (mp3,flac). Results go to
bench/results/MEMORY_RESULTS.json (memory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "build" / "memory"
HOURS = [float(h) for h in os.environ.get("MEMORY_HOURS", "0.1667,1,3,10").split(",")]
PEER_HOURS = float(os.environ.get("MEMORY_PEER_HOURS", "1"))
FORMATS = os.environ.get("MEMORY_FORMATS", "mp3,flac").split(",")
LONG_FORMATS = os.environ.get("MEMORY_LONG_FORMATS", "mp3,flac").split(",")  # beyond the peers' lengths
RESULTS = os.environ.get("MEMORY_RESULTS", "memory")  # bench/results/RESULTS.json

# Each run: a fresh Python process; prints {"wall_s", "peak_rss_mb", "words"} as its last line.
RUN = r"""
import json, resource, subprocess, sys, time
system, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if system == "asrflow":
    from pathlib import Path
    out = subprocess.run([str(Path(sys.executable).parent / "asrflow"), "transcribe", path, "-f", "txt", "-q"],
                         capture_output=True, text=True, check=True).stdout
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
else:
    from asrflow.models import resolve_model
    if system == "asrflow-in-memory":
        from asrflow import load_transcriber
        from asrflow.audio import decode_audio
        transcriber = load_transcriber("bundled:tiny.en")
        options = transcriber.resolve({})
        out = " ".join(s.text for s in transcriber.backend.stream(decode_audio(path), options))
    else:
        from faster_whisper import WhisperModel
        model = WhisperModel(resolve_model("bundled:tiny.en").location, device="cpu", compute_type="int8")
        segments, _ = model.transcribe(path, beam_size=5, language="en")
        out = " ".join(s.text for s in segments)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": peak // 1024, "words": len(out.split())}))
"""


def speech(hours: float):
    """Pieces of the dev corpus, concatenated with 0.6 s gaps and repeated, `hours` long."""
    from run import corpus

    clips = [samples for samples, _ in corpus()]
    gap = np.zeros(int(0.6 * 16000), np.float32)
    left = int(hours * 3600 * 16000)
    while left > 0:
        for clip in clips:
            for piece in (clip, gap):
                yield piece[:left]
                left -= len(piece)
                if left <= 0:
                    return


def audio_file(hours: float, format: str) -> Path:
    from asrflow.encoding import encode_audio

    path = OUT / f"speech-{hours:g}h.{format}"
    if not path.is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        encode_audio(speech(hours), format, bitrate=64000, file=str(partial))
        partial.rename(path)
    return path


def measure(system: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", RUN, system, str(path)], capture_output=True, text=True, check=False)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    rows = []
    print(
        f"bench/memory.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, bundled:tiny.en, beam 5, "
        f"sequential decoding; peers up to {PEER_HOURS:g} h; RTFx = audio seconds per wall second",
        flush=True,
    )
    head = (
        f"{'length':>8} {'format':>6} {'system':>18} {'peak MB':>8} {'RTFx':>7} {'words':>7}  {'RTFx / in-memory':>16}"
    )
    print(head, flush=True)
    for hours in HOURS:
        for format in FORMATS if hours <= PEER_HOURS else LONG_FORMATS:
            path = audio_file(hours, format)
            measured = {}
            for system in ("asrflow-in-memory", "asrflow", "fw-sequential"):
                if system != "asrflow" and hours > PEER_HOURS:
                    continue
                r = measured[system] = measure(system, path) | {"system": system, "hours": hours, "format": format}
                rows.append(r)
                if "error" in r:
                    print(f"{hours:>7g}h {format:>6} {system:>18} {r['error']}", flush=True)
                    continue
                r["rtfx"] = round(hours * 3600 / r["wall_s"], 1)
                base = measured.get("asrflow-in-memory", {}).get("rtfx")
                ratio = f"{r['rtfx'] / base:.2f}x" if system == "asrflow" and base else ""
                print(
                    f"{hours:>7g}h {format:>6} {system:>18} {r['peak_rss_mb']:>8} {r['rtfx']:>7} {r['words']:>7}  {ratio:>16}",
                    flush=True,
                )
                write(rows)
    first = next(r for r in rows if r["system"] == "asrflow" and "error" not in r)
    last = [r for r in rows if r["system"] == "asrflow" and "error" not in r][-1]
    print(
        f"\nasrflow peak RSS at {last['hours']:g} h / at {first['hours']:g} h: {last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x"
    )
    print(f"written to {write(rows).relative_to(ROOT)}")


def write(rows: list[dict]) -> Path:
    """After every run: a bench stopped half-way keeps what it measured."""
    import stamp

    return stamp.write(RESULTS, {"command": " ".join(sys.argv), "hours": HOURS, "rows": rows})


if __name__ == "__main__":
    main()
