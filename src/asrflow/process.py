"""Settings of the whole process: asrflow's entry points make them (the CLI, the server, the Spark worker), and
importing asrflow or loading a model never does. A program of yours gets the same with one call,
`asrflow.configure_process()`, before it loads a model."""

from __future__ import annotations

import sys

from asrflow.blocks import keep_heap_flat


def configure_process() -> None:
    """Long audio in flat memory (glibc's mmap threshold fixed, blocks.keep_heap_flat), and no OpenVINO telemetry:
    importing openvino makes its telemetry package write a client id under ~/intel (and its model converter
    report to Google Analytics) unless that package cannot be imported, when it falls back to its own no-op stub.
    Hiding it only works before openvino is first imported."""
    keep_heap_flat()
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)
