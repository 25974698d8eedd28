"""Settings of the whole process: asrflow's entry points make them (the CLI, the server, the Spark worker), and
importing asrflow or loading a model never does. A program of yours gets the same with one call,
`asrflow.configure_process()`, before it loads a model."""

from __future__ import annotations

from asrflow.blocks import keep_heap_flat


def configure_process() -> None:
    """Long audio in flat memory: glibc's mmap threshold fixed (blocks.keep_heap_flat)."""
    keep_heap_flat()
