"""The background delivery worker behind `MlflowSink`: per-run queues, retries, the outbox.

Callers append ops to a run's queue under the worker's lock; one daemon thread delivers them
every `flush_interval_s` (sooner when many metrics wait, or on `flush`). A failed attempt is
retried after an exponential backoff; after `spool_after` consecutive failures every queue is
written to the outbox, and the thread keeps delivering from there. On `close` the thread tries
until a deadline, spools what is left and stops.

The worker knows MLflow only through the `Delivery` that `connect` returns (see `_delivery.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from reset_tune.tracking._delivery import Delivery, TransientError
from reset_tune.tracking.outbox import METRICS, Op, Outbox, RunRecord

_log = logging.getLogger(__name__)

# Ops handed to one delivery call (copied under the queue lock; sent without it).
_OPS_PER_SEND = 1000
# Metrics waiting in memory that wake the worker before its interval is up.
_WAKE_AT_METRICS = 1000


@dataclass(frozen=True)
class SinkStats:
    """Delivery counters. `pending` counts undelivered operations, in memory or in the outbox
    (a run still to be created counts as one); `spooled` those of them in the outbox."""

    pending: int
    spooled: int
    delivered: int  # operations handed to MLflow, refused ones included
    rejected: int  # operations MLflow refused for good (kept in <outbox>/rejected/)
    failed_attempts: int  # delivery attempts that failed transiently (server down, 5xx, timeout)
    last_error: str | None


class RunQueue:
    """One run's record and its undelivered ops (in memory, or in its outbox file)."""

    def __init__(self, record: RunRecord, ops: Iterable[Op] = ()) -> None:
        self.record = record
        self.ops: deque[Op] = deque(ops)
        self.spooled_ops = 0  # ops in this run's outbox file (which exists iff spooled)
        self.spooled = False
        self.last_step = 0  # highest step of the metrics queued so far
        self.ended = False

    @property
    def created(self) -> bool:
        return self.record.mlflow_run_id is not None

    def has_work(self) -> bool:
        return bool(self.ops) or self.spooled or not self.created


class DeliveryWorker:
    """Owns the run queues and the thread that delivers them; all counters live here.

    Args:
        connect: opens the MLflow connection (called on the thread, retried while it fails).
        outbox: where undeliverable ops are spooled and refused ones are kept.
        target: the tracking URI, for log messages.
        flush_interval_s, backoff_s, max_backoff_s, spool_after: as in `MlflowSink`.
    """

    def __init__(
        self,
        connect: Callable[[], Delivery],
        outbox: Outbox,
        *,
        target: str,
        flush_interval_s: float,
        backoff_s: float,
        max_backoff_s: float,
        spool_after: int,
    ) -> None:
        self.outbox = outbox
        self._connect = connect
        self._target = target
        self._flush_interval_s = flush_interval_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._spool_after = spool_after

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a pass finished
        self._wake = threading.Event()
        self._runs: dict[str, RunQueue] = {}
        self._queued_metrics = 0
        self._delivery: Delivery | None = None
        self._delivered = 0
        self._rejected = 0
        self._failed_attempts = 0
        self._consecutive_failures = 0
        self._last_error: str | None = None
        self._next_attempt_at = 0.0
        self._urgent = False
        self._passes_started = 0
        self._passes_finished = 0
        self._closing_deadline: float | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="reset-tune-mlflow", daemon=True)
        self._thread.start()

    # -- caller side ----------------------------------------------------------------------------
    def queue(self, run_key: str) -> RunQueue:
        try:
            return self._runs[run_key]
        except KeyError:
            raise ValueError(f"unknown run handle {run_key!r}; use one start_* returned") from None

    def add(self, queue: RunQueue) -> None:
        """Register a new run; the thread creates it soon, so it shows in the UI while it trains."""
        with self._lock:
            self._check_open()
            self._runs[queue.record.run_key] = queue
        self._wake.set()

    def append(self, queue: RunQueue, ops: Iterable[Op]) -> None:
        """Queue ops for a run; wakes the thread early when many metrics are waiting."""
        ops = list(ops)
        steps = [step for op in ops for _, _, _, step in op.metrics]
        with self._lock:
            self._check_open()
            queue.ops.extend(ops)
            queue.last_step = max([queue.last_step, *steps])
            self._queued_metrics += len(steps)
            wake = self._queued_metrics >= _WAKE_AT_METRICS
        if wake:
            self._wake.set()

    def end(self, queue: RunQueue, final_ops: Callable[[int], Iterable[Op]]) -> None:
        """Queue a run's last ops, `final_ops(last_step)`; a run can be ended once."""
        with self._lock:
            self._check_open()
            if queue.ended:
                raise ValueError(f"run {queue.record.run_key!r} was already finished")
            queue.ended = True
            queue.ops.extend(final_ops(queue.last_step))
        self._wake.set()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this MlflowSink is closed")

    def flush(self, timeout_s: float) -> bool:
        """Deliver now (ignoring backoff), wait for that attempt; True when nothing is pending."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self._closed:
                return self._pending_locked() == 0
            target = self._passes_started + 1
            self._urgent = True
        self._wake.set()
        with self._lock:
            while self._passes_finished < target and self._thread.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return self._pending_locked() == 0

    def close(self, timeout_s: float) -> None:
        """Keep delivering for up to `timeout_s`, spool the rest, stop the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._closing_deadline = time.monotonic() + timeout_s
        self._wake.set()
        self._thread.join()

    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(
                pending=self._pending_locked(),
                spooled=sum(
                    s.spooled_ops + (not s.created and s.spooled) for s in self._runs.values()
                ),
                delivered=self._delivered,
                rejected=self._rejected,
                failed_attempts=self._failed_attempts,
                last_error=self._last_error,
            )

    def _pending_locked(self) -> int:
        return sum(
            len(s.ops) + s.spooled_ops + (0 if s.created else 1) for s in self._runs.values()
        )

    # -- the thread -----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            self._wake.wait(self._flush_interval_s)
            self._wake.clear()
            with self._lock:
                closing_deadline = self._closing_deadline
                urgent, self._urgent = self._urgent, False
                has_work = any(s.has_work() for s in self._runs.values())
            if closing_deadline is not None:
                self._final_passes(closing_deadline)
                return
            if has_work and (urgent or time.monotonic() >= self._next_attempt_at):
                self._pass()
            elif urgent:
                self._count_empty_pass()

    def _count_empty_pass(self) -> None:
        with self._lock:
            self._passes_started += 1
            self._passes_finished = self._passes_started
            self._changed.notify_all()

    def _final_passes(self, deadline: float) -> None:
        """On close: attempt until delivered or past the deadline, then spool what is left."""
        while True:
            with self._lock:
                has_work = any(s.has_work() for s in self._runs.values())
            if not has_work:
                break
            if self._pass():
                wait = 0.0
            else:
                wait = max(self._next_attempt_at - time.monotonic(), 0.0)
            if time.monotonic() + wait >= deadline:
                break
            time.sleep(wait)
        self._spool_all_safely()
        with self._lock:
            left = self._pending_locked()
        if left:
            _log.warning(
                "MLflow tracking at %s unreachable: %d records kept in %s; "
                "replay them with replay_outbox (reset-tune sync)",
                self._target,
                left,
                self.outbox.directory,
            )

    def _pass(self) -> bool:
        """One delivery attempt over every run with work. True when it did not fail."""
        with self._lock:
            self._passes_started += 1
            number = self._passes_started
            queues = [s for s in self._runs.values() if s.has_work()]
        ok = True
        try:
            if self._delivery is None:
                self._delivery = self._connect()
            for queue in queues:
                self._deliver_run(self._delivery, queue)
        except TransientError as error:
            ok = False
            self._failed(str(error))
        except Exception as error:  # a defect must not kill the thread: treat it as transient
            ok = False
            _log.exception("unexpected error while delivering to MLflow")
            self._failed(f"{type(error).__name__}: {error}")
        else:
            self._consecutive_failures = 0
            self._next_attempt_at = 0.0
        with self._lock:
            self._passes_finished = number
            self._changed.notify_all()
        return ok

    def _failed(self, message: str) -> None:
        with self._lock:
            self._failed_attempts += 1
            self._last_error = message
        self._consecutive_failures += 1
        delay = min(self._max_backoff_s, self._backoff_s * 2 ** (self._consecutive_failures - 1))
        self._next_attempt_at = time.monotonic() + delay
        if self._consecutive_failures == 1:
            _log.warning("MLflow tracking unavailable (%s); will retry", message)
        if self._consecutive_failures >= self._spool_after:
            self._spool_all_safely()

    def _parent_ready(self, queue: RunQueue) -> tuple[bool, str | None]:
        key = queue.record.parent_key
        if key is None:
            return True, None
        parent = self._runs[key].record.mlflow_run_id
        return parent is not None, parent

    def _deliver_run(self, delivery: Delivery, queue: RunQueue) -> None:
        if queue.spooled:
            self._deliver_spooled(delivery, queue)
            if queue.spooled:
                return
        run_id = queue.record.mlflow_run_id
        if run_id is None:
            ready, parent_id = self._parent_ready(queue)
            if not ready:
                return
            run_id = delivery.ensure_run(queue.record, parent_id)
        while True:
            with self._lock:
                ops = [queue.ops[i] for i in range(min(len(queue.ops), _OPS_PER_SEND))]
            if not ops:
                return

            def delivered(n: int) -> None:
                with self._lock:
                    for _ in range(n):
                        op = queue.ops.popleft()
                        if op.kind == METRICS:
                            self._queued_metrics -= len(op.metrics)
                    self._delivered += n

            delivery.send(run_id, ops, delivered, self._rejecter(queue))

    def _rejecter(self, queue: RunQueue) -> Callable[[Op, str], None]:
        def rejected(op: Op, reason: str) -> None:
            _log.warning("MLflow refused %s for run %s: %s", op.kind, queue.record.run_name, reason)
            with self._lock:
                self._rejected += 1
            with self.outbox.lock():
                self.outbox.reject(queue.record.run_key, op, reason)

        return rejected

    def _deliver_spooled(self, delivery: Delivery, queue: RunQueue) -> None:
        """Deliver a spooled run's outbox file; on failure rewrite what is left of it."""
        key = queue.record.run_key
        with self.outbox.lock():
            if not self.outbox.run_path(key).exists():
                # Someone replayed it (`replay_outbox`): the run exists under its run key.
                with self._lock:
                    queue.spooled, queue.spooled_ops = False, 0
                queue.record.create_attempted = True
                return
            record, ops = self.outbox.read(key)
            queue.record.mlflow_run_id = queue.record.mlflow_run_id or record.mlflow_run_id
            queue.record.create_attempted |= record.create_attempted
            ready, parent_id = self._parent_ready(queue)
            if not ready:
                return
            done = 0

            def delivered(n: int) -> None:
                nonlocal done
                done += n
                with self._lock:
                    queue.spooled_ops -= n
                    self._delivered += n

            try:
                run_id = delivery.ensure_run(queue.record, parent_id)
                delivery.send(run_id, ops, delivered, self._rejecter(queue))
            except BaseException:
                self.outbox.write(queue.record, ops[done:])
                raise
            self.outbox.remove(key)
            with self._lock:
                queue.spooled, queue.spooled_ops = False, 0

    def _spool_all_safely(self) -> None:
        try:
            self._spool_all()
        except Exception:  # e.g. an unreadable outbox file: keep the thread (and memory) alive
            _log.exception("spooling to the MLflow outbox %s failed", self.outbox.directory)

    def _spool_all(self) -> None:
        """Move every undelivered op from memory to the outbox (appended after spooled ones)."""
        with self._lock:
            queues = [s for s in self._runs.values() if s.has_work()]
        if not queues:
            return
        with self.outbox.lock():
            for queue in queues:
                with self._lock:
                    moved = list(queue.ops)
                    queue.ops.clear()
                    self._queued_metrics -= sum(len(op.metrics) for op in moved)
                if not moved and queue.spooled:
                    continue
                earlier: list[Op] = []
                try:
                    if queue.spooled and self.outbox.run_path(queue.record.run_key).exists():
                        record, earlier = self.outbox.read(queue.record.run_key)
                        queue.record.mlflow_run_id = (
                            queue.record.mlflow_run_id or record.mlflow_run_id
                        )
                    self.outbox.write(queue.record, earlier + moved)
                except Exception as error:
                    # Disk trouble or a damaged file: keep the ops in memory rather than lose them.
                    _log.error("cannot write MLflow outbox %s: %s", self.outbox.directory, error)
                    with self._lock:
                        queue.ops.extendleft(reversed(moved))
                        self._queued_metrics += sum(len(op.metrics) for op in moved)
                    continue
                with self._lock:
                    queue.spooled = True
                    queue.spooled_ops = len(earlier) + len(moved)
