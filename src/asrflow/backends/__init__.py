"""Backends: samples + options -> a stream of segments, behind one small protocol and a registry."""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from asrflow.errors import InvalidOptionError
from asrflow.models import ModelSource
from asrflow.options import TranscribeOptions
from asrflow.transcript import SegmentStream

# name -> "module:class"; a new backend is one new file and one line here
BACKENDS = {
    "ctranslate2": "asrflow.backends.ctranslate2:CTranslate2Backend",
    "transformers": "asrflow.backends.transformers:TransformersBackend",
}


class Backend(Protocol):
    name: str
    multilingual: bool

    def __init__(self, source: ModelSource, device: str, compute_type: str) -> None: ...

    @staticmethod
    def cuda_usable() -> bool:
        """Whether this backend's own runtime can run on a CUDA GPU here."""

    def stream(self, audio: np.ndarray, options: TranscribeOptions) -> SegmentStream:
        """Language and duration now; segments as they are decoded (a window or a batch at a time), so long
        work can show progress, stream, and be interleaved with other requests."""


def load_backend(name: str, source: ModelSource, device: str = "cpu", compute_type: str = "default") -> Backend:
    if name not in BACKENDS:
        raise InvalidOptionError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}.")
    if device not in ("cpu", "cuda"):
        raise InvalidOptionError(f"unknown device {device!r}: choose cpu or cuda.")
    module, name_ = BACKENDS[name].split(":")
    backend = getattr(importlib.import_module(module), name_)
    if device == "cuda" and not backend.cuda_usable():
        raise InvalidOptionError(
            f"device cuda: the {name} backend sees no usable CUDA GPU here (no GPU, no driver, or "
            "a CPU-only build): use --device cpu."
        )
    return backend(source, device, compute_type)
