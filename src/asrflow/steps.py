"""Steps of work a window long, for a scheduler that shares one model among requests.

A transcription is a generator of segments, but not every window of work yields one: a window of noise that
Whisper skips as silence yields nothing, and faster-whisper's loop goes straight on to the next, so one `next()`
could decode a whole block. Each encoding and each decoding (a window, or a batch of windows; each fallback
temperature) calls `checkpoint()` first; under a `Stepper` (a generator run in a thread of its own, handed the
model one step at a time), a checkpoint after work ends the step. Waiting for input that another thread prepares
(decoded audio) ends the step too (`wait`, `ahead`): the model is never held by a decoder, however slow the file is
to decode. Elsewhere (the CLI, the library) these do nothing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

_running = threading.local()
END = object()  # Stepper.step: the iterator is exhausted


class Closed(BaseException):
    """Raised inside a closed Stepper's thread to unwind its generator (BaseException: no handler swallows it)."""


def checkpoint() -> None:
    """Before each encoding: under a Stepper that has done work in this step, wait for the next step."""
    stepper = getattr(_running, "stepper", None)
    if stepper is not None:
        stepper.checkpoint()


def wait(ready: Callable[[], bool]) -> None:
    """Before blocking on input another thread prepares: under a Stepper, the step ends, and the next one is not
    handed out until `ready()`; waiting never holds the model."""
    stepper = getattr(_running, "stepper", None)
    if stepper is not None and not ready():
        stepper.ready = ready
        stepper._hand(("tick", None))


def ahead(iterator: Iterator, depth: int = 8) -> Iterator:
    """Under a Stepper, `iterator` (a decoder) runs in a thread of its own, at most `depth` items ahead, and waiting
    for it ends the step; elsewhere, `iterator` itself."""
    if getattr(_running, "stepper", None) is None:
        return iterator
    return _ahead(iterator, depth)


def _ahead(iterator: Iterator, depth: int) -> Iterator:
    items: queue.Queue = queue.Queue(depth)
    stopped = threading.Event()

    def put(item) -> bool:
        while not stopped.is_set():
            try:
                items.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in iterator:
                if not put(("item", item)):
                    break
            else:
                put(("end", None))
        except BaseException as e:  # noqa: BLE001 - raised where the items are taken
            put(("error", e))
        finally:
            getattr(iterator, "close", lambda: None)()

    threading.Thread(target=run, name="asrflow-ahead", daemon=True).start()
    try:
        while True:
            wait(lambda: not items.empty())
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stopped.set()  # the consumer is gone (done, failed or closed): the decoder stops at its next item


class Stepper:
    """Runs `iterator` in a thread of its own, one step per `step()` call: until its next item, or until its next
    checkpoint after an encoding. The caller's thread waits meanwhile, so the work is as serial as if it ran there."""

    def __init__(self, iterator: Iterator):
        self.iterator, self.encodings, self.closing = iterator, 0, False
        self.ready: Callable[[], bool] | None = None  # set while the iterator waits for input (`wait`)
        self.resume, self.paused = threading.Semaphore(0), threading.Semaphore(0)
        self.result: tuple[str, object] = ("end", None)
        self.thread = threading.Thread(target=self._run, name="asrflow-step", daemon=True)
        self.thread.start()

    def step(self):
        """The next item; None where the step ended at a checkpoint; END once exhausted (its error is raised)."""
        self.encodings, self.ready = 0, None
        self.resume.release()
        self.paused.acquire()
        kind, value = self.result
        if kind == "error":
            raise value
        return END if kind == "end" else value

    def runnable(self) -> bool:
        """Whether a step now would work, not wait for input."""
        ready = self.ready
        return ready is None or ready()

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
