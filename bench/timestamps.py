"""`make bench`: how far segment bounds are from the speech, on the bench's long audio (bench/run.py).

Each sentence's sound starts and stops at known times (its clip's samples over 2% of its peak); a system's bound
error is the distance from there to the start of the sentence's first segment and the end of its last (segments
whose middle falls in the sentence, give or take 0.3 s; a sentence with none, inside a longer segment or dropped,
is counted apart). For asrflow's fast path (VAD regions in batches, bounds
moved to the pauses next to them), the same with word timestamps, asrflow's sequential decoder (the CLI's default,
no VAD), and faster-whisper's sequential decoder and batched pipeline with their segment timestamps (the pipeline
with timestamps on: without, a segment is a whole region). Writes bench/results/timestamps.json.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stamp
from run import BATCH, BEAM, corpus, long_audio


def errors(segments, sentences) -> tuple[np.ndarray, int]:
    """The bound errors of the sentences that have a segment, and how many have none."""
    found, missing = [], 0
    for start, end in sentences:
        mine = [s for s in segments if start - 0.3 <= (s.start + s.end) / 2 <= end + 0.3]
        found += [abs(mine[0].start - start), abs(mine[-1].end - end)] if mine else []
        missing += not mine
    return np.array(found), missing


def systems():
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from asrflow import load_transcriber
    from asrflow.backends.workers import cores
    from asrflow.models import resolve_model

    ours = load_transcriber("bundled:tiny.en")
    fw = WhisperModel(resolve_model("bundled:tiny.en").location, device="cpu", compute_type="int8", cpu_threads=cores())
    batched = BatchedInferencePipeline(fw)
    fast = {"language": "en", "beam_size": BEAM, "vad_filter": True, "batch_size": BATCH}
    return {
        "asrflow-fast-path": lambda a: ours.transcribe(a, **fast).segments,
        "asrflow-fast-words": lambda a: ours.transcribe(a, **fast, word_timestamps=True).segments,
        "asrflow-sequential": lambda a: ours.transcribe(a, language="en", beam_size=BEAM).segments,
        "fw-sequential": lambda a: list(fw.transcribe(a, language="en", beam_size=BEAM)[0]),
        "fw-batched": lambda a: list(
            batched.transcribe(a, language="en", beam_size=BEAM, batch_size=BATCH, without_timestamps=False)[0]
        ),
    }


def main() -> None:
    warnings.simplefilter("ignore")
    sentences = []
    audio, _ = long_audio(corpus(), sentences)
    print(
        f"segment bounds against the speech, long audio ({len(audio) / 16000:.1f} s, {len(sentences)} sentences; seconds)"
    )
    print(f"{'system':>20} {'mean':>6} {'median':>7} {'p90':>6} {'> 0.5 s':>8} {'no segment':>11}")
    results = {}
    for name, transcribe in systems().items():
        e, missing = errors(transcribe(audio), sentences)
        results[name] = {
            "sentences_without_segment": missing,
            "mean": round(float(e.mean()), 3),
            "median": round(float(np.median(e)), 3),
            "p90": round(float(np.percentile(e, 90)), 3),
            "over_half_second": round(float(np.mean(e > 0.5)), 3),
        }
        r = results[name]
        print(
            f"{name:>20} {r['mean']:>6.3f} {r['median']:>7.3f} {r['p90']:>6.3f} {r['over_half_second']:>8.0%} {missing:>11}",
            flush=True,
        )
    stamp.write("timestamps", {"results": results})


if __name__ == "__main__":
    main()
