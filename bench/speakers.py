"""`make bench`: what diarization costs and how right it is, on the repository's generated conversations
(tests/data, whose voices were picked because they could be told apart), on a held-out pair made at bench time, and
on a real recording of two people (pyannote.audio's sample, from its wheel on PyPI).

For each conversation: real-time factor of asrflow's default transcription with word timestamps (what diarize
decodes) and with diarize=True, the speaker count found, and the DER against its RTTM (pyannote.metrics,
0.25 s collar), with the count estimated and given. Best of BENCH_ROUNDS rounds (default 3). Writes
bench/results/speakers.json.
"""

from __future__ import annotations

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


def conversations() -> list[tuple[str, Path]]:
    """(corpus, audio) pairs: the repository's test conversations (voices picked because they could be told
    apart) and held-out conversations made now (3 of 2 voices, 3 of 3) (bench/heldout.py: voices neither those nor the dev corpus use, both sexes;
    seed from BENCH_SEED or drawn now, printed)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import heldout

    seed, held = heldout.made()
    return (
        [("tests", DATA / f"conversation-{n}.ogg") for n in (2, 3)]
        + [(f"held-out {seed}", audio) for audio in sorted((held / "conversations").glob("conversation-*.ogg"))]
        + [("real (pyannote)", real_conversation())]
    )


def real_conversation() -> Path:
    """Real speech of two people: the sample recording (30 s, with its RTTM) that pyannote.audio's wheel on PyPI
    ships, fetched once into build/ with pip (a package registry: no hub)."""
    folder = ROOT / "build" / "pyannote-sample"
    if not (folder / "sample.rttm").is_file():
        import subprocess
        import zipfile

        wheels = ROOT / "build" / "wheels"
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), "pyannote.audio==4.0.7"]
        subprocess.run(pip, check=True)
        with zipfile.ZipFile(next(wheels.glob("pyannote_audio-4.0.7-*.whl"))) as wheel:
            for name in ("sample.wav", "sample.rttm"):
                folder.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(wheel.read(f"pyannote/audio/sample/{name}"))
    return folder / "sample.wav"


def main() -> None:
    import warnings

    warnings.simplefilter("ignore")
    from asrflow import load_transcriber
    from asrflow.audio import SAMPLE_RATE, decode_audio
    from asrflow.metrics import diarization_error_rate, read_rttm

    transcriber = load_transcriber("bundled:tiny.en")
    rows = []
    for corpus, audio in conversations():
        samples = decode_audio(audio)
        reference = read_rttm(audio.with_suffix(".rttm").read_text())
        n = len({speaker for _, _, speaker in reference})
        seconds = len(samples) / SAMPLE_RATE
        transcriber.transcribe(samples[: 5 * SAMPLE_RATE], diarize=True)  # warm-up: the encoder loads once
        plain, _ = best(lambda s: transcriber.transcribe(s, word_timestamps=True), samples)
        diarized, result = best(lambda s: transcriber.transcribe(s, diarize=True), samples)
        given = transcriber.transcribe(samples, diarize=True, num_speakers=n)
        rows.append(
            {
                "corpus": corpus,
                "audio": audio.name,
                "seconds": round(seconds, 1),
                "speakers": n,
                "found": len({s.speaker for s in result.segments}),
                "rtfx": round(seconds / plain, 2),
                "rtfx_diarized": round(seconds / diarized, 2),
                "cost": round(diarized / plain, 2),
                "der": round(diarization_error_rate(reference, result.segments), 4),
                "der_given": round(diarization_error_rate(reference, given.segments), 4),
            }
        )
    print(
        f"bench/speakers.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, bundled:tiny.en, best of {ROUNDS}; "
        "DER (pyannote.metrics, 0.25 s collar) with the count estimated and given"
    )
    print(
        f"{'corpus':>20} {'audio':>22} {'seconds':>8} {'speakers':>9} {'found':>6} {'RTFx':>7} {'RTFx diarized':>14}"
        f" {'time x':>7} {'DER':>7} {'DER given':>10}"
    )
    for r in rows:
        print(
            f"{r['corpus']:>20} {r['audio']:>22} {r['seconds']:>8} {r['speakers']:>9} {r['found']:>6} {r['rtfx']:>7}"
            f" {r['rtfx_diarized']:>14} {r['cost']:>6}x {r['der']:>7.4f} {r['der_given']:>10.4f}"
        )
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        mine = [r for r in rows if r["corpus"] == corpus]
        right = sum(r["found"] == r["speakers"] for r in mine)
        print(
            f"{corpus}: count right {right} of {len(mine)}; DER mean {sum(r['der'] for r in mine) / len(mine):.4f}"
            f" estimated, {sum(r['der_given'] for r in mine) / len(mine):.4f} given;"
            f" worst {max(r['der'] for r in mine):.4f} / {max(r['der_given'] for r in mine):.4f}"
        )
    import stamp

    stamp.write("speakers", rows)
    print("written to bench/results/speakers.json", file=sys.stderr)


if __name__ == "__main__":
    main()
