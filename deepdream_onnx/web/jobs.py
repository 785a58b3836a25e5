"""The dream queue: first in, first out, run by a fixed number of worker threads.

Workers call the recipe (deepdream, zoom_frames) as the command line does, with a
progress callback that records each step and raises Cancelled once the dream is
cancelled, so a running dream stops within one gradient step, and an on_octave callback
that writes each octave's dream as the preview.  Everything a client sees of a dream is
read under one lock; whoever follows a dream (the SSE streams) registers a callback that
is called on each change.
"""

import logging
import secrets
import threading
from collections import OrderedDict, deque

from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.web import dreaming
from deepdream_onnx.web.limits import MAX_JOBS, MAX_QUEUED

FINAL = ("done", "failed", "cancelled")

log = logging.getLogger("deepdream_onnx.web")


class Cancelled(Exception):
    """Raised inside a dream's callbacks to stop it."""


class QueueFull(Exception):
    pass


class NotCancellable(Exception):
    pass


class Job:
    def __init__(self, spec):
        self.id = secrets.token_hex(8)
        self.spec = spec
        self.status = "queued"
        self.message = None
        self.progress = None
        self.preview_version = 0
        self.cancel = threading.Event()
        self.evicted = False

    @property
    def mode(self):
        return self.spec.mode


class JobQueue:
    def __init__(self, store, workers=1, max_jobs=MAX_JOBS, max_queued=MAX_QUEUED):
        self.store = store
        self.workers = workers
        self.max_jobs, self.max_queued = max_jobs, max_queued
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jobs = OrderedDict()    # id -> Job, oldest first
        self._queue = deque()         # queued Jobs, next first
        self._listeners = {}          # id -> set of callables, called on each change
        self._threads = []
        self._stopping = False

    # ----------------------------------------------------------------- lifecycle

    def start(self):
        with self._lock:
            if self._threads or self._stopping:
                return
            self._threads = [threading.Thread(target=self._work, name=f"dream-worker-{k}", daemon=True)
                             for k in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def stop(self, wait=True, timeout=10.0):
        """Cancel every dream, queued or running (which ends the event streams), and with
        wait, wait for the workers to see it."""
        with self._lock:
            self._stopping = True
            for job in self._jobs.values():
                if job.status not in FINAL:
                    self._finish(job, "cancelled", "the server stopped")
            self._queue.clear()
            self._wake.notify_all()
        if wait:
            for thread in self._threads:
                thread.join(timeout)

    # ----------------------------------------------------------------- requests

    def submit(self, spec):
        """Queue a checked DreamSpec; returns (job id, its position: how many wait before it)."""
        self.start()
        job = Job(spec)
        with self._lock:
            if self._stopping:
                raise QueueFull("the server is stopping")
            if len(self._queue) >= self.max_queued:
                raise QueueFull(f"{len(self._queue)} dreams are waiting already; try again when some are done")
            self._jobs[job.id] = job
            self._queue.append(job)
            position = len(self._queue) - 1
            self._forget_old()
            self._wake.notify()
        return job.id, position

    def status(self, job_id):
        """The dream as the API shows it (a dict), or None for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else self._describe(job)

    def state(self, job_id):
        """(status dict, preview version) read together, or (None, 0)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return (None, 0) if job is None else (self._describe(job), job.preview_version)

    def file(self, job_id, name):
        """(status dict, path of one of the dream's files); the path only while the dream has it."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None, None
            return self._describe(job), None if job.evicted else self.store.path(job.id, name)

    def cancel(self, job_id):
        """Cancel a queued or running dream; KeyError if unknown, NotCancellable if finished."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if job.status in FINAL:
                raise NotCancellable(f"dream {job_id} is {job.status} already")
            if job.status == "queued":
                self._queue.remove(job)
                self._queued_moved()
            # A running dream notices at its next step; it is cancelled for the client now.
            self._finish(job, "cancelled", None)
            return self._describe(job)

    def subscribe(self, job_id, callback):
        with self._lock:
            if job_id not in self._jobs:
                return False
            self._listeners.setdefault(job_id, set()).add(callback)
            return True

    def unsubscribe(self, job_id, callback):
        with self._lock:
            listeners = self._listeners.get(job_id)
            if listeners is not None:
                listeners.discard(callback)
                if not listeners:
                    del self._listeners[job_id]

    # ----------------------------------------------------------------- inside the lock

    def _describe(self, job):
        position = self._queue.index(job) if job.status == "queued" else None
        return {
            "id": job.id, "status": job.status, "position": position,
            "progress": None if job.progress is None else dict(job.progress),
            "message": job.message, "params": dict(job.spec.echo),
            "has_preview": job.preview_version > 0 and not job.evicted, "mode": job.mode,
        }

    def _changed(self, job):
        for callback in list(self._listeners.get(job.id, ())):
            callback()

    def _queued_moved(self):
        for job in self._queue:
            self._changed(job)

    def _finish(self, job, status, message):
        job.status, job.message = status, message
        job.cancel.set()
        job.spec = job.spec.without_images()
        self._changed(job)

    def _forget_old(self):
        """Forget the oldest finished dreams beyond max_jobs, and their files."""
        excess = len(self._jobs) - self.max_jobs
        for job in [j for j in self._jobs.values() if j.status in FINAL][:max(0, excess)]:
            del self._jobs[job.id]
            self._listeners.pop(job.id, None)
            self.store.remove(job.id)

    # ----------------------------------------------------------------- workers

    def _work(self):
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                job = self._queue.popleft()
                job.status = "running"
                spec = job.spec
                self._changed(job)
                self._queued_moved()
            try:
                self._run(job, spec)
                status, message = "done", None
            except Cancelled:
                status, message = "cancelled", None
            except DeepDreamError as e:
                status, message = "failed", " ".join(str(e).split())
            except Exception as e:  # a bug or an exhausted machine: the server goes on
                log.exception("dream %s failed", job.id)
                status, message = "failed", f"internal error: {' '.join(f'{type(e).__name__}: {e}'.split())}"
            self.store.touch(job.id)
            with self._lock:
                if job.status == "running":  # else it was cancelled meanwhile
                    if status == "done" and job.progress is not None:
                        job.progress.update(done=job.progress["total"], eta_s=0.0)
                    self._finish(job, status, message)
                keep = {j.id for j in self._jobs.values() if j.status not in FINAL}
            self._evict(keep)

    def _evict(self, keep):
        evicted = self.store.evict(keep)
        with self._lock:
            for job_id in evicted:
                job = self._jobs.get(job_id)
                if job is not None:
                    job.evicted = True
                    if job.status == "done":
                        job.message = "the result was evicted from the server's cache; dream it again"
                    self._changed(job)

    def _run(self, job, spec):
        dreaming.run(spec, self.store.job_dir(job.id), _Reporter(self, job))


class _Reporter:
    """What a running dream tells its job: steps (progress) and octaves (previews)."""

    def __init__(self, queue, job):
        self.queue, self.job = queue, job

    def check(self):
        if self.job.cancel.is_set():
            raise Cancelled()

    def progress(self, values):
        with self.queue._lock:
            self.job.progress = values
            self.queue._changed(self.job)

    def preview(self):
        with self.queue._lock:
            self.job.preview_version += 1
            self.queue._changed(self.job)
