"""CTranslate2's decoder on a CPU: a worker per core, each batch split among them.

A decoding step of a small Whisper is many small operations (a few hundred rows at most), and sharing each one
among threads costs more in waking them than it saves. Measured on this project's 2-core machine, one decoding
step of one clip (beam 5): tiny.en 7.6 ms with one thread against 12.9 ms with two, base 17 against 24; two
half-batches decoded at once, a thread each, took 0.6-0.75x the time of the whole batch on two threads, with the
same tokens. So with 8-bit weights, where OpenVINO encodes (CTranslate2's encoder, large matrix products, does
want every thread), the model runs a worker per core with one thread each (CTranslate2's `inter_threads`; the
workers share the weights), and a batch's `generate` is split into as many parts, run at once. float32's matrix
products do gain from threads (a step of five clips: 26 ms on two, 44 on one), so float32 keeps one worker with
every thread.
"""

from __future__ import annotations

import os

import ctranslate2
import numpy as np

from asrflow.steps import checkpoint

MOST_WORKERS = 8  # the default batch: more workers than items would idle


def cores() -> int:
    """The cores this process should compute on: OMP_NUM_THREADS where it is set (as torch and OpenMP read it),
    else the CPUs its affinity allows (a container's cpuset, `taskset`), not all the machine has."""
    try:  # OpenMP's form for nested levels, "4,2": the outer level's
        wanted = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        wanted = 0
    return min(wanted, 1024) if wanted > 0 else len(os.sched_getaffinity(0)) or 1


def layout(compute_type: str, encoder_is_ctranslate2: bool) -> tuple[int, int]:
    """(workers, threads per worker) for a CPU model."""
    n = cores()
    if encoder_is_ctranslate2 or not compute_type.startswith("int8"):
        return 1, n
    workers = min(n, MOST_WORKERS)
    return workers, max(1, n // workers)


class StandIn:
    """Stands in for CTranslate2's Whisper model (held as `_model`): a subclass replaces what it changes, and
    everything else is the model's."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        if name.startswith("_"):  # not set yet (a copy, a pickle): never look it up on the model
            raise AttributeError(name)
        return getattr(self._model, name)


class Workers(StandIn):
    """`generate` on a batch runs in up to `parts` pieces at once, the results in the batch's order."""

    def __init__(self, model, parts: int):
        super().__init__(model)
        self._parts = parts

    def generate(self, features, prompts, **kwargs):
        checkpoint()  # each decoding (each fallback temperature's) is a step of its own under a server's scheduler
        parts = min(self._parts, len(prompts))
        if parts < 2 or kwargs.get("asynchronous"):
            return self._model.generate(features, prompts, **kwargs)
        pieces = np.array_split(np.asarray(features), parts)  # views of whole rows: nothing copied
        views = [
            ctranslate2.StorageView.from_array(np.ascontiguousarray(piece)) for piece in pieces
        ]  # kept until the results are in
        bounds = np.cumsum([0] + [len(piece) for piece in pieces])
        jobs = [
            self._model.generate(view, prompts[a:b], asynchronous=True, **kwargs)
            for view, a, b in zip(views, bounds, bounds[1:])
        ]
        return [result.result() for job in jobs for result in job]
