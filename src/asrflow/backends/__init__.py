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

    def stream(self, audio: np.ndarray, options: TranscribeOptions) -> SegmentStream:
        """Language and duration now; segments as they are decoded (a window or a batch at a time), so long
        work can show progress, stream, and be interleaved with other requests."""


def load_backend(name: str, source: ModelSource, device: str = "cpu", compute_type: str = "default") -> Backend:
    if name not in BACKENDS:
        raise InvalidOptionError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}.")
    if device not in ("cpu", "cuda"):
        raise InvalidOptionError(f"unknown device {device!r}: choose cpu or cuda.")
    if device == "cuda" and not cuda_usable(name):
        raise InvalidOptionError(f"device cuda: the {name} backend sees no usable CUDA GPU here (no GPU, no driver, or "
                                 "a CPU-only build): use --device cpu.")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(source, device, compute_type)


def cuda_usable(backend: str) -> bool:
    """Whether the backend's own runtime can run on a CUDA GPU here."""
    if backend == "ctranslate2":
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    import torch

    return torch.cuda.is_available()
