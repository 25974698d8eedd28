"""A held-out corpus made at bench time: speech no code was tuned on, from a seed drawn when it runs (printed).

New sentences (a grammar over a vocabulary, never the dev corpus's or tests/data's), spoken by espeak-ng voices that
neither uses, through ../shared/tools/make_tts_corpus.py (espeak-ng and sox from apt; `make bench` may need them,
`make test` never does). It writes, under OUT:
  short/clean, short/noisy  24 clips each (the noisy ones at 10 dB SNR), manifest.jsonl as the tool writes it
  long/                     3 files of 4 minutes or more, 4 voices each, with a pause between sentences
  conversations/            3 conversations of 2 voices and 3 of 3, voices of both sexes, with RTTM references
and OUT/corpus.json: the seed and what each part holds.

usage: .venv/bin/python bench/heldout.py OUT [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT.parent / "shared" / "tools" / "make_tts_corpus.py"
RATE = 16000
CONVERSATIONS = 3  # of each size (2 and 3 voices)

ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
MALE, FEMALE = [f"m{k}" for k in range(1, 8)], [f"f{k}" for k in range(1, 6)]

SUBJECTS = [
    "the new manager",
    "our neighbour",
    "a young engineer",
    "the river guide",
    "my grandmother",
    "the night nurse",
    "a quiet student",
    "the city council",
    "the old fisherman",
    "a travelling musician",
    "the school librarian",
    "our delivery driver",
    "the museum curator",
    "a local farmer",
    "the hotel chef",
    "the harbour pilot",
]
VERBS = [
    "repaired",
    "painted",
    "photographed",
    "carried",
    "described",
    "ordered",
    "cleaned",
    "borrowed",
    "measured",
    "delivered",
    "inspected",
    "recommended",
    "returned",
    "collected",
    "planted",
    "sold",
]
OBJECTS = [
    "a wooden bench",
    "the broken window",
    "twelve yellow lamps",
    "a heavy suitcase",
    "the green bicycle",
    "an ancient map",
    "the garden fence",
    "a box of letters",
    "the copper kettle",
    "a pair of boots",
    "the striped umbrella",
    "forty paper cups",
    "the silver bracelet",
    "a bag of oranges",
    "the kitchen clock",
]
PLACES = [
    "near the railway station",
    "behind the public library",
    "at the edge of the forest",
    "beside the old mill",
    "in the crowded market",
    "on the northern hillside",
    "outside the concert hall",
    "across from the bakery",
]
TIMES = [
    "early on Monday morning",
    "after the heavy rain",
    "just before sunset",
    "during the long holiday",
    "late last winter",
    "on a windy afternoon",
    "while everyone was asleep",
    "two days ago",
]
TAILS = [
    "and nobody noticed",
    "because the weather was perfect",
    "although it cost too much",
    "so the children laughed",
    "and then went home",
    "before anyone could ask why",
    "as the bells were ringing",
    "without saying a word",
]


def voices_not_heard() -> list[str]:
    """espeak-ng voices (accent+variant) that neither the dev corpus nor tests/data uses."""
    heard = set()
    for manifest in (
        ROOT.parent / "shared" / "data" / "dev" / "manifest.jsonl",
        ROOT / "tests" / "data" / "manifest.jsonl",
    ):
        if manifest.is_file():
            heard |= {json.loads(line).get("voice") for line in manifest.read_text().splitlines() if line.strip()}
    heard |= {p.stem for p in (ROOT / "tests" / "data" / "voices").glob("*")}
    for rttm in (ROOT / "tests" / "data").glob("*.rttm"):
        heard |= {line.split()[7] for line in rttm.read_text().splitlines() if line.strip()}
    return [f"{a}+{v}" for a in ACCENTS for v in MALE + FEMALE if f"{a}+{v}" not in heard]


def sentence(rng: random.Random) -> str:
    text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)} {rng.choice(TIMES)}"
    if rng.random() < 0.5:
        text += f" {rng.choice(TAILS)}"
    return text[0].upper() + text[1:] + "."


def speak(lines: list[tuple[str, int, str]], out: Path, noise: float | None = None, formats: str = "wav") -> list[dict]:
    """Each (voice, words per minute, text) spoken by the shared tool into `out`: its manifest's rows."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as texts:
        texts.writelines(f"{voice}|{speed}|{text}\n" for voice, speed, text in lines)
    command = [sys.executable, str(TOOL), texts.name, str(out), "--formats", formats]
    subprocess.run([*command, *(["--noise", str(noise)] if noise is not None else [])], check=True)
    Path(texts.name).unlink()
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    for row, (_, speed, _) in zip(rows, lines):
        row["speed"] = speed  # words per minute, kept with the rest
    (out / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def joined(rows: list[dict], folder: Path, rng: random.Random) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """The rows' audio one after another with pauses of 0.3 to 1.2 s: the samples and (start, end, voice) turns."""
    from asrflow.audio import decode_audio

    pieces, turns, t = [], [], 0.0
    for row in rows:
        samples = decode_audio(folder / row["audio"])
        turns.append((t, t + len(samples) / RATE, row["voice"]))
        pause = np.zeros(int(rng.uniform(0.3, 1.2) * RATE), np.float32)
        pieces += [samples, pause]
        t += (len(samples) + len(pause)) / RATE
    return np.concatenate(pieces), turns


def made() -> tuple[int, Path]:
    """The bench's held-out corpus: its seed (BENCH_SEED, or drawn now) and its folder (build/heldout-SEED), made
    there unless it already is."""
    seed = int(os.environ.get("BENCH_SEED") or random.SystemRandom().randrange(2**31))
    folder = ROOT / "build" / f"heldout-{seed}"
    if not (folder / "corpus.json").is_file():
        make(folder, seed)
    return seed, folder


def make(out: Path, seed: int) -> dict:
    from asrflow.encoding import encode_audio

    rng = random.Random(seed)
    pool = voices_not_heard()
    rng.shuffle(pool)
    females = [v for v in pool if v.split("+")[1].startswith("f")]
    males = [v for v in pool if v.split("+")[1].startswith("m")]
    corpus = {"seed": seed, "voices_not_in_dev_or_tests": len(pool)}

    short = [say(pool[i % 12], rng) for i in range(24)]
    speak(short, out / "short" / "clean", formats="wav,mp3,flac,ogg")
    speak(
        [say(pool[12 + i % 12], rng) for i in range(24)], out / "short" / "noisy", noise=10, formats="wav,mp3,flac,ogg"
    )
    corpus["short"] = {"clean": 24, "noisy": 24, "snr_db": 10}

    long_rows = []
    for k in range(3):
        voices = [females[4 * k], males[4 * k], females[4 * k + 1], males[4 * k + 1]]
        rows = speak([say(voices[i % 4], rng) for i in range(44)], out / "long" / f"parts{k}")
        samples, _ = joined(rows, out / "long" / f"parts{k}", rng)
        name = f"long{k}.flac"
        encode_audio(samples, "flac", file=str(out / "long" / name))
        long_rows.append({"audio": name, "text": " ".join(r["text"] for r in rows), "duration": len(samples) / RATE})
    (out / "long" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long_rows))
    corpus["long"] = [round(r["duration"], 1) for r in long_rows]

    corpus["conversations"] = make_conversations(out / "conversations", rng, pool, CONVERSATIONS)
    (out / "corpus.json").write_text(json.dumps(corpus, indent=1) + "\n")
    return corpus


def make_conversations(out: Path, rng: random.Random, pool: list[str], per_size: int) -> list[dict]:
    """`per_size` conversations of 2 voices and as many of 3, 12 turns each, into `out` (conversation-N-K.ogg with
    its .rttm): one conversation decides little about a diarizer, so a verdict pools several. Their voices differ as
    people's do: both sexes, and no two of one conversation with the same pitch and formants (espeak-ng's variant:
    en-us+m3 and en-gb+m3 differ only in accent)."""
    from asrflow.encoding import encode_audio

    rows = []
    for n in (2, 3):
        for k in range(per_size):
            voices: list[str] = []
            for sex in ("f", "m", rng.choice("fm"))[:n]:
                voices.append(
                    rng.choice(
                        [
                            v
                            for v in pool
                            if v.split("+")[1][0] == sex
                            and v not in voices
                            and v.split("+")[1] not in {u.split("+")[1] for u in voices}
                        ]
                    )
                )
            name = f"conversation-{n}-{k}"
            turns_rows = speak([say(voices[i % n], rng) for i in range(12)], out / f"turns-{name}")
            samples, turns = joined(turns_rows, out / f"turns-{name}", rng)
            encode_audio(samples, "ogg", bitrate=32000, file=str(out / f"{name}.ogg"))
            (out / f"{name}.rttm").write_text(
                "".join(f"SPEAKER {name} 1 {s:.3f} {e - s:.3f} <NA> <NA> {v} <NA> <NA>\n" for s, e, v in turns)
            )
            rows.append({"audio": f"{name}.ogg", "speakers": n, "voices": voices, "duration": len(samples) / RATE})
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [{"audio": r["audio"], "voices": r["voices"]} for r in rows]


def say(voice: str, rng: random.Random) -> tuple[str, int, str]:
    """A line of the corpus: the voice, a speaking rate (words per minute) and a new sentence."""
    return voice, rng.randrange(140, 191), sentence(rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=None, help="drawn at run time when omitted (printed either way)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"held-out corpus: seed {seed}", flush=True)
    print(json.dumps(make(args.out, seed)))


if __name__ == "__main__":
    main()
