"""The outbox: undelivered run records on local disk, and their replay into a tracking server.

One file per run, `<outbox>/<run_key>.jsonl`, rewritten whole and atomically each time it
changes: the first line is the run's header (`RunRecord`), every further line one operation
(`Op`) still to deliver, oldest first. An artifact's bytes live beside it in
`<outbox>/<run_key>.artifacts/<sha256>`. Operations MLflow refused for good (a changed parameter
value, a deleted run) are appended to `<outbox>/rejected/<run_key>.jsonl` with the reason, so
nothing disappears silently.

Replaying is idempotent: runs are found again by their `reset_tune.run_key` tag before one is
created, identical parameters are accepted twice, a metric point (key, step, value, timestamp)
logged twice is stored once, and a file is deleted only after everything in it was delivered.
Processes share an outbox through an advisory lock on `<outbox>/.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reset_tune.atomic import write_bytes_atomic

_log = logging.getLogger(__name__)

FORMAT = "reset-tune-outbox/1"
METRICS, PARAMS, TAGS, ARTIFACT, TERMINATE = "metrics", "params", "tags", "artifact", "terminate"
BATCHABLE = (METRICS, PARAMS, TAGS)


@dataclass
class RunRecord:
    """Everything needed to create a run (again): the header line of an outbox file."""

    run_key: str
    experiment_name: str
    run_name: str
    start_time: int  # ms since the epoch
    tags: dict[str, str]
    parent_key: str | None = None
    parent_run_id: str | None = None  # the parent's MLflow run id, when it was known
    artifact_location: str | None = None  # for a newly created experiment; None = server default
    mlflow_run_id: str | None = None  # set once the run exists on a server
    create_attempted: bool = False  # a creation may have reached a server: look it up first

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> RunRecord:
        if values.get("format") != FORMAT:
            raise ValueError(f"not a reset-tune outbox header (format {values.get('format')!r})")
        known = {k: v for k, v in values.items() if k != "format"}
        return cls(**known)


@dataclass
class Op:
    """One thing to deliver to a run. `size` counts MLflow batch entities."""

    kind: str
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)  # key, value, ms, step
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    name: str | None = None  # artifact path inside the run, e.g. "curves.png"
    data: bytes | None = None  # artifact content
    status: str | None = None  # terminate: FINISHED | FAILED | KILLED
    end_time: int | None = None  # terminate: ms since the epoch

    @property
    def size(self) -> int:
        return max(1, len(self.metrics) + len(self.params) + len(self.tags))

    @property
    def nbytes(self) -> int:
        """Approximate bytes of this op in a log_batch request body."""
        return (
            sum(len(k) + 60 for k, *_ in self.metrics)
            + sum(len(k) + len(v) + 30 for k, v in self.params.items())
            + sum(len(k) + len(v) + 30 for k, v in self.tags.items())
        )

    def to_json(self, artifact_file: str | None = None) -> dict[str, Any]:
        if self.kind == METRICS:
            return {"op": METRICS, "metrics": [list(m) for m in self.metrics]}
        if self.kind == PARAMS:
            return {"op": PARAMS, "params": self.params}
        if self.kind == TAGS:
            return {"op": TAGS, "tags": self.tags}
        if self.kind == ARTIFACT:
            return {"op": ARTIFACT, "name": self.name, "file": artifact_file}
        return {"op": TERMINATE, "status": self.status, "end_time": self.end_time}

    @classmethod
    def from_json(cls, values: dict[str, Any], base: Path) -> Op:
        kind = values["op"]
        if kind == METRICS:
            return cls(
                METRICS, metrics=[(k, float(v), int(t), int(s)) for k, v, t, s in values["metrics"]]
            )
        if kind == PARAMS:
            return cls(PARAMS, params=dict(values["params"]))
        if kind == TAGS:
            return cls(TAGS, tags=dict(values["tags"]))
        if kind == ARTIFACT:
            return cls(ARTIFACT, name=values["name"], data=(base / values["file"]).read_bytes())
        if kind == TERMINATE:
            return cls(TERMINATE, status=values["status"], end_time=values["end_time"])
        raise ValueError(f"unknown outbox operation {kind!r}")


class Outbox:
    """A directory of per-run outbox files. Hold `lock()` around reads and writes."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        # flock excludes other open files, even in this process: re-entry must not lock again.
        self._thread_lock = threading.RLock()
        self._depth = 0

    def run_path(self, run_key: str) -> Path:
        return self.directory / f"{run_key}.jsonl"

    def _artifact_dir(self, run_key: str) -> Path:
        return self.directory / f"{run_key}.artifacts"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the directory, across processes; re-entrant within a thread."""
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.directory / ".lock", "a+b") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def run_keys(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.name[: -len(".jsonl")] for p in self.directory.glob("*.jsonl"))

    def write(self, record: RunRecord, ops: list[Op]) -> None:
        """Replace the run's file by `record` and `ops` (artifacts first, then the file itself)."""
        artifact_dir = self._artifact_dir(record.run_key)
        lines = [json.dumps(record.to_json())]
        keep: set[str] = set()
        for op in ops:
            relative = None
            if op.kind == ARTIFACT:
                digest = hashlib.sha256(op.data or b"").hexdigest()
                relative = f"{artifact_dir.name}/{digest}"
                if not (self.directory / relative).exists():
                    write_bytes_atomic(self.directory / relative, op.data or b"")
                keep.add(digest)
            lines.append(json.dumps(op.to_json(relative)))
        write_bytes_atomic(self.run_path(record.run_key), ("\n".join(lines) + "\n").encode())
        if artifact_dir.is_dir():
            for stale in artifact_dir.iterdir():
                if stale.name not in keep and not stale.name.startswith("."):
                    stale.unlink(missing_ok=True)

    def read(self, run_key: str) -> tuple[RunRecord, list[Op]]:
        lines = self.run_path(run_key).read_text().splitlines()
        record = RunRecord.from_json(json.loads(lines[0]))
        return record, [
            Op.from_json(json.loads(line), self.directory) for line in lines[1:] if line
        ]

    def remove(self, run_key: str) -> None:
        self.run_path(run_key).unlink(missing_ok=True)
        shutil.rmtree(self._artifact_dir(run_key), ignore_errors=True)

    def reject(self, run_key: str, op: Op, reason: str) -> None:
        """Keep an operation MLflow refused for good, with the reason, for a person to look at."""
        entry = op.to_json()
        if op.kind == ARTIFACT:
            entry["size"] = len(op.data or b"")
        entry["reason"] = reason
        path = self.directory / "rejected" / f"{run_key}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")


@dataclass
class ReplayReport:
    """What `replay_outbox` did. `runs_remaining` > 0 means try again later (see `errors`)."""

    runs_completed: int = 0
    runs_remaining: int = 0
    ops_delivered: int = 0
    ops_rejected: int = 0
    run_ids: dict[str, str] = field(default_factory=dict)  # run_key -> MLflow run id
    errors: list[str] = field(default_factory=list)


def replay_outbox(outbox_dir: str | os.PathLike, tracking_uri: str) -> ReplayReport:
    """Deliver every run record in `outbox_dir` to `tracking_uri`; safe to run repeatedly.

    Parents are replayed before their trials. A run whose MLflow id is unknown on this server
    (never created, or the records go to a different server) is found by its run-key tag or
    created. Stops at the first transient failure (server unreachable) and leaves what was not
    delivered in the outbox.
    """
    from reset_tune.tracking._delivery import Delivery, TransientError

    outbox = Outbox(outbox_dir)
    report = ReplayReport()
    delivery = Delivery.for_uri(tracking_uri)
    with outbox.lock():
        pending: dict[str, tuple[RunRecord, list[Op]]] = {}
        for key in outbox.run_keys():
            try:
                pending[key] = outbox.read(key)
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
                report.errors.append(f"{outbox.run_path(key)}: unreadable ({error}); left in place")
        order = _parents_first(pending)
        stopped = False
        for key in order:
            record, ops = pending[key]
            if stopped:
                report.runs_remaining += 1
                continue
            done = 0

            def delivered(n: int) -> None:
                nonlocal done
                done += n
                report.ops_delivered += n

            def rejected(op: Op, reason: str, key: str = key) -> None:
                report.ops_rejected += 1
                outbox.reject(key, op, reason)

            try:
                parent_id = report.run_ids.get(record.parent_key or "")
                if parent_id is None and record.parent_key is not None:
                    parent_id = delivery.find_parent(record)
                    if parent_id is None:
                        _log.warning("parent of run %s not found; replaying it unnested", key)
                run_id = delivery.ensure_run(record, parent_id, verify_existing=True)
                delivery.send(run_id, ops, delivered, rejected)
            except TransientError as error:
                report.errors.append(f"run {key}: {error}")
                report.runs_remaining += 1
                outbox.write(record, ops[done:])
                stopped = True
                continue
            report.run_ids[key] = run_id
            outbox.remove(key)
            report.runs_completed += 1
    return report


def _parents_first(records: dict[str, tuple[RunRecord, list[Op]]]) -> list[str]:
    order: list[str] = []
    placed: set[str] = set()

    def place(key: str, seen: frozenset[str]) -> None:
        if key in placed or key in seen:
            return
        parent = records[key][0].parent_key
        if parent in records:
            place(parent, seen | {key})
        placed.add(key)
        order.append(key)

    for key in records:
        place(key, frozenset())
    return order
