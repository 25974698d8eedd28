"""Cross-request batching: clips that arrive together go to the model in one call, grouped by options."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future

import numpy as np

from asrflow.audio import SAMPLE_RATE
from asrflow.options import TranscribeOptions
from asrflow.server.errors import HTTPError

LOG = logging.getLogger("asrflow.server")


class Batcher:
    """Requests that arrive together go to the model in one call (up to a batch size, within a short wait)."""

    def __init__(self, transcriber, max_batch_size: int, max_wait_s: float, queue_size: int,
                 max_audio_s: float | None = None):
        self.transcriber = transcriber
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.admission = threading.Lock()  # only submitters put; the batcher only takes, which never refuses them
        self.max_audio_s, self.admitted_s = max_audio_s, 0.0  # audio admitted and not yet answered, in seconds
        threading.Thread(target=self._run, name="asrflow-batcher", daemon=True).start()

    def submit(self, samples: np.ndarray, options: TranscribeOptions, on_segment=None) -> Future:
        return self.submit_all([samples], options, on_segment)[0]

    def submit_all(self, clips: list[np.ndarray], options: TranscribeOptions, on_segment=None) -> list[Future]:
        """Queue every clip of one request, or none: a request is admitted or refused whole."""
        futures = [Future() for _ in clips]
        seconds = sum(len(c) for c in clips) / SAMPLE_RATE
        with self.admission:
            over = self.max_audio_s is not None and self.admitted_s + seconds > self.max_audio_s
            if over or self.queue.maxsize - self.queue.qsize() < len(clips):
                raise HTTPError(503, "the server is at capacity: retry shortly.", headers={"Retry-After": "2"})
            self.admitted_s += seconds
            for samples, future in zip(clips, futures):
                future.add_done_callback(lambda _, s=len(samples) / SAMPLE_RATE: self._release(s))
                self.queue.put_nowait((samples, options, on_segment, future))
        return futures

    def _release(self, seconds: float) -> None:
        with self.admission:
            self.admitted_s = max(0.0, self.admitted_s - seconds)

    def _run(self):
        while True:
            batch = [self.queue.get()]
            try:
                self._collect_and_serve(batch)
            except Exception as e:  # noqa: BLE001 - nothing may stop the loop: fail this batch, serve the next
                LOG.exception("batch failed")
                for item in batch:
                    if not item[3].done():
                        item[3].set_exception(e)

    def _collect_and_serve(self, batch: list):
        """Wait briefly for company, then serve the batch grouped by options (batch is filled in place)."""
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(self.queue.get(timeout=left))
            except queue.Empty:
                break
        groups = defaultdict(list)
        for item in batch:
            if item[3].set_running_or_notify_cancel():  # skip requests that timed out while queued
                groups[(item[1], item[2] is None)].append(item)
        for (options, _), items in groups.items():
            self._serve(items, options)

    def _serve(self, items, options):
        try:
            if len(items) == 1:
                samples, _, on_segment, future = items[0]
                results = [self.transcriber.transcribe(samples, options, progress=on_segment)]
            else:
                results = self.transcriber.transcribe_batch([item[0] for item in items], options)
        except Exception as e:  # noqa: BLE001 - every caller must hear back
            for item in items:
                item[3].set_exception(e)
            return
        for item, result in zip(items, results):
            item[3].set_result(result)
