"""Convert Whisper checkpoints between CTranslate2 and transformers formats, losslessly."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np

from asrflow.errors import InvalidOptionError, ModelNotFoundError

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_LANG_COUNT = {51864: 99, 51865: 99, 51866: 100}  # vocab size -> number of language tokens


def read_ct2_model(path: str | Path) -> dict[str, np.ndarray]:
    """Read a CTranslate2 `model.bin` (format version 6) into named numpy arrays."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        value = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value[0]

    def take_string() -> str:
        nonlocal pos
        size = take("<H")
        text = data[pos : pos + size - 1].decode()
        pos += size
        return text

    version = take("<I")
    if version != 6:
        raise ModelNotFoundError(f"{path} is a CTranslate2 model of format {version}; asrflow reads format 6.")
    spec = take_string()
    if spec != "WhisperSpec":
        raise ModelNotFoundError(f"{path} holds a {spec}, not a Whisper model.")
    take("<I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = take_string()
        shape = [take("<I") for _ in range(take("<B"))]
        dtype_id = take("<B")
        size = take("<I")
        if dtype_id not in _CT2_DTYPES:
            raise ModelNotFoundError(
                f"{path}: variable {name} has a dtype asrflow cannot convert (id {dtype_id}); convert the model with float16 weights."
            )
        if dtype_id in (1, 2) and len(shape) >= 2:  # int8/int16 matrices: quantized weights (scalars are flags)
            raise InvalidOptionError(
                f"{path} holds quantized ({np.dtype(_CT2_DTYPES[dtype_id]).name}) weights, which cannot be converted "
                "back to transformers without loss: convert from a float16 or float32 CTranslate2 model, or use the "
                "original transformers checkpoint."
            )
        variables[name] = np.frombuffer(
            data, _CT2_DTYPES[dtype_id], size // np.dtype(_CT2_DTYPES[dtype_id]).itemsize, pos
        ).reshape(shape)
        pos += size
    for _ in range(take("<I")):
        alias, target = take_string(), take_string()
        variables[alias] = variables[target]
    return variables


def _layer_count(variables: dict, side: str) -> int:
    return len({k.split("/")[1] for k in variables if re.match(rf"{side}/layer_\d+/", k)})


def _split(array: np.ndarray, parts: int) -> list[np.ndarray]:
    return np.split(array, parts, axis=0)


def _attention(v: dict, src: str, dst: str, fused: str, out: dict) -> None:
    """Split CTranslate2's fused projections back into q/k/v (Whisper's k has no bias)."""
    names = {"qkv": ["q_proj", "k_proj", "v_proj"], "kv": ["k_proj", "v_proj"], "q": ["q_proj"]}[fused]
    layer = {"qkv": "linear_0", "kv": "linear_1", "q": "linear_0"}[fused]
    for proj, w, b in zip(
        names, _split(v[f"{src}/{layer}/weight"], len(names)), _split(v[f"{src}/{layer}/bias"], len(names))
    ):
        out[f"{dst}.{proj}.weight"] = w
        if proj != "k_proj":
            out[f"{dst}.{proj}.bias"] = b


def _layer_norm(v, src, dst, out):
    out[f"{dst}.weight"] = v[f"{src}/gamma"]
    out[f"{dst}.bias"] = v[f"{src}/beta"]


def _linear(v, src, dst, out):
    out[f"{dst}.weight"] = v[f"{src}/weight"]
    out[f"{dst}.bias"] = v[f"{src}/bias"]


def ct2_state_dict(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map CTranslate2 Whisper variables to `WhisperForConditionalGeneration` names."""
    out: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        for i in range(_layer_count(v, side)):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _attention(v, f"{src}/self_attention", f"{dst}.self_attn", "qkv", out)
            _linear(v, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj", out)
            _layer_norm(v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", out)
            if side == "decoder":
                _attention(v, f"{src}/attention", f"{dst}.encoder_attn", "q", out)
                _attention(v, f"{src}/attention", f"{dst}.encoder_attn", "kv", out)
                _linear(v, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj", out)
                _layer_norm(v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", out)
            _linear(v, f"{src}/ffn/linear_0", f"{dst}.fc1", out)
            _linear(v, f"{src}/ffn/linear_1", f"{dst}.fc2", out)
            _layer_norm(v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", out)
        _layer_norm(v, f"{side}/layer_norm", f"model.{side}.layer_norm", out)
    for conv in ("conv1", "conv2"):
        _linear(v, f"encoder/{conv}", f"model.encoder.{conv}", out)
    out["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    out["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    out["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    return out


def _special_ids(tokenizer_json: dict) -> dict[str, int]:
    return {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}


def whisper_configs(variables: dict, ct2_config: dict, tokenizer_json: dict):
    """The model and generation configs of a CTranslate2 Whisper model, from its own files."""
    from transformers import GenerationConfig, WhisperConfig

    vocab, d_model = variables["decoder/embeddings/weight"].shape
    ids = _special_ids(tokenizer_json)
    eos, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    multilingual = vocab >= 51865
    n_lang = _LANG_COUNT.get(vocab, 99)
    langs = [t for t, i in sorted(ids.items(), key=lambda x: x[1]) if sot < i <= sot + n_lang]
    heads = lambda side: int(variables[f"{side}/num_heads"]) if f"{side}/num_heads" in variables else d_model // 64
    config = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_layer_count(variables, "encoder"),
        decoder_layers=_layer_count(variables, "decoder"),
        encoder_attention_heads=heads("encoder"),
        decoder_attention_heads=heads("decoder"),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=eos,
        bos_token_id=eos,
        eos_token_id=eos,
        decoder_start_token_id=sot,
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [220, eos]),
        tie_word_embeddings=True,
        dtype="float16",
    )
    no_timestamps = ids["<|notimestamps|>"]
    generation = GenerationConfig(
        alignment_heads=ct2_config.get("alignment_heads", []),
        begin_suppress_tokens=config.begin_suppress_tokens,
        suppress_tokens=config.suppress_tokens,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        decoder_start_token_id=sot,
        max_length=config.max_target_positions,
        no_timestamps_token_id=no_timestamps,
        prev_sot_token_id=ids["<|startofprev|>"],
        is_multilingual=multilingual,
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )
    if multilingual:
        generation.lang_to_id = {t: ids[t] for t in langs}
        generation.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    else:
        generation.forced_decoder_ids = [[1, no_timestamps]]
    return config, generation


def ct2_to_transformers(src: str | Path, dst: str | Path) -> Path:
    """Write a CTranslate2 Whisper model as a transformers directory, keeping fp16 weights."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    src, dst = Path(src), Path(dst)
    for needed in ("model.bin", "config.json", "tokenizer.json"):
        if not (src / needed).is_file():
            raise ModelNotFoundError(f"{src} is not a CTranslate2 Whisper model: {needed} is missing.")
    variables = read_ct2_model(src / "model.bin")
    ct2_config = json.loads((src / "config.json").read_text())
    tokenizer_json = json.loads((src / "tokenizer.json").read_text())
    config, generation = whisper_configs(variables, ct2_config, tokenizer_json)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.array(a, dtype=np.float16)) for k, a in ct2_state_dict(variables).items()}
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    model.generation_config = generation
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.copy(src / "tokenizer.json", tmp / "tokenizer.json")
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tmp / "tokenizer.json"), pad_token="<|endoftext|>")
    tokenizer.save_pretrained(tmp)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


def transformers_to_ct2(src: str | Path, dst: str | Path, quantization: str | None = "float16") -> Path:
    """Convert a transformers Whisper directory with CTranslate2's own converter."""
    from ctranslate2.converters import TransformersConverter

    copy = [f for f in ("tokenizer.json", "preprocessor_config.json") if (Path(src) / f).is_file()]
    TransformersConverter(str(src), copy_files=copy, load_as_float16=True).convert(
        str(dst), quantization=quantization, force=True
    )
    return Path(dst)
