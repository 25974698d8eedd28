"""An admitted clip decoded ahead of the model, in a thread of its own, at most one block ahead.

The model transcribes a block (blocks.py: 10 minutes) at a time. Before a request is scheduled its first block is
decoded (what is not audio fails then, with a 400, as before); while the model works on one block the next is
decoded, so the model thread never waits on a decoder (decoding ten minutes of mp3 takes seconds, which would
stall every other request's turn). Memory holds about two blocks per clip instead of the whole clip: a 2-hour
upload takes what a 20-minute one does. An upload stays spooled on disk until it is decoded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np

from asrflow import steps
from asrflow.audio import SAMPLE_RATE, stream_audio
from asrflow.blocks import BLOCK_SECONDS
from asrflow.errors import AudioDecodeError, AudioTooLongError

CHUNK = 10 * SAMPLE_RATE  # samples handed to the model at once
BLOCK = int(BLOCK_SECONDS * SAMPLE_RATE)
END = object()


class Stopped(Exception):
    """The clip's request is over (answered, timed out, gone): the decoder stops."""


class DecodeAhead:
    def __init__(self, data, max_seconds: float, declared: bool, on_end: Callable[[float], None]):
        """`max_seconds`: the bound the clip was admitted with; `declared`: whether its header gave its length
        (then more audio than that is a broken file, not a long one); `on_end(seconds)` hears the decoded length."""
        self.data, self.max_seconds, self.declared, self.on_end = data, max_seconds, declared, on_end
        self.chunks: queue.Queue = queue.Queue(maxsize=BLOCK // CHUNK + 1)  # a block decoded and not yet taken
        self.stopped, self.primed = threading.Event(), threading.Event()  # primed: the first block is decoded
        self.discarded = False  # the request is over: the upload's spooled file goes when the decoder stops
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._decode, name="asrflow-decode", daemon=True)
        self.thread.start()

    def _decode(self) -> None:
        decoded, pending = 0, []
        try:
            for piece in stream_audio(self.data, max_seconds=self.max_seconds):
                pending.append(piece)
                if sum(map(len, pending)) >= CHUNK:
                    decoded += self._put(np.concatenate(pending))
                    pending = []
                    if decoded >= BLOCK:
                        self.primed.set()
            decoded += self._put(np.concatenate(pending)) if pending else 0
            self.on_end(decoded / SAMPLE_RATE)
            self.primed.set()
            self._put(END)
        except Stopped:
            pass
        except AudioTooLongError as e:
            self._fail(
                AudioDecodeError("the file holds more audio than its header declares: re-encode it.")
                if self.declared
                else e
            )
        except Exception as e:  # noqa: BLE001 - the request hears of it
            self._fail(e)
        finally:
            if self.discarded:
                self._close_data()

    def _fail(self, error: Exception) -> None:
        self.error = error
        self.primed.set()
        try:
            self._put(error)
        except Stopped:
            pass

    def _put(self, item) -> int:
        while not self.stopped.is_set():
            try:
                self.chunks.put(item, timeout=0.5)
                return len(item) if isinstance(item, np.ndarray) else 0  # END or the decoder's error
            except queue.Full:
                continue
        raise Stopped

    def _take(self):
        steps.wait(lambda: not self.chunks.empty() or self.stopped.is_set())  # the model is not held meanwhile
        while not self.stopped.is_set():
            try:
                item = self.chunks.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, Exception):
                raise item
            return item
        raise Stopped

    def check(self) -> None:
        """Wait for the first block: what is not audio fails here, before the request is scheduled."""
        self.primed.wait()
        if self.error is not None:
            raise self.error

    def pieces(self) -> Iterator[np.ndarray]:
        """The samples, as the model takes them (raises the decoder's error where it met it)."""
        while (item := self._take()) is not END:
            yield item

    def encoded(self):
        """The encoded audio itself, from its start, once the decoder has stopped (for a reader of its own)."""
        self.close()
        self.thread.join()
        if hasattr(self.data, "seek"):
            self.data.seek(0)
        return self.data

    def close(self) -> None:
        self.stopped.set()

    def discard(self) -> None:
        """The request is over: stop decoding and close the upload (its spooled file leaves the disk), by the
        decoder's thread as it stops, or here if it has stopped already."""
        self.discarded = True
        self.close()
        if not self.thread.is_alive():
            self._close_data()

    def _close_data(self) -> None:
        if hasattr(self.data, "close"):
            self.data.close()
