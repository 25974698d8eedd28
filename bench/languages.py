"""`make bench`: a long file in five languages, asrflow's multilingual paths against faster-whisper's.

The audio is tests/data/mixed-languages.ogg (ten turns, en/de/fr/es/it, made by tools/make_mixed_languages.py)
played REPEAT times, 1 s apart; the reference is its turns' text. Every system runs bundled:base, beam 5, with
a language found per stretch of speech:
  asrflow-batched      multilingual=True, vad_filter=True, batch_size=8 (what the server and pyfunc run)
  asrflow-sequential   multilingual=True, batch_size=1
  asrflow-one-language the default: one language for the file, found on its first 30 s
  fw-batched           faster-whisper BatchedInferencePipeline(multilingual=True, batch_size=8), used directly
  fw-sequential        faster-whisper WhisperModel.transcribe(multilingual=True), used directly
WER after Whisper's basic normalizer (all languages); "lang ok": the share of segments whose language is that of
the turn they overlap most (faster-whisper's segments carry no language). Best of BENCH_ROUNDS rounds (default 2).
Writes bench/results/languages.json; third-party output goes to build/bench-languages.log.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import stamp

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
REPEAT = 2
BEAM, BATCH = 5, 8
LOG = ROOT / "build" / "bench-languages.log"


def mixed_audio():
    """The mixed file REPEAT times (1 s apart), its reference text and its turns in the long file's time."""
    from asrflow.audio import SAMPLE_RATE, decode_audio

    once = decode_audio(DATA / "mixed-languages.ogg")
    turns = [json.loads(line) for line in (DATA / "mixed-languages.jsonl").read_text().splitlines() if line.strip()]
    pause = np.zeros(SAMPLE_RATE, np.float32)
    step = (len(once) + len(pause)) / SAMPLE_RATE
    shifted = [t | {"start": t["start"] + k * step, "end": t["end"] + k * step} for k in range(REPEAT) for t in turns]
    return np.concatenate([once, pause] * REPEAT), " ".join(t["text"] for t in shifted), shifted


def systems() -> dict:
    """name -> transcribe(samples) -> list of (start, end, text, language or None)."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from asrflow import load_transcriber
    from asrflow.backends.workers import cores
    from asrflow.models import ctranslate2_dir, resolve_model

    ours = load_transcriber("bundled:base")
    model = WhisperModel(ctranslate2_dir(resolve_model("bundled:base")), compute_type="int8", cpu_threads=cores())
    batched = BatchedInferencePipeline(model)

    def asrflow(**options):
        return lambda s: [
            (g.start, g.end, g.text, g.language) for g in ours.transcribe(s, beam_size=BEAM, **options).segments
        ]

    def fw(run, **options):
        return lambda s: [
            (g.start, g.end, g.text, None) for g in run(s, beam_size=BEAM, multilingual=True, **options)[0]
        ]

    return {
        "asrflow-batched": asrflow(multilingual=True, vad_filter=True, batch_size=BATCH),
        "asrflow-sequential": asrflow(multilingual=True, batch_size=1),
        "asrflow-one-language": asrflow(vad_filter=True, batch_size=BATCH),
        "fw-batched": fw(batched.transcribe, batch_size=BATCH),
        "fw-sequential": fw(model.transcribe),
    }


def measure(progress) -> tuple[dict, float]:
    from asrflow.audio import SAMPLE_RATE
    from asrflow.metrics import language_hits, word_error_rate
    from asrflow.transcript import Segment

    audio, reference, turns = mixed_audio()
    seconds = len(audio) / SAMPLE_RATE
    results = {}
    for name, transcribe in systems().items():
        print(f"{name} ...", file=progress, flush=True)
        transcribe(audio[: 10 * SAMPLE_RATE])  # warm-up
        walls = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            segments = transcribe(audio)
            walls.append(time.perf_counter() - t0)
        text = " ".join(s[2].strip() for s in segments)
        hits, scored = language_hits(turns, [Segment(a, b, t, language=code) for a, b, t, code in segments])
        results[name] = {
            "rtfx": round(seconds / min(walls), 2),
            "wer": round(word_error_rate([reference], [text], "mixed"), 4),
            "language_ok": round(hits / scored, 3) if segments[0][3] and scored else None,
        }
    return results, seconds


def main() -> None:
    LOG.parent.mkdir(exist_ok=True)
    log = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    terminal, progress = os.dup(1), os.fdopen(os.dup(2), "w")
    os.dup2(log, 1)  # third-party warnings and prints: to the log
    os.dup2(log, 2)
    results, seconds = measure(progress)
    os.dup2(terminal, 1)
    lines = [
        (
            f"bench/languages.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, bundled:base, beam {BEAM}, "
            f"batch {BATCH}, best of {ROUNDS} rounds; {seconds:.1f} s: tests/data/mixed-languages.ogg x{REPEAT} (en/de/fr/es/it)"
        ),
        f"{'system':>21} {'RTFx':>7} {'WER':>7} {'lang ok':>8} {'x fw-batched':>13} {'x fw-sequential':>16}",
    ]
    for name, r in results.items():
        ok = "-" if r["language_ok"] is None else f"{r['language_ok']:.0%}"
        lines.append(
            f"{name:>21} {r['rtfx']:>7} {r['wer']:>7.4f} {ok:>8} {r['rtfx'] / results['fw-batched']['rtfx']:>12.2f}x"
            f" {r['rtfx'] / results['fw-sequential']['rtfx']:>15.2f}x"
        )
    ours, seq = results["asrflow-batched"], results["fw-sequential"]
    lines.append(
        f"asrflow-batched: WER {100 * (ours['wer'] - seq['wer']):+.1f} pt against fw-sequential (target <= +0.5), "
        f"RTFx {ours['rtfx'] / results['fw-batched']['rtfx']:.2f}x fw-batched (target >= 1.1x)"
    )
    print("\n".join(lines))
    stamp.write("languages", {"seconds": round(seconds, 1), "results": results})
    print(f"written to bench/results/languages.json; third-party output in {LOG.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
