"""`make bench`: asrflow against its peers on the same audio, in one run; prints ratios, writes JSON.

Each system runs in its own child process (so peak RSS is its own), on the bundled tiny.en:
  asrflow-pyfunc      mlflow.pyfunc.load_model(...).predict, CTranslate2 backend, VAD batching
  fw-sequential       faster-whisper WhisperModel.transcribe, used directly
  fw-batched          faster-whisper BatchedInferencePipeline, used directly
  tutorial-pipeline   MLflow's tutorial: transformers pipeline, chunk_length_s=20, stride_length_s=[5, 3]
                      (beam 5: the pipeline's default generation config)
  asrflow-sequential  load_transcriber(...).transcribe without VAD: the CLI's default, sequential 30 s windows
  asrflow-transformers asrflow's transformers backend, VAD chunks in batches
  asrflow-<type>       load_transcriber(compute_type=<type>): the same fast path (VAD batches) as asrflow-pyfunc,
                       for int8, int8_float32 and float32: what quantization costs and buys; the bench prints
                       which one its rule picks (the fastest within 0.5 WER point of float32 on both corpora)
  asrflow-ct2-encoder  asrflow-int8 with CTranslate2's own encoder (ASRFLOW_ENCODER=ctranslate2) instead of
                       OpenVINO's: what the OpenVINO encoder costs and buys

Every system is measured on two corpora: the dev corpus (../shared/data/dev, what the code was developed on) and a
held-out corpus made at run time from a seed drawn then and printed (bench/heldout.py: new sentences, voices
neither the dev corpus nor tests/data use, short clips clean and at 10 dB, three long files of 4 voices). Each
verdict is printed for both.

Third-party output of the systems goes to build/bench.log; the terminal gets progress and the tables.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import stamp

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("BENCH_CORPUS", ROOT.parent / "shared" / "data" / "dev"))
if not (CORPUS / "manifest.jsonl").is_file():
    CORPUS = ROOT / "tests" / "data"
MIN_SECONDS = 180
BATCH = 8
BEAM = 5
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SLOW = {"tutorial-pipeline", "asrflow-transformers"}  # timed in the first round only
COMPUTE_TYPES = ["int8", "int8_float32", "float32"]
LOG = ROOT / "build" / "bench.log"
TASKS = ("long", "files", "heldout_long", "heldout_clean", "heldout_noisy")  # the corpora (corpora())
HELDOUT_ROUNDS = max(1, int(os.environ.get("BENCH_HELDOUT_ROUNDS", "2")))  # 20 minutes of audio a round: twice


def corpus(folder: Path = CORPUS):
    """(samples, text) per clip of a folder's manifest. The samples are 16-bit, as a WAV file holds them:
    asrflow-pyfunc is sent WAV (as callers send files) and the other systems arrays, so every system hears the
    same samples. (Decoded mp3 and Ogg are off the 16-bit grid: rounded only on the pyfunc's way in, they moved its
    long-audio WER by 1.2 points.)"""
    from asrflow.audio import decode_audio
    from asrflow.encoding import encode_audio

    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [(decode_audio(encode_audio(decode_audio(folder / r["audio"]), "wav")), r["text"]) for r in rows]


def corpora() -> dict[str, list]:
    """What each task transcribes: a list of (samples, reference) pairs. `long` is the dev corpus joined into one
    file; `files` the dev clips; `heldout_long` the held-out long files, each whole; `heldout_clean` and
    `heldout_noisy` its short clips, clean and at 10 dB, apart."""
    items = corpus()
    held = Path(os.environ["BENCH_HELDOUT"])
    return {
        "long": [long_audio(items)],
        "files": items,
        "heldout_long": corpus(held / "long"),
        "heldout_clean": corpus(held / "short" / "clean"),
        "heldout_noisy": corpus(held / "short" / "noisy"),
    }


def long_audio(items, sentences: list | None = None):
    """The corpus concatenated (0.6 s gaps) and repeated until it lasts at least MIN_SECONDS. `sentences`, when
    given, gets where each clip's sound starts and stops (seconds; its samples over 2% of its peak)."""
    gap = np.zeros(int(0.6 * 16000), np.float32)
    pieces, texts, length = [], [], 0
    while length < MIN_SECONDS * 16000:
        for samples, text in items:
            if sentences is not None:
                loud = np.flatnonzero(np.abs(samples) > 0.02 * np.abs(samples).max())
                sentences.append(((length + loud[0]) / 16000, (length + loud[-1]) / 16000))
            pieces += [samples, gap]
            texts.append(text)
            length += len(samples) + len(gap)
    return np.concatenate(pieces), " ".join(texts)


def system(name: str):
    """Return transcribe(samples) -> text for a system, after loading it."""
    if name == "asrflow-pyfunc":
        import mlflow

        from asrflow import flavor, registry

        os.environ["ASRFLOW_HOME"] = tempfile.mkdtemp()
        registry.set_experiment("bench")
        with mlflow.start_run():
            info = flavor.log_model()
        from asrflow.encoding import encode_audio

        model = mlflow.pyfunc.load_model(info.model_uri)
        params = {"vad_filter": True, "batch_size": BATCH, "beam_size": BEAM, "language": "en"}
        # pyfunc's input is binary audio: callers send encoded files, so the bench does too (WAV)
        return lambda samples: model.predict([encode_audio(samples, "wav")], params=params)[0]
    if name.startswith("fw-"):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        from asrflow.backends.workers import cores
        from asrflow.models import resolve_model

        model = WhisperModel(
            resolve_model("bundled:tiny.en").location, device="cpu", compute_type="int8", cpu_threads=cores()
        )
        if name == "fw-batched":
            batched = BatchedInferencePipeline(model)
            return lambda s: " ".join(
                seg.text.strip() for seg in batched.transcribe(s, batch_size=BATCH, beam_size=BEAM, language="en")[0]
            )
        return lambda s: " ".join(seg.text.strip() for seg in model.transcribe(s, beam_size=BEAM, language="en")[0])
    if name == "tutorial-pipeline":
        import transformers

        from asrflow.models import resolve_model, transformers_dir

        path = transformers_dir(resolve_model("bundled:tiny.en"))
        pipe = transformers.pipeline(
            task="automatic-speech-recognition",
            model=transformers.WhisperForConditionalGeneration.from_pretrained(path),
            tokenizer=transformers.WhisperTokenizer.from_pretrained(path),
            feature_extractor=transformers.WhisperFeatureExtractor.from_pretrained(path),
        )
        return lambda s: pipe(s.copy(), chunk_length_s=20, stride_length_s=[5, 3])["text"].strip()
    if name.removeprefix("asrflow-") in COMPUTE_TYPES:
        from asrflow import load_transcriber

        transcriber = load_transcriber("bundled:tiny.en", compute_type=name.removeprefix("asrflow-"))
        return lambda s: (
            transcriber.transcribe(s, language="en", vad_filter=True, beam_size=BEAM, batch_size=BATCH).text
        )
    if name == "asrflow-ct2-encoder":  # the fast path as it ran before the OpenVINO encoder: CTranslate2's int8 encoder
        from asrflow import load_transcriber

        os.environ["ASRFLOW_ENCODER"] = "ctranslate2"
        transcriber = load_transcriber("bundled:tiny.en", compute_type="int8")
        return lambda s: (
            transcriber.transcribe(s, language="en", vad_filter=True, beam_size=BEAM, batch_size=BATCH).text
        )
    if name == "asrflow-sequential":
        from asrflow import load_transcriber

        transcriber = load_transcriber("bundled:tiny.en")
        # the CLI's default: no VAD, Whisper's sequential long-form decoding (30 s windows, fallback)
        return lambda s: transcriber.transcribe(s, language="en", beam_size=BEAM).text
    if name == "asrflow-transformers":
        from asrflow import load_transcriber

        transcriber = load_transcriber("bundled:tiny.en", backend="transformers")
        # the same settings as asrflow-pyfunc: VAD chunks decoded in batches, beam 5 (the pipeline's default too)
        return lambda s: (
            transcriber.transcribe(s, language="en", vad_filter=True, beam_size=BEAM, batch_size=BATCH).text
        )
    raise ValueError(name)


def worker(name: str, conn):
    """Load one system, then time what the parent asks for: ("long" | "files" | "done")."""
    log = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)  # third-party warnings and prints: to the log, not the terminal
    os.dup2(log, 2)
    from asrflow.metrics import deleted_share, word_error_rate

    tasks = corpora()
    started = time.perf_counter()
    transcribe = system(name)
    result = {"system": name, "load_s": round(time.perf_counter() - started, 2)}
    for task, items in tasks.items():
        result[task + "_audio_s"] = round(sum(len(s) for s, _ in items) / 16000, 1)
    transcribe(tasks["files"][0][0])  # warm-up
    conn.send("ready")
    while (task := conn.recv()) != "done":
        t0 = time.perf_counter()
        references = [text for _, text in tasks[task]]
        hypotheses = [transcribe(samples) for samples, _ in tasks[task]]
        conn.send(time.perf_counter() - t0)
        result[task + "_wer"] = round(word_error_rate(references, hypotheses), 4)
        result[task + "_deleted"] = round(deleted_share(references, hypotheses), 4)
        if task == "heldout_long":  # file by file too: the targets hold for each
            result["heldout_long_each_wer"] = [
                round(word_error_rate([r], [h]), 4) for r, h in zip(references, hypotheses)
            ]
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    conn.send(result)


def measure_all(names: list[str]) -> dict[str, dict]:
    """Each system in its own process (its own peak RSS), loaded one after another, then timed in
    interleaved rounds so that drift on a small shared machine hits every system alike (best round kept)."""
    ctx = mp.get_context("spawn")
    LOG.parent.mkdir(exist_ok=True)
    LOG.write_text("")
    conns = {}
    for name in names:
        print(f"loading {name} ...", file=sys.stderr, flush=True)
        parent, child = ctx.Pipe()
        ctx.Process(target=worker, args=(name, child), daemon=True).start()
        child.close()  # the worker's end: if the worker dies, recv() raises instead of waiting for ever
        assert parent.recv() == "ready"
        conns[name] = parent
    best = {name: {} for name in names}
    for round_ in range(ROUNDS):
        for name in names:
            if round_ and name in SLOW:
                continue
            for task in TASKS if round_ < HELDOUT_ROUNDS else TASKS[:2]:
                conns[name].send(task)
                wall = conns[name].recv()
                print(f"round {round_ + 1}: {name} {task} {wall:.2f} s", file=sys.stderr, flush=True)
                best[name][task] = min(best[name].get(task, float("inf")), wall)
    results = {}
    for name, conn in conns.items():
        conn.send("done")
        r = conn.recv()
        for task, wall in best[name].items():
            r[task + "_wall_s"], r[task + "_rtf"] = round(wall, 2), round(r[task + "_audio_s"] / wall, 2)
        results[name] = r
    return results


def register_model(home: str, queue):
    import mlflow

    from asrflow import flavor, registry

    os.environ["ASRFLOW_HOME"] = home
    registry.set_experiment("bench")
    with mlflow.start_run():
        info = flavor.log_model()
    registry.register(info.model_uri, "bench-cold", alias="champion")
    queue.put(info.model_uri)


COLD_START = """
import json, resource, sys, time
t0 = time.perf_counter()
from asrflow import load_transcriber
from asrflow.audio import decode_audio
clip = decode_audio(sys.argv[1])[: 5 * 16000]
t1 = time.perf_counter()
text = load_transcriber("models:/bench-cold@champion").transcribe(clip).text
t2 = time.perf_counter()
print(json.dumps({"total_s": round(t2 - t0, 2), "load_and_transcribe_s": round(t2 - t1, 2), "text": text,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def cold_start() -> dict:
    """A fresh Python process: import asrflow, load models:/bench-cold@champion (MLflow registry), transcribe 5 s."""
    import subprocess

    home = tempfile.mkdtemp()
    in_child(register_model, home)
    clip = min(CORPUS.glob("*.wav"))
    runs = [
        subprocess.run(
            [sys.executable, "-c", COLD_START, str(clip)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "ASRFLOW_HOME": home},
        )
        for _ in range(3)
    ]
    return min((json.loads(r.stdout.strip().splitlines()[-1]) for r in runs), key=lambda r: r["total_s"])


def in_child(target, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get(timeout=1800)
    process.join()
    return result


PEERS = ["fw-batched", "fw-sequential", "tutorial-pipeline"]


def table(results: dict[str, dict], corpus: str) -> list[str]:
    """One corpus: each system's speed (real-time factor), WER, deleted words (share of the reference's) and peak
    RSS, and its speed as a ratio to each peer."""
    peers = [p for p in PEERS if p in results]
    head = f"{'system':>21} {'RTFx':>7} {'WER':>7} {'deleted':>8} {'peak MB':>8}" + "".join(
        f" {'x ' + p:>20}" for p in peers
    )
    lines = [head]
    for name, r in results.items():
        ratios = "".join(f" {r[corpus + '_rtf'] / results[p][corpus + '_rtf']:>19.2f}x" for p in peers)
        lines.append(
            f"{name:>21} {r[corpus + '_rtf']:>7} {r[corpus + '_wer']:>7.4f} {r[corpus + '_deleted']:>8.2%} {r['peak_rss_mb']:>8.0f}{ratios}"
        )
    return lines


def main(names: list[str]):
    import heldout

    seed, held = heldout.made()
    print(f"held-out corpus: seed {seed} ({held.relative_to(ROOT)})", file=sys.stderr, flush=True)
    os.environ["BENCH_HELDOUT"] = str(held)  # the systems' processes read it
    results = measure_all(names)
    cold = cold_start()
    first = next(iter(results.values()))
    print(
        f"bench/run.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs ({cpu()}), bundled:tiny.en, beam {BEAM}, "
        f"batch {BATCH}, best of {ROUNDS} rounds (held-out corpus: {min(ROUNDS, HELDOUT_ROUNDS)}); RTFx = audio seconds per wall "
        "second (higher is faster)"
    )
    held_files = len(corpus_rows(held / "long"))
    for corpus, title in (
        ("long", f"long audio ({first['long_audio_s']} s: the dev corpus concatenated)"),
        ("files", f"dev corpus, file by file ({first['files_audio_s']} s in {len(corpus_rows())} files)"),
        ("heldout_long", f"held-out long files, seed {seed} ({first['heldout_long_audio_s']} s in {held_files} files)"),
        ("heldout_clean", f"held-out short clips, seed {seed}, clean ({first['heldout_clean_audio_s']} s)"),
        ("heldout_noisy", f"held-out short clips, seed {seed}, at 10 dB SNR ({first['heldout_noisy_audio_s']} s)"),
    ):
        print(f"\n{title}")
        print("\n".join(table(results, corpus)))
    print("\n" + "\n".join(verdicts(results)))
    print(
        f"\ncold start in a fresh process (import, load models:/…@champion, transcribe 5 s): {cold['total_s']} s, "
        f"of which load + transcribe {cold['load_and_transcribe_s']} s; peak RSS {cold['peak_rss_mb']} MB"
    )
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "corpus": str(CORPUS),
        "heldout_seed": seed,
        "batch_size": BATCH,
        "beam_size": BEAM,
        "results": results,
        "cold_start": cold,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": stamp.commit(),
    }
    path = ROOT / "bench" / "results" / "bench.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwritten to {path.relative_to(ROOT)}; third-party output in {LOG.relative_to(ROOT)}")


def verdicts(results: dict[str, dict]) -> list[str]:
    """The targets, from this run, on every corpus: the fast path's WER and speed against faster-whisper (and, on
    the held-out long files, file by file against both sequential decoders), the encoder against CTranslate2's,
    and the compute type the rule picks: the fastest whose WER is within 0.5 point of float32's, on the held-out
    corpus (the dev corpus's pick printed beside it)."""
    lines = []
    pt = lambda a, b: f"{100 * (a - b):+.1f} pt"
    if {"asrflow-pyfunc", "fw-sequential", "fw-batched"} <= results.keys():
        ours, seq, batched = results["asrflow-pyfunc"], results["fw-sequential"], results["fw-batched"]
        for c in TASKS:
            lines.append(
                f"asrflow-pyfunc on {c}: WER {pt(ours[c + '_wer'], seq[c + '_wer'])} against fw-sequential (target <= "
                f"+0.5), RTFx {ours[c + '_rtf'] / batched[c + '_rtf']:.2f}x fw-batched (target >= 1.1x), deleted words "
                f"{pt(ours[c + '_deleted'], seq[c + '_deleted'])} (target <= +1)"
            )
        for peer in ("fw-sequential", "asrflow-sequential"):
            if peer in results:
                each = zip(ours["heldout_long_each_wer"], results[peer]["heldout_long_each_wer"])
                lines.append(
                    f"asrflow-pyfunc on the held-out long files, file by file, against {peer}: "
                    + ", ".join(pt(a, b) for a, b in each)
                    + " (target <= +0.5 each)"
                )
    if {"asrflow-int8", "asrflow-ct2-encoder"} <= results.keys():
        ov, ct2 = results["asrflow-int8"], results["asrflow-ct2-encoder"]
        lines.append(
            "OpenVINO's encoder against CTranslate2's (int8 decoder both): "
            + "; ".join(
                f"{c} WER {pt(ov[c + '_wer'], ct2[c + '_wer'])} at {ov[c + '_rtf'] / ct2[c + '_rtf']:.2f}x its speed"
                for c in TASKS
            )
        )
    typed = {t: results.get(f"asrflow-{t}") for t in COMPUTE_TYPES}
    if all(typed.values()):
        for pair in (TASKS[2:], TASKS[:2]):  # held-out first: the default follows it
            close = [
                t for t, r in typed.items() if all(r[c + "_wer"] <= typed["float32"][c + "_wer"] + 0.005 for c in pair)
            ]
            fastest = max(close, key=lambda t: math.prod(typed[t][c + "_rtf"] for c in pair))
            lines.append(
                f"compute types within 0.5 pt of float32 on {' and '.join(pair)}: {', '.join(close)}; fastest: {fastest}"
            )
        for t in COMPUTE_TYPES[:-1]:  # what each quantized type costs and buys against float32
            lines.append(
                f"{t} against float32: "
                + "; ".join(
                    f"{c} WER {pt(typed[t][c + '_wer'], typed['float32'][c + '_wer'])} at "
                    f"{typed[t][c + '_rtf'] / typed['float32'][c + '_rtf']:.2f}x its speed"
                    for c in TASKS
                )
            )
    return lines


def cpu() -> str:
    return stamp.cpu()


def corpus_rows(folder: Path = CORPUS) -> list[str]:
    return [line for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    main(
        sys.argv[1:]
        or [
            "asrflow-pyfunc",
            "fw-batched",
            "fw-sequential",
            "asrflow-sequential",
            "tutorial-pipeline",
            "asrflow-transformers",
        ]
        + [f"asrflow-{t}" for t in COMPUTE_TYPES]
        + ["asrflow-ct2-encoder"]
    )
