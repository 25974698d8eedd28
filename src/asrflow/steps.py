"""Steps of work a window long, for a scheduler that shares one model among requests.

A transcription is a generator of segments, but not every window of work yields one: a window of noise that
Whisper skips as silence yields nothing, and faster-whisper's loop goes straight on to the next, so one `next()`
could decode a whole block. Each encoding (a window, or a batch of windows) calls `checkpoint()` first; under a
`Stepper` (a generator run in a thread of its own, handed the model one step at a time), a checkpoint after work
ends the step. Elsewhere (the CLI, the library) it does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

_running = threading.local()
END = object()  # Stepper.step: the iterator is exhausted


class Closed(BaseException):
    """Raised inside a closed Stepper's thread to unwind its generator (BaseException: no handler swallows it)."""


def checkpoint() -> None:
    """Before each encoding: under a Stepper that has done work in this step, wait for the next step."""
    stepper = getattr(_running, "stepper", None)
    if stepper is not None:
        stepper.checkpoint()


class Stepper:
    """Runs `iterator` in a thread of its own, one step per `step()` call: until its next item, or until its next
    checkpoint after an encoding. The caller's thread waits meanwhile, so the work is as serial as if it ran there."""

    def __init__(self, iterator: Iterator):
        self.iterator, self.encodings, self.closing = iterator, 0, False
        self.resume, self.paused = threading.Semaphore(0), threading.Semaphore(0)
        self.result: tuple[str, object] = ("end", None)
        self.thread = threading.Thread(target=self._run, name="asrflow-step", daemon=True)
        self.thread.start()

    def step(self):
        """The next item; None where the step ended at a checkpoint; END once exhausted (its error is raised)."""
        self.encodings = 0
        self.resume.release()
        self.paused.acquire()
        kind, value = self.result
        if kind == "error":
            raise value
        return END if kind == "end" else value

    def close(self) -> None:
        """Unwind the generator (its thread ends); for a stepper not yet exhausted."""
        if self.thread.is_alive():
            self.closing = True
            self.resume.release()

    def checkpoint(self) -> None:
        if self.encodings:
            self._hand(("tick", None))
        self.encodings += 1

    def _hand(self, result: tuple[str, object]) -> None:
        self.result = result
        self.paused.release()
        self.resume.acquire()
        if self.closing:
            raise Closed

    def _run(self) -> None:
        _running.stepper = self
        self.resume.acquire()
        try:
            if self.closing:
                return
            for item in self.iterator:
                self._hand(("item", item))
            self.result = ("end", None)
        except Closed:
            return
        except BaseException as e:  # noqa: BLE001 - the caller's step raises it
            self.result = ("error", e)
        self.paused.release()
