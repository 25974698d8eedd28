"""The encoder on OpenVINO: the model's own weights, close to CTranslate2's float32 encoding, the same words;
CTranslate2's own on request; no telemetry."""

import os
import subprocess
import sys

import ctranslate2
import numpy as np
import pytest
from conftest import BIN, DATA, JFK_TEXT, SAMPLE

from asrflow import InvalidOptionError, load_transcriber
from asrflow.audio import decode_audio
from asrflow.metrics import word_error_rate


def _window(path, frames: int = 3000) -> np.ndarray:
    from faster_whisper.feature_extractor import FeatureExtractor

    audio = decode_audio(path)
    features = FeatureExtractor()(np.pad(audio, (0, max(0, 480000 - len(audio))))[:480000])[:, :frames]
    return np.ascontiguousarray(features[None], dtype=np.float32)


@pytest.mark.parametrize("frames", [3000, 1500])  # a whole window, and the trimmed encoder's shortest input
def test_the_openvino_encoding_is_close_to_ctranslate2s_float32_encoding(ct2_transcriber, frames):
    from asrflow.backends.openvino_encoder import OpenVINOEncoder

    backend = ct2_transcriber.backend
    assert isinstance(backend.encoder, OpenVINOEncoder)  # the default on CPU
    exact = ctranslate2.models.Whisper(_model_dir(), device="cpu", compute_type="float32")
    features = _window(SAMPLE, frames)
    reference = np.array(exact.encode(ctranslate2.StorageView.from_array(features)))
    ours = np.array(backend.encoder(features))
    assert ours.shape == reference.shape == (1, frames // 2, reference.shape[-1])
    assert np.linalg.norm(ours - reference) / np.linalg.norm(reference) < 0.05
    # CTranslate2's own int8 encoding is further from float32 than OpenVINO's (int8 asked for by name: the backend's
    # own type is float32 on x86 CPUs without VNNI)
    quantized = ctranslate2.models.Whisper(_model_dir(), device="cpu", compute_type="int8")
    int8 = np.array(quantized.encode(ctranslate2.StorageView.from_array(features)))
    assert np.linalg.norm(ours - reference) < np.linalg.norm(int8 - reference)


def _model_dir() -> str:
    from asrflow.models import ctranslate2_dir, resolve_model

    return ctranslate2_dir(resolve_model("bundled:tiny.en"))


def test_silent_windows_are_encoded_once_and_read_back_by_later_loads(ct2_transcriber, tmp_path):
    """A short clip's window is the clip's frames encoded, then an encoded silent window's rest: that window (a full
    30 s, the costliest encoding) is kept beside the models, and a later load (another process) reads it back. A
    damaged or foreign file there is encoded again and replaced."""
    from asrflow.backends.encoder import TrimmedEncoder

    backend, calls = ct2_transcriber.backend, []
    store = backend.sequential.encode.store()  # the model's own, under ASRFLOW_HOME, named by its engine
    assert store.parent.name == "models" and store.name.startswith("silence-openvino-f32-")

    def encode(features):
        calls.append(features.shape[-1])
        return backend.encode(features)

    def encoded(kept) -> np.ndarray:
        calls.clear()
        return np.array(TrimmedEncoder(encode, lambda: kept)(features))

    features, kept = _window(SAMPLE), tmp_path / "silence"  # 11 s of speech: 15 s encoded, the rest silence
    once = encoded(kept)
    assert calls == [1500, 3000] and once.shape[1] == 1500
    assert np.array_equal(encoded(kept), once) and calls == [1500]
    (stored,) = kept.iterdir()  # one floor, one file: no partial file left
    width = once.shape[-1]
    for damaged in (b"", b"PK\x03\x04 a zip", b"\x93NUMPY nonsense"):
        stored.write_bytes(damaged)
        assert np.array_equal(encoded(kept), once) and calls == [1500, 3000]
    np.save(stored, np.zeros((1500, width // 2), np.float32))  # another model's width
    assert np.array_equal(encoded(kept), once) and calls == [1500, 3000]
    assert np.load(stored).shape == once.shape[1:] and [p.name for p in kept.iterdir()] == [stored.name]
    (tmp_path / "file").write_text("")  # a store that cannot be written: the encoding only, nothing left behind
    assert np.array_equal(encoded(tmp_path / "file" / "silence"), once) and calls == [1500, 3000]


def test_a_home_that_cannot_be_written_still_loads_and_transcribes(monkeypatch, tmp_path):
    """The kept silent windows are found when first needed, and a home that cannot be written costs their encoding
    only: CTranslate2's own encoder, which never needed the home, loads and transcribes as before."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ASRFLOW_HOME", str(tmp_path / "file" / "home"))
    monkeypatch.setenv("ASRFLOW_ENCODER", "ctranslate2")
    transcriber = load_transcriber("bundled:tiny.en")
    assert word_error_rate([JFK_TEXT], [transcriber.transcribe(SAMPLE).text]) < 0.1
    assert transcriber.backend.sequential.encode.silence  # encoded, in this process only


def test_either_encoder_gives_the_same_words(ct2_transcriber, monkeypatch):
    monkeypatch.setenv("ASRFLOW_ENCODER", "ctranslate2")
    theirs = load_transcriber("bundled:tiny.en")
    assert theirs.backend.encoder is None
    for path in (SAMPLE, DATA / "dev003.ogg"):
        ours = ct2_transcriber.transcribe(path, vad_filter=True, batch_size=8).text
        assert word_error_rate([theirs.transcribe(path, vad_filter=True, batch_size=8).text], [ours]) < 0.1
    assert word_error_rate([JFK_TEXT], [ct2_transcriber.transcribe(SAMPLE).text]) < 0.1


def test_a_bad_encoder_setting_is_an_error_naming_the_choices(monkeypatch):
    monkeypatch.setenv("ASRFLOW_ENCODER", "fast")
    with pytest.raises(InvalidOptionError, match="ASRFLOW_ENCODER='fast': choose auto, openvino, ctranslate2"):
        load_transcriber("bundled:tiny.en")


def test_building_the_encoder_sends_no_telemetry_and_leaves_no_torch_behind(tmp_path):
    """Importing openvino makes its telemetry package write a client id under ~/intel, and its converter reports
    to Google Analytics, when that package is found and no consent file: asrflow imports openvino with that
    package hidden (and then no longer), so a program loading a model, the encoder's build and the CLI leave no
    trace there."""
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {
        "HOME": str(tmp_path / "home"),
        "ASRFLOW_HOME": str(tmp_path / "asrflow"),
    }
    (tmp_path / "home").mkdir()
    code = (
        "import sys, asrflow; encoder = asrflow.load_transcriber('bundled:tiny.en').backend.encoder; "
        "print(type(encoder).__name__, 'torch' in sys.modules, sys.modules.get('openvino_telemetry', 0))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    # built apart: the transcribing process never imports torch (the trace's memory is not its own)
    assert result.stdout.strip() == "OpenVINOEncoder False 0", result.stderr[-2000:]  # no placeholder left
    assert any((tmp_path / "asrflow" / "models").glob("openvino-*"))  # built here, in this test
    command = [BIN / "asrflow", "transcribe", SAMPLE]
    cli = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "country" in cli.stdout, cli.stderr[-2000:]
    assert not (tmp_path / "home" / "intel").exists()


def test_with_openvino_encoding_a_batch_is_decoded_in_parts_at_once_into_the_same_tokens(ct2_transcriber, corpus):
    """The decoder runs a worker per core, one thread each (backends/workers.py): a batch's generate is split
    among them, and gives what one call on the whole batch gives. With CTranslate2's encoder, or float32 weights
    (whose matrix products gain from threads): one worker with every thread."""
    from asrflow.backends.workers import Workers, cores, layout

    n = cores()
    assert layout("int8", encoder_is_ctranslate2=False) == (min(n, 8), max(1, n // min(n, 8)))
    assert layout("int8_float32", encoder_is_ctranslate2=False) == (min(n, 8), max(1, n // min(n, 8)))
    assert layout("int8", encoder_is_ctranslate2=True) == layout("float32", encoder_is_ctranslate2=False) == (1, n)
    model = ct2_transcriber.backend.model.model  # the default type is float32 on x86 CPUs without VNNI
    assert isinstance(model, Workers) and model._parts == layout(ct2_transcriber.backend.compute_type, False)[0]
    whole = ctranslate2.models.Whisper(_model_dir(), device="cpu", compute_type=ct2_transcriber.backend.compute_type)
    features = np.concatenate([_window(path) for path, _ in corpus[:5]])
    encoded = np.array(ct2_transcriber.backend.encode(features))
    sot = ct2_transcriber.backend.model.hf_tokenizer.token_to_id("<|startoftranscript|>")
    split = Workers(model._model, 3)
    jobs = []
    real_generate = model._model.generate

    class Counting:  # the model, with each generate call's batch size kept
        def __getattr__(self, name):
            return getattr(model._model, name)

        def generate(self, features, prompts, **kwargs):
            jobs.append(len(prompts))
            return real_generate(features, prompts, **kwargs)

    split._model = Counting()
    ours = split.generate(ctranslate2.StorageView.from_array(encoded), [[sot]] * 5, beam_size=5)
    theirs = whole.generate(ctranslate2.StorageView.from_array(encoded), [[sot]] * 5, beam_size=5)
    assert jobs == [2, 2, 1]
    assert [r.sequences_ids for r in ours] == [r.sequences_ids for r in theirs]


@pytest.mark.check
def test_the_cores_a_model_computes_on_are_omp_num_threads_or_the_processs_cpu_affinity(monkeypatch):
    """In a container limited to some CPUs, or under `taskset`, or with OMP_NUM_THREADS set (as PySpark sets it
    to a task's CPUs), a model takes that many threads, not every CPU of the machine."""
    from asrflow.backends.workers import cores, layout

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cores() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # nested levels: the outer one's
    assert cores() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # as on a 2-core machine (make test's workers have one thread)
    assert layout("int8", encoder_is_ctranslate2=False) == (2, 1)  # a decoding worker per core, a thread each
    assert layout("float32", encoder_is_ctranslate2=False) == layout("int8", encoder_is_ctranslate2=True) == (1, 2)
    for unusable in ("", "0", "many"):
        monkeypatch.setenv("OMP_NUM_THREADS", unusable)
        assert cores() == len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS")
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from asrflow.backends.workers import cores; print(cores())"
    pinned = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert pinned.stdout.strip() == "1"
