"""`make bench`: the long-form paths on held-out long files, beside the noise floor that says what a difference
between them means, and where the fast path's deficit comes from.

Systems, on bench/heldout.py's three long files (4 voices, 4-5 minutes each; seed from BENCH_SEED or drawn now,
printed), tiny.en, beam 5:
  fast-8           asrflow's fast path as the pyfunc runs it: VAD regions in batches of 8
  fast-2           the same in batches of 2 (on a CPU the decoder splits a batch among its cores)
  sequential       asrflow without VAD: Whisper's sequential long-form decoding, the CLI's default
  fw-sequential    faster-whisper's WhisperModel.transcribe (int8), used directly
  fw-batched       faster-whisper's BatchedInferencePipeline (int8, batch 8), used directly

Each file is decoded as it is and as REPLICAS-1 replicas with white noise at -80 dBFS added (inaudible; seeds 1,
2, ...). Whisper's decoding of a long file is chaotic: a replica can move its WER by points, so one decode per
file decides nothing at the scale of half a point. The verdicts are paired differences (same file, same replica)
with a 95% interval, bootstrapped over files and then replicas.

The context ablation (the sequential decoder, each file as it is): the whole file; each VAD region alone,
unprompted (what a region at the head of one of the fast path's parallel streams gets); each region prompted
with the previous region's text. Writes bench/results/longform.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import stamp

ROOT = Path(__file__).resolve().parents[1]
REPLICAS = int(os.environ.get("BENCH_REPLICAS", "3"))
BEAM = 5
SYSTEMS = ["fast-8", "fast-2", "sequential", "fw-sequential", "fw-batched"]


def held_out() -> tuple[int, list[tuple[np.ndarray, str]]]:
    sys.path.insert(0, str(ROOT / "bench"))
    import heldout

    from asrflow.audio import decode_audio

    seed, held = heldout.made()
    rows = [json.loads(line) for line in (held / "long" / "manifest.jsonl").read_text().splitlines()]
    return seed, [(decode_audio(held / "long" / r["audio"]), r["text"]) for r in rows]


def replica(samples: np.ndarray, k: int) -> np.ndarray:
    if not k:
        return samples
    return (samples + np.random.default_rng(k).normal(0.0, 1e-4, len(samples))).astype(np.float32)


def systems() -> dict:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from asrflow import load_transcriber
    from asrflow.backends.workers import cores
    from asrflow.models import resolve_model

    ours = load_transcriber("bundled:tiny.en")
    fw = WhisperModel(resolve_model("bundled:tiny.en").location, compute_type="int8", cpu_threads=cores())
    batched = BatchedInferencePipeline(fw)

    def joined(segments) -> str:
        return " ".join(s.text.strip() for s in segments)

    return {
        "fast-8": lambda s: ours.transcribe(s, language="en", beam_size=BEAM, vad_filter=True, batch_size=8).text,
        "fast-2": lambda s: ours.transcribe(s, language="en", beam_size=BEAM, vad_filter=True, batch_size=2).text,
        "sequential": lambda s: ours.transcribe(s, language="en", beam_size=BEAM).text,
        "fw-sequential": lambda s: joined(fw.transcribe(s, language="en", beam_size=BEAM)[0]),
        "fw-batched": lambda s: joined(batched.transcribe(s, language="en", beam_size=BEAM, batch_size=8)[0]),
    }, ours


def interval(differences: np.ndarray, draws: int = 10000) -> tuple[float, float]:
    """95% interval of the mean of `differences` (files x replicas): files drawn with replacement, then replicas
    within each."""
    rng = np.random.default_rng(0)
    files, reps = differences.shape
    f = rng.integers(0, files, (draws, files))
    r = rng.integers(0, reps, (draws, files, reps))
    means = differences[f[..., None], r].mean(axis=(1, 2))
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def ablation(transcriber, files) -> dict[str, float]:
    """WER of the sequential decoder on each file whole, on its VAD regions alone, and on its regions each
    prompted with the previous region's text."""
    from asrflow.metrics import word_error_rate
    from asrflow.options import TranscribeOptions
    from asrflow.vad import merged, speech_regions

    options = TranscribeOptions(vad_filter=True)
    decoder = transcriber.backend.sequential
    settings = {"language": "en", "beam_size": BEAM}
    texts: dict[str, list[str]] = {"whole file": [], "regions alone": [], "regions, previous region's text": []}
    for samples, _ in files:
        texts["whole file"].append(transcriber.transcribe(samples, language="en", beam_size=BEAM).text)
        alone, prompted, previous = [], [], None
        for a, b in merged(speech_regions(samples, options), options.chunk_length_s):
            alone.append(" ".join(s.text.strip() for s in decoder.transcribe(samples[a:b], **settings)[0]))
            text = " ".join(
                s.text.strip() for s in decoder.transcribe(samples[a:b], initial_prompt=previous, **settings)[0]
            )
            prompted.append(text)
            previous = text
        texts["regions alone"].append(" ".join(alone))
        texts["regions, previous region's text"].append(" ".join(prompted))
    references = [text for _, text in files]
    return {name: round(word_error_rate(references, hyps), 4) for name, hyps in texts.items()}


def main() -> None:
    warnings.simplefilter("ignore")
    from asrflow.metrics import word_error_rate

    seed, files = held_out()
    decoders, ours = systems()
    audio = sum(len(s) for s, _ in files) / 16000
    decoders["fast-8"](files[0][0][: 30 * 16000])  # warm-up
    wer = {name: np.zeros((len(files), REPLICAS)) for name in SYSTEMS}
    wall = dict.fromkeys(SYSTEMS, 0.0)
    for k in range(REPLICAS):
        for name in SYSTEMS:
            for i, (samples, reference) in enumerate(files):
                t0 = time.perf_counter()
                text = decoders[name](replica(samples, k))
                wall[name] += time.perf_counter() - t0
                wer[name][i, k] = word_error_rate([reference], [text])
            print(f"replica {k}: {name} {wer[name][:, k].round(3).tolist()}", file=sys.stderr, flush=True)
    print(f"bench/longform.py, {time.strftime('%Y-%m-%d %H:%M')}, {stamp.cpu()}, bundled:tiny.en, beam {BEAM}")
    print(f"held-out long files, seed {seed}: {len(files)} files, {audio:.0f} s; {REPLICAS} replicas each")
    print(f"{'system':>14} {'RTFx':>6} {'mean WER':>9} {'per file (mean of replicas)':>30} {'replica spread':>15}")
    rows = []
    for name in SYSTEMS:
        per_file = wer[name].mean(axis=1)
        spread = float((wer[name].max(axis=1) - wer[name].min(axis=1)).mean())
        rtf = audio * REPLICAS / wall[name]
        rows.append(
            {
                "system": name,
                "rtfx": round(rtf, 2),
                "wer": round(float(wer[name].mean()), 4),
                "per_file": per_file.round(4).tolist(),
                "replica_spread": round(spread, 4),
                "each": wer[name].round(4).tolist(),
            }
        )
        files_text = " ".join(f"{w:.3f}" for w in per_file)
        print(f"{name:>14} {rtf:6.1f} {wer[name].mean():9.4f} {files_text:>30} {spread * 100:13.1f} pt")
    verdicts = {}
    for ours_name in ("fast-8", "fast-2"):
        for peer in ("sequential", "fw-sequential"):
            d = (wer[ours_name] - wer[peer]) * 100
            low, high = interval(d)
            verdicts[f"{ours_name} - {peer}"] = [round(float(d.mean()), 2), round(low, 2), round(high, 2)]
            print(
                f"{ours_name} against {peer}: {d.mean():+.1f} pt (95% interval {low:+.1f} to {high:+.1f}; target <= +0.5)"
            )
        ratio = wall["fw-batched"] / wall[ours_name]
        print(f"{ours_name}: {ratio:.2f}x fw-batched's speed (target >= 1.1x)")
    print("context ablation (asrflow's sequential decoder, each file as it is):")
    context = ablation(ours, files)
    for name, value in context.items():
        print(f"  {name:>32}: WER {value:.4f}")
    path = stamp.write(
        "longform", {"seed": seed, "replicas": REPLICAS, "systems": rows, "verdicts": verdicts, "context": context}
    )
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
