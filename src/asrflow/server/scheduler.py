"""Fair scheduling: one model thread serves the admitted requests in turns of one decoded window each.

Each job carries the model it asked for: requests for different models take turns on the one thread (the CPU
is shared either way), and a turn decodes one job's window with that job's model, never a batch mixing models.

Every request goes through the same single path as `asrflow transcribe` (so its answer does not depend
on who else is calling); a long file advances one window per turn, so short requests are not stuck
behind it, and a request that was cancelled (timeout, disconnect) stops using the model at its next turn.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError

import numpy as np

from asrflow.errors import AsrflowError
from asrflow.options import TranscribeOptions
from asrflow.steps import END, Stepper
from asrflow.transcript import Segment

LOG = logging.getLogger("asrflow.server")
LIVE_SHARE = 0.75  # of the model's last WINDOW seconds, live work's most while file requests wait
WINDOW = 10.0
MOST_DRAFTS = 8  # drafts decoded in one batch (padded to the longest: memory grows with the batch)


class Job:
    """One clip to transcribe: its future is the answer; cancelling the future withdraws the work."""

    def __init__(
        self,
        transcriber,
        samples: np.ndarray,
        options: TranscribeOptions,
        on_segment=None,
        draft: bool = False,
        max_seconds: float | None = None,
        live: bool = False,
        probabilities: bool = False,
    ):
        self.transcriber, self.samples, self.options, self.draft = transcriber, samples, options, draft
        self.live = live  # a realtime session's turn or draft: served before file windows
        self.probabilities = probabilities  # a draft's word probabilities too (realtime's include logprobs)
        self.max_seconds = max_seconds  # the request's limit, for audio decoded here (each channel of channels=split)
        self.on_segment = on_segment
        self.future: Future = Future()
        self.stream, self.segments, self.stepper = None, [], None
        self.used = 0.0  # seconds of the model's time this job has had
        self.batch: list[Job] | None = None  # a draft, once taken: the drafts decoded with it in one turn

    def _segments(self):
        """The transcription, from the stream's creation (which decodes its first block) on: run by a Stepper."""
        self.stream = self.transcriber.stream(self.samples, self.options, max_seconds=self.max_seconds)
        self.samples = None
        yield from self.stream.segments

    def ready(self) -> bool:
        """Whether a turn now would work (not wait for its audio to be decoded); a withdrawn job is ready to go."""
        return self.future.done() or self.stepper is None or self.stepper.runnable()

    def step(self) -> bool:
        """Decode a little more (at most one window or one batch); True when the job is answered."""
        if self.stepper is None:
            self.stepper = Stepper(self._segments())
        segment: Segment | None = self.stepper.step()  # up to the next segment, or the next window's encoding
        if segment is END:
            self.future.set_result(self.stream.transcript(self.segments))
            return True
        if segment is None:  # a window's (or batch's) work that completed no segment yet
            return False
        self.segments.append(segment)
        if self.on_segment:
            self.on_segment(segment)
        return False


def _batchable(draft: Job, other: Job) -> bool:
    """Whether `other` is a draft that one batch can decode with `draft`: the same model, on its batched fast path
    for both, with the same language, task and beam (all that path reads of the options)."""
    same = ("language", "task", "beam_size", "multilingual")
    return (
        other.draft
        and other.transcriber is draft.transcriber
        and draft.transcriber.drafts_in_batches(draft.options)
        and all(getattr(other.options, name) == getattr(draft.options, name) for name in same)
    )


class Scheduler:
    def __init__(self, on_turn=None):
        self.on_turn = on_turn  # hears the seconds each turn took (the model's busy time)
        self.jobs: deque[Job] = deque()
        self.wakeup = threading.Condition()
        self.recent: deque[tuple[float, float, bool]] = deque()  # (ended, seconds, live) of the last WINDOW's turns
        threading.Thread(target=self._run, name="asrflow-scheduler", daemon=True).start()

    def submit(self, transcriber, samples: np.ndarray, options: TranscribeOptions, **details) -> Job:
        """A Job (its `details`: on_segment, draft, max_seconds, live, probabilities), queued for its turns."""
        job = Job(transcriber, samples, options, **details)
        with self.wakeup:
            self.jobs.append(job)
            self.wakeup.notify()
        return job

    def depth(self) -> int:
        return len(self.jobs)

    def live_waiting(self) -> bool:
        """Whether a live turn (not a draft) waits for the model, or a file request does while live work has had
        its share of it: a session's next draft waits (drafts are a courtesy, dropped first when live work
        outgrows the model)."""
        with self.wakeup:
            if any(job.live and not job.draft for job in self.jobs):
                return True
            return any(not job.live for job in self.jobs) and self.live_share() >= LIVE_SHARE

    def live_share(self) -> float:
        """The share of the model's time over the last WINDOW seconds that live work had."""
        with self.wakeup:
            while self.recent and self.recent[0][0] < time.perf_counter() - WINDOW:
                self.recent.popleft()
            busy = sum(seconds for _, seconds, _ in self.recent)
            return sum(seconds for _, seconds, live in self.recent if live) / busy if busy else 0.0

    def _run(self) -> None:
        try:
            while True:
                job = self._next()
                self._drafts(job) if job.draft else self._turn(job)
        except BaseException:
            LOG.critical("the scheduler stopped: exiting for the supervisor to restart the server", exc_info=True)
            os._exit(70)

    def _next(self) -> Job:
        """Live work first: a realtime session's turns, then its drafts, go ahead of file windows, a live caption
        being late as soon as it waits; once live work has had LIVE_SHARE of the model's last WINDOW seconds, file
        windows go first until it has less (more sessions than the model keeps up with must not starve file
        requests: every live job is new, so least attained service alone would always serve it first). Within
        each, the job that has had the least of the model so far: a short request goes ahead of long ones at
        once, and long ones share what is left in turns (ties: first come). Jobs waiting for their audio to be
        decoded are passed over until it is (checked every 20 ms)."""
        with self.wakeup:
            while not (ready := [job for job in self.jobs if job.ready()]):
                self.wakeup.wait(0.02 if self.jobs else None)
            over = self.live_share() >= LIVE_SHARE
            job = min(ready, key=lambda j: (j.live == over, j.draft, j.used))
            self.jobs.remove(job)
            if job.draft:  # with other drafts for the same model and settings: one batch
                others = [other for other in ready if other is not job and _batchable(job, other)]
                job.batch = [job] + others[: MOST_DRAFTS - 1]
                for other in job.batch[1:]:
                    self.jobs.remove(other)
            return job

    def _drafts(self, job: Job) -> None:
        """Live hypotheses (a few seconds each, a quick guess) answered in one turn, decoded as one batch (at most
        MOST_DRAFTS): sessions' drafts waiting together share the encoder's and the decoder's calls. A failure
        fails that batch's drafts (each session's turn still completes with its final text)."""
        batch, job.batch = [j for j in job.batch if not j.future.done()], None  # withdrawn ones dropped
        if not batch:
            return
        started = time.perf_counter()
        try:
            drafts = job.transcriber.drafts(
                [j.samples for j in batch], job.options, any(j.probabilities for j in batch)
            )
        except Exception as e:
            if not isinstance(e, AsrflowError):
                LOG.exception("a live hypothesis failed")
            drafts = [e] * len(batch)
        finally:
            seconds = time.perf_counter() - started
            with self.wakeup:
                self.recent.append((time.perf_counter(), seconds, True))
            if self.on_turn:
                self.on_turn(seconds)
        for j, draft in zip(batch, drafts):
            j.used += seconds / len(batch)
            try:
                if isinstance(draft, Exception):
                    j.future.set_exception(draft)
                else:
                    j.future.set_result(draft if j.probabilities else draft._replace(probabilities=None))
            except InvalidStateError:  # cancelled meanwhile
                pass

    def _turn(self, job: Job) -> None:
        """One step of one job; a failure fails that job only, and a cancelled job is dropped here."""
        if job.future.done():
            if job.stepper is not None:
                job.stepper.close()  # its generator unwinds: decoders stopped, files closed
            return
        started = time.perf_counter()
        try:
            finished = job.step()
        except InvalidStateError:  # cancelled while its last step ran
            return
        except Exception as e:
            if not isinstance(e, AsrflowError) and not job.future.cancelled():  # cancelled: its decoder stopped
                LOG.exception("a transcription failed")
            try:
                job.future.set_exception(e)
            except InvalidStateError:
                pass
            return
        finally:
            ended = time.perf_counter()
            seconds = ended - started
            job.used += seconds
            with self.wakeup:
                self.recent.append((ended, seconds, job.live))
            if self.on_turn:
                self.on_turn(seconds)
        if not finished:
            with self.wakeup:
                self.jobs.append(job)
