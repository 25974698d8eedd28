"""`make bench`: what diarization costs and how right it is, on the generated conversations (tests/data).

For each conversation: real-time factor of asrflow's default transcription with word timestamps (what diarize
decodes) and with diarize=True, the speaker count found, and the DER against its RTTM (pyannote.metrics,
0.25 s collar). Best of BENCH_ROUNDS rounds (default 3). Writes bench/results/speakers.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def best(transcribe, samples) -> tuple[float, object]:
    walls, result = [], None
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        result = transcribe(samples)
        walls.append(time.perf_counter() - t0)
    return min(walls), result


def main() -> None:
    import warnings

    warnings.simplefilter("ignore")
    from asrflow import load_transcriber
    from asrflow.audio import SAMPLE_RATE, decode_audio
    from asrflow.metrics import diarization_error_rate, read_rttm

    transcriber = load_transcriber("bundled:tiny.en")
    rows = []
    for n in (2, 3):
        samples = decode_audio(DATA / f"conversation-{n}.ogg")
        reference = read_rttm((DATA / f"conversation-{n}.rttm").read_text())
        seconds = len(samples) / SAMPLE_RATE
        transcriber.transcribe(samples[: 5 * SAMPLE_RATE], diarize=True)  # warm-up: the encoder loads once
        plain, _ = best(lambda s: transcriber.transcribe(s, word_timestamps=True), samples)
        diarized, result = best(lambda s: transcriber.transcribe(s, diarize=True), samples)
        rows.append(
            {
                "audio": f"conversation-{n}.ogg",
                "seconds": round(seconds, 1),
                "speakers": n,
                "found": len({s.speaker for s in result.segments}),
                "rtfx": round(seconds / plain, 2),
                "rtfx_diarized": round(seconds / diarized, 2),
                "cost": round(diarized / plain, 2),
                "der": round(diarization_error_rate(reference, result.segments), 4),
            }
        )
    print(
        f"bench/speakers.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, bundled:tiny.en, best of {ROUNDS}; "
        "speaker count estimated"
    )
    print(
        f"{'audio':>20} {'seconds':>8} {'speakers':>9} {'found':>6} {'RTFx':>7} {'RTFx diarized':>14} {'time x':>7} {'DER':>7}"
    )
    for r in rows:
        print(
            f"{r['audio']:>20} {r['seconds']:>8} {r['speakers']:>9} {r['found']:>6} {r['rtfx']:>7} {r['rtfx_diarized']:>14}"
            f" {r['cost']:>6}x {r['der']:>7.4f}"
        )
    (ROOT / "bench" / "results" / "speakers.json").write_text(
        json.dumps({"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2) + "\n"
    )
    print("written to bench/results/speakers.json", file=sys.stderr)


if __name__ == "__main__":
    main()
