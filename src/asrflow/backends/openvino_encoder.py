"""Whisper's encoder on OpenVINO, with the model's own weights; CTranslate2 still decodes.

The encoder reads every 30 s window whole, however little speech it holds. CTranslate2 runs it in int8 or
float32; OpenVINO runs it in float32 (its default on CPUs that compute bfloat16 natively is bfloat16, which broke
timestamps on an Intel CPU with AMX: see openvino_encoder). On the bench's CPU (AMD EPYC, 2 cores, AVX-512 BF16) five
windows of tiny.en took 0.57 s against 1.81 s with CTranslate2's int8, and the encoding is closer to float32's;
the fast path became 1.34x faster on long audio and 1.19x on short files, with WER 0.2 and 0.7 point lower
(README, Performance). CTranslate2's `generate` reads the encoded windows as they are.

The encoder is built once per model from its `model.bin` (asrflow.convert reads it), traced with torch in a child
process, and cached as OpenVINO IR next to the other converted models. `ASRFLOW_ENCODER=ctranslate2` keeps
CTranslate2's encoder (faster-whisper's numerics); `ASRFLOW_ENCODER=openvino` makes a missing OpenVINO an error.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import ctranslate2
import numpy as np

from asrflow.backends.workers import cores
from asrflow.errors import AsrflowError, InvalidOptionError
from asrflow.models import build_once, local_cache

ENGINES = ("auto", "openvino", "ctranslate2")


def encoder_engine() -> str:
    """The encoder engine `ASRFLOW_ENCODER` asks for (auto: OpenVINO on CPU, where its package is installed)."""
    engine = os.environ.get("ASRFLOW_ENCODER", "auto").strip().lower() or "auto"
    if engine not in ENGINES:
        raise InvalidOptionError(f"ASRFLOW_ENCODER={engine!r}: choose {', '.join(ENGINES)} (or leave it unset).")
    return engine


def openvino_encoder(model_dir: str, device: str, compute_type: str) -> OpenVINOEncoder | None:
    """An OpenVINO encoder for the CTranslate2 model in `model_dir`, or None where CTranslate2's own should run:
    on a GPU, for a model that is not a local directory, where OpenVINO is missing or cannot build the model
    (with ASRFLOW_ENCODER=openvino those are errors), or when ASRFLOW_ENCODER=ctranslate2 says so."""
    engine = encoder_engine()
    if engine == "ctranslate2" or device != "cpu" or not (Path(model_dir) / "model.bin").is_file():
        return None
    missing = [name for name in ("openvino", "torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:  # a served model's environment has its pip requirements only: CTranslate2's encoder there
        if engine == "openvino":
            raise InvalidOptionError(
                f"ASRFLOW_ENCODER=openvino needs {', '.join(missing)}: pip install {' '.join(missing)}."
            )
        return None
    try:
        # float32 always: OpenVINO's own default on CPUs with bfloat16 units is bfloat16, 2.2x faster here (Intel,
        # AMX), but there it collapsed the timestamps of a window of the dev clips (a 19 s segment "The", then
        # segments of no length); float32 gave the right ones, as CTranslate2's encoder does
        return OpenVINOEncoder(model_dir, "f32")
    except (AsrflowError, RuntimeError):  # a model OpenVINO cannot build or run: CTranslate2's encoder, unless asked
        if engine == "openvino":
            raise
        return None


class OpenVINOEncoder:
    """Encodes (batch, n_mels, frames) log-mel features, any batch and any frame count up to a window, as
    CTranslate2's `encode` does, into a StorageView its decoder reads."""

    def __init__(self, model_dir: str, precision: str | None = None):
        ov = _import_openvino()
        self.engine = f"openvino-{precision or 'default'}"  # whose numbers its encodings are (kept silences: encoder)
        config = {"INFERENCE_NUM_THREADS": cores()}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        ir = _ir_dir(Path(model_dir)) / "encoder.xml"
        self.compiled = ov.Core().compile_model(str(ir), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.lock = threading.Lock()  # one request, used by one caller at a time

    def __call__(self, features: np.ndarray) -> ctranslate2.StorageView:
        with self.lock:
            encoded = self.request.infer({0: np.ascontiguousarray(features, dtype=np.float32)})[0]
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded))


def _import_openvino():
    """openvino, imported with its telemetry package hidden when asrflow is the first to import it: at import,
    openvino's converter writes a client id under ~/intel and reports to Google Analytics unless that package
    cannot be imported, when it falls back to its own no-op stub. The hiding ends with the import: sys.modules
    is as it was, and a later `import openvino_telemetry` of the program's own works."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    hide = "openvino_telemetry" not in sys.modules
    if hide:
        sys.modules["openvino_telemetry"] = None
    try:
        import openvino
    finally:
        if hide and sys.modules.get("openvino_telemetry", 0) is None:
            del sys.modules["openvino_telemetry"]
    return openvino


def _ir_dir(model_dir: Path) -> Path:
    """The cached IR of the model's encoder, built once (a few seconds) from its model.bin."""
    return build_once(local_cache(model_dir, "openvino"), lambda tmp: _build_apart(model_dir, tmp))


def _build_apart(model_dir: Path, out: Path) -> None:
    """Build in a child process: tracing imports torch and holds the float32 model (the bench's pyfunc peaked at
    1.5 GB building in-process), none of which a transcribing process needs afterwards."""
    done = subprocess.run(
        [sys.executable, "-m", __name__, str(model_dir), str(out)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AsrflowError(
            f"could not build the OpenVINO encoder of {model_dir}: {tail} "
            "(ASRFLOW_ENCODER=ctranslate2 uses CTranslate2's encoder instead)."
        )


def _build_ir(model_dir: Path, out: Path) -> None:
    ov = _import_openvino()
    import torch
    from transformers import WhisperForConditionalGeneration

    from asrflow.convert import ct2_state_dict, read_ct2_model, whisper_configs

    variables = read_ct2_model(model_dir / "model.bin")
    config, _ = whisper_configs(
        variables,
        json.loads((model_dir / "config.json").read_text()),
        json.loads((model_dir / "tokenizer.json").read_text()),
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = {
        k: torch.from_numpy(np.array(a, dtype=np.float32))
        for k, a in ct2_state_dict(variables).items()
        if k.startswith("model.encoder.")
    }
    model.load_state_dict(state, strict=False, assign=True)

    class Encoder(torch.nn.Module):
        """transformers' WhisperEncoder without its check that the input is a whole window: positions are
        sliced to the input's length, as CTranslate2's encoder does for shorter input."""

        def __init__(self):
            super().__init__()
            self.encoder = model.model.encoder.float().eval().requires_grad_(False)

        def forward(self, features):
            encoder = self.encoder
            x = torch.nn.functional.gelu(encoder.conv1(features))
            x = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
            x = x + encoder.embed_positions.weight[: x.shape[1]]
            for layer in encoder.layers:
                x = layer(x, None)
            return encoder.layer_norm(x)

    mels = config.num_mel_bins
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes: the graph is traced with dynamic ones
        graph = ov.convert_model(
            Encoder(), example_input=torch.zeros(1, mels, 3000), input=[ov.PartialShape([-1, mels, -1])]
        )
    ov.save_model(graph, str(out / "encoder.xml"), compress_to_fp16=False)


if __name__ == "__main__":  # python -m asrflow.backends.openvino_encoder MODEL_DIR OUT_DIR (see _build_apart)
    _build_ir(Path(sys.argv[1]), Path(sys.argv[2]))
