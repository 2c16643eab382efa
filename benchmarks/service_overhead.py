"""What the search service costs: the same trials run by the search driver vs the engine in a loop.

The same set of trial configurations is run two ways, in one process, one after the other:

(b) **the search service** (run first): ``reset_tune.search.driver.run_search`` with Ray Tune,
    Optuna (TPE, sqlite storage) and a real local MLflow server, exactly as ``reset-tune search``
    runs it, on a spec derived from ``search_spaces/default.yaml`` (digits, 40 % symmetric noise,
    ``cnn``) with ``--trials`` trials of ``--steps`` steps, ``concurrency: 1`` and
    ``resources: {cpus: 1}``. Ray is started here first, ``ray.init(address="local",
    num_cpus=1, include_dashboard=False)`` (the driver reuses an initialised Ray), and the MLflow
    server with ``reset_tune.tracking.server.start_local_server`` in a fresh temporary state
    directory, so both start-up costs are timed apart from the search itself.
(a) **the engine called directly**: the configurations the search actually ran (its report's
    resolved ``TrainConfig`` dicts, in the order the trials started) through
    ``reset_tune.engine.train(config, data=prepared)`` in a plain loop, one torch thread (as each
    trial gets with 1 CPU), after one ``prepare_data``.

Ray is shut down and the MLflow server stopped (by pid) before (a) starts, so their background
processes do not share the cores with the direct loop. Each trial's objective (validation
accuracy at θbest) is compared between the two ways: on a CPU with deterministic kernels they are
the same runs and must agree exactly.

Reported:

* end-to-end wall time each way and their ratio (b)/(a) (the issue's goal: at most 1.15): (b) is
  importing Ray / Optuna / MLflow + starting Ray + starting the MLflow server + ``run_search``;
  (a) is ``prepare_data`` + the loop;
* the steady-state ratio, without the one-off start-up: for (b) the span from the first trial's
  start to the last trial's end on the driver's clock (= every trial's duration as the driver saw
  it + the gaps between trials), against (a)'s loop;
* the breakdown of ``run_search``: set-up before Tune starts (spec, Optuna study, MLflow parent
  run, data preparation, Tuner), Tune start-up until the first trial starts, the trials and
  gaps, and the end (report, MLflow artifacts, flush);
* the steady-state time outside the engine's step loop each way (trial spans minus engine time,
  plus gaps; direct calls minus engine time), and the ratio it gives with the engine time held
  equal: on a shared machine the engine's own speed varies by tens of % between the two ways,
  which swamps the service's cost in the plain ratio;
* per trial: the engine's own training time (``TrainResult.wall_time_s``: the step loop and
  evaluations) inside the search vs direct, Tune's trial time (``time_total_s`` of its final
  result row, measured in the worker) and the direct ``train()`` call.

The driver-side times come from the progress lines the driver prints (``SearchOptions.stream``),
stamped with ``time.perf_counter`` as they are written.

Run from the repository root::

    .venv/bin/python benchmarks/service_overhead.py                        # 8 trials x 1500 steps
    .venv/bin/python benchmarks/service_overhead.py --trials 3 --steps 300  # quick check
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import benchlib
import torch
import yaml

from reset_tune.config import TrainConfig
from reset_tune.engine import data_settings, prepare_data, train

DEFAULT_JSON = "benchmarks/results/service_overhead.json"
BASE_SPEC = benchlib.REPO_ROOT / "search_spaces" / "default.yaml"
GOAL = 1.15

_STARTED = re.compile(r"\] (trial-\S+) started:")
_ENDED = re.compile(r"\] (trial-\S+) (done|failed|stopped|pruned|ended)\b")
_RUNNING = re.compile(r"^running \d+ trial")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="service_overhead.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--trials", type=int, default=8, help="trials of the search (default 8)")
    parser.add_argument("--steps", type=int, default=1500, help="steps per trial (default 1500)")
    parser.add_argument(
        "--base-spec",
        default=str(BASE_SPEC),
        help="spec whose train/params/sampler the benchmark's spec copies (default "
        "search_spaces/default.yaml)",
    )
    parser.add_argument(
        "--json", default=DEFAULT_JSON, metavar="OUT", help=f"results file (default {DEFAULT_JSON})"
    )
    parser.add_argument(
        "--keep-state",
        action="store_true",
        help="keep the temporary state directory (Tune files, Optuna db, MLflow db) and print it",
    )
    args = parser.parse_args(argv)
    if args.trials < 1 or args.steps < 1:
        raise SystemExit("error: --trials and --steps must be at least 1")
    return args


class _StampedStream(io.TextIOBase):
    """Echoes what the driver prints and keeps every line with the perf_counter when written."""

    def __init__(self, echo) -> None:
        self.echo = echo
        self.lines: list[tuple[float, str]] = []
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        now = time.perf_counter()
        self.echo.write(text)
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self.lines.append((now, line))
        return len(text)

    def flush(self) -> None:
        self.echo.flush()


def _write_spec(base: Path, directory: Path, *, trials: int, steps: int) -> Path:
    spec = yaml.safe_load(base.read_text())
    spec["name"] = "service-overhead"
    spec["description"] = (
        f"service overhead benchmark: {base.name} with {trials} trials of {steps} steps, "
        "one at a time, 1 CPU each"
    )
    spec["train"] = {**spec.get("train", {}), "steps": steps}
    spec["trials"] = trials
    spec["concurrency"] = 1
    spec["resources"] = {"cpus": 1, "gpus": 0}
    path = directory / "service-overhead.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _set_environment() -> None:
    # What `reset-tune search` does when it starts Ray itself (driver._ray_connection and
    # cluster.ensure_auth_mode); here Ray is started by this script, before run_search, so the
    # driver takes it as given and these must already be set.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind loopback only
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)


# ----------------------------------------------------------------------------- (b) the search


def _process_tree(root: int) -> dict[int, tuple[int, float, str]]:
    """CPU seconds (user + system) of `root` and its live descendants: pid -> (pgid, s, name).

    Ray's head processes and the MLflow server are children of this process, Ray's workers
    children of the raylet, so the tree holds every process the service runs on this machine.
    """
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, int, float, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        # fields[0] is the state (stat field 3): ppid 4, pgrp 5, utime 14, stime 15
        table[int(entry)] = (
            int(fields[1]),
            int(fields[2]),
            (int(fields[11]) + int(fields[12])) / tick,
            name,
        )
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    tree, queue = {}, [root]
    while queue:
        pid = queue.pop()
        if pid not in table:
            continue
        _ppid, pgid, cpu, name = table[pid]
        tree[pid] = (pgid, cpu, name)
        queue.extend(children.get(pid, []))
    return tree


class _CpuSampler(threading.Thread):
    """Samples `_process_tree` of this process every `interval_s` (a /proc scan: ~ms), so that
    the CPU time of a process that exits before the end (the trial worker does) still counts, up
    to its last sample."""

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True, name="cpu-sampler")
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[int, tuple[int, float, str]]]] = []
        self._done = threading.Event()

    def run(self) -> None:
        root = os.getpid()
        while True:
            self.samples.append((time.perf_counter(), _process_tree(root)))
            if self._done.wait(self.interval_s):
                break
        self.samples.append((time.perf_counter(), _process_tree(root)))

    def stop(self) -> None:
        self._done.set()
        self.join()

    def used(self, began: float, ended: float, classify) -> dict[str, float]:
        """CPU seconds between the samples around [began, ended], summed by
        `classify(pid, pgid, name)`; `sampled_s`: the wall time between those samples."""
        times = [t for t, _ in self.samples]
        first = max((i for i, t in enumerate(times) if t <= began), default=0)
        last = min((i for i, t in enumerate(times) if t >= ended), default=len(times) - 1)
        start = self.samples[first][1]
        latest: dict[tuple[int, str], tuple[int, float]] = {}
        for _t, tree in self.samples[first : last + 1]:
            for pid, (pgid, cpu, name) in tree.items():
                latest[(pid, name)] = (pgid, cpu)
        totals = {"sampled_s": times[last] - times[first]}
        for (pid, name), (pgid, cpu) in latest.items():
            before = start.get(pid)
            base = before[1] if before is not None and before[2] == name else 0.0
            key = classify(pid, pgid, name)
            totals[key] = totals.get(key, 0.0) + max(0.0, cpu - base)
        return totals


def run_service(spec_path: Path, state: Path) -> dict[str, Any]:
    """Start Ray and MLflow, run the search; every time is perf_counter seconds."""
    times: dict[str, float] = {}
    started = time.perf_counter()
    import ray

    from reset_tune.search.driver import SearchOptions, run_search
    from reset_tune.search.tune_files import read_experiment
    from reset_tune.state import mlflow_dir
    from reset_tune.tracking.server import start_local_server

    times["imports_s"] = time.perf_counter() - started

    began = time.perf_counter()
    # address="local": always a new instance, even when another `ray start` cluster runs here
    # (a bare `ray.init()` would connect to that one and refuse num_cpus).
    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    times["ray_start_s"] = time.perf_counter() - began
    server = None
    try:
        began = time.perf_counter()
        server = start_local_server(mlflow_dir(state))
        times["mlflow_start_s"] = time.perf_counter() - began
        print(
            f"Ray started in {times['ray_start_s']:.1f} s, MLflow server at {server.uri} "
            f"(pid {server.pid}) in {times['mlflow_start_s']:.1f} s",
            flush=True,
        )
        stream = _StampedStream(sys.stdout)
        sampler = _CpuSampler()
        sampler.start()
        search_began = time.perf_counter()
        try:
            outcome = run_search(
                spec_path, SearchOptions(state=state, mlflow_uri=server.uri, stream=stream)
            )
        finally:
            search_ended = time.perf_counter()
            sampler.stop()
        times["run_search_s"] = search_ended - search_began
        record = outcome.record
        rows = {
            trial.trial_id: trial
            for segment in record.segments
            for trial in read_experiment(record.tune_dir / segment.name)
        }
    finally:
        began = time.perf_counter()
        ray.shutdown()
        times["ray_shutdown_s"] = time.perf_counter() - began
        if server is not None:
            began = time.perf_counter()
            server.stop()
            times["mlflow_stop_s"] = time.perf_counter() - began
    return {
        "times": times,
        "search_began": search_began,
        "search_ended": search_ended,
        "lines": stream.lines,
        "report": outcome.report,
        "tune_trials": rows,
        "search_id": record.search_id,
        "sampler": sampler,
        "server_pid": server.pid,
    }


def _trial_events(lines: list[tuple[float, str]]) -> tuple[float | None, dict, dict]:
    """When Tune was about to start (the driver's "running N trial(s)" line), and each trial's
    start and end on the driver's clock, by label."""
    fit_began, starts, ends = None, {}, {}
    for stamp, line in lines:
        if fit_began is None and _RUNNING.search(line):
            fit_began = stamp
        if match := _STARTED.search(line):
            starts.setdefault(match.group(1), stamp)
        elif match := _ENDED.search(line):
            ends[match.group(1)] = stamp
    return fit_began, starts, ends


# ----------------------------------------------------------------------------- (a) direct


def run_direct(configs: list[TrainConfig]) -> dict[str, Any]:
    """`prepare_data` once per distinct data setting, then `train` each config in a loop."""
    began = time.perf_counter()
    prepared: dict[str, Any] = {}
    for config in configs:
        key = repr(sorted(data_settings(config).items()))
        if key not in prepared:
            prepared[key] = prepare_data(config, "cpu")
    prepare_s = time.perf_counter() - began
    results, walls = [], []
    loop_began, cpu_began = time.perf_counter(), time.process_time()
    for index, config in enumerate(configs):
        data = prepared[repr(sorted(data_settings(config).items()))]
        began = time.perf_counter()
        result = train(config, data=data)
        walls.append(time.perf_counter() - began)
        results.append(result)
        print(
            f"  direct {index + 1}/{len(configs)}: {walls[-1]:6.2f} s (engine loop "
            f"{result.wall_time_s:6.2f} s), val acc at θbest {result.best_val_acc:.4f}",
            flush=True,
        )
    loop_s = time.perf_counter() - loop_began
    loop_cpu_s = time.process_time() - cpu_began
    return {
        "loop_cpu_s": loop_cpu_s,
        "prepare_data_s": prepare_s,
        "loop_s": loop_s,
        "call_walls_s": walls,
        "results": results,
    }


# ----------------------------------------------------------------------------- the figures


def _summarise(service: dict, direct: dict, order: list) -> dict[str, Any]:
    t = service["times"]
    fit_began, starts, ends = _trial_events(service["lines"])
    per_trial, gaps = [], []
    previous_end = None
    for index, (outcome, start) in enumerate(order):
        end = ends.get(outcome.label)
        tune_trial = service["tune_trials"].get(outcome.tune_trial_id)
        final = tune_trial.final_row if tune_trial is not None else None
        gap = None if previous_end is None else start - previous_end
        if gap is not None:
            gaps.append(gap)
        previous_end = end
        result = direct["results"][index]
        per_trial.append(
            {
                "label": outcome.label,
                "outcome": outcome.outcome,
                "batch_size": outcome.config.get("batch_size"),
                "reset_prob": outcome.config.get("reset_prob"),
                "search_engine_s": outcome.wall_time_s,
                "search_tune_time_total_s": None if final is None else final.get("time_total_s"),
                "worker_pid": None if final is None else final.get("pid"),
                "search_span_s": None if end is None else end - start,
                "started_at_s": start - service["search_began"],  # since run_search began
                "ended_at_s": None if end is None else end - service["search_began"],
                "gap_before_s": gap,
                "direct_engine_s": result.wall_time_s,
                "direct_call_s": direct["call_walls_s"][index],
                "search_objective": outcome.objective,
                "direct_objective": result.best_val_acc,
                "same_result": outcome.objective is not None
                and outcome.objective == result.best_val_acc,
            }
        )
    first_start = order[0][1]
    last_end = max(ends.values()) if ends else None
    steady_b = None if last_end is None else last_end - first_start
    one_off_b = t["imports_s"] + t["ray_start_s"] + t["mlflow_start_s"]
    end_to_end_b = one_off_b + t["run_search_s"]
    end_to_end_a = direct["prepare_data_s"] + direct["loop_s"]
    breakdown = {
        "setup_before_tune_s": None if fit_began is None else fit_began - service["search_began"],
        "tune_start_to_first_trial_s": None if fit_began is None else first_start - fit_began,
        "trials_span_s": steady_b,
        "sum_trial_spans_s": _sum(p["search_span_s"] for p in per_trial),
        "sum_gaps_s": sum(gaps),
        "after_last_trial_s": None if last_end is None else service["search_ended"] - last_end,
    }
    return {
        "one_off": {
            "service_imports_s": t["imports_s"],
            "ray_start_s": t["ray_start_s"],
            "mlflow_start_s": t["mlflow_start_s"],
            "direct_prepare_data_s": direct["prepare_data_s"],
            "ray_shutdown_s": t["ray_shutdown_s"],
            "mlflow_stop_s": t.get("mlflow_stop_s"),
        },
        "run_search_s": t["run_search_s"],
        "run_search_breakdown": breakdown,
        "end_to_end": {
            "search_s": end_to_end_b,
            "direct_s": end_to_end_a,
            "ratio": end_to_end_b / end_to_end_a,
        },
        "steady_state": {
            "search_s": steady_b,
            "direct_s": direct["loop_s"],
            "ratio": None if steady_b is None else steady_b / direct["loop_s"],
        },
        "sums": {
            "search_engine_s": _sum(p["search_engine_s"] for p in per_trial),
            "direct_engine_s": _sum(p["direct_engine_s"] for p in per_trial),
            "search_tune_time_total_s": _sum(p["search_tune_time_total_s"] for p in per_trial),
            "search_spans_s": breakdown["sum_trial_spans_s"],
            "direct_calls_s": sum(direct["call_walls_s"]),
        },
        "outside_engine": _outside_engine(per_trial, breakdown, direct),
        "cpu": _cpu_summary(service, per_trial, direct, steady=(first_start, last_end)),
        "all_results_identical": all(p["same_result"] for p in per_trial),
        "per_trial": per_trial,
    }


def _outside_engine(per_trial: list[dict], breakdown: dict, direct: dict) -> dict[str, Any]:
    """The steady-state time spent outside the engine's step loop, each way.

    On a shared machine the engine's own loop time varies by tens of % from run to run, which
    swamps the service's cost in the plain steady-state ratio. This part does not depend on the
    engine's speed: trial spans minus the engine time, plus the gaps, against the direct calls
    minus the engine time (plus the loop's own bookkeeping). The estimate holds the engine time
    equal (the direct one) and adds each way's time outside it.
    """
    search_engine = _sum(p["search_engine_s"] for p in per_trial)
    spans = breakdown["sum_trial_spans_s"]
    if search_engine is None or spans is None:
        return {}
    direct_engine = sum(p["direct_engine_s"] for p in per_trial)
    search_out = spans - search_engine + breakdown["sum_gaps_s"]
    direct_out = direct["loop_s"] - direct_engine
    first = per_trial[0]
    first_out = first["search_span_s"] - first["search_engine_s"]
    return {
        "search_s": search_out,
        "direct_s": direct_out,
        "search_first_trial_s": first_out,
        "search_per_later_trial_s": (search_out - first_out) / max(1, len(per_trial) - 1),
        "engine_time_ratio_search_vs_direct": search_engine / direct_engine,
        "ratio_engine_held_equal": (direct_engine + search_out) / (direct_engine + direct_out),
    }


def _cpu_summary(
    service: dict, per_trial: list[dict], direct: dict, *, steady: tuple[float, float | None]
) -> dict[str, Any]:
    """CPU seconds used by the driver, the trial worker, MLflow and Ray's other processes, over
    all of run_search and over the steady-state window."""
    driver, server = os.getpid(), service["server_pid"]
    workers = {p["worker_pid"] for p in per_trial if p["worker_pid"] is not None}

    def classify(pid: int, pgid: int, _name: str) -> str:
        if pid == driver:
            return "driver_s"
        if pid in workers:
            return "trial_worker_s"
        if pgid == server:
            return "mlflow_server_s"
        return "ray_other_s"

    sampler: _CpuSampler = service["sampler"]
    windows = {"run_search": (service["search_began"], service["search_ended"])}
    if steady[1] is not None:
        windows["steady_state"] = (steady[0], steady[1])
    out: dict[str, Any] = {"direct_loop_s": direct["loop_cpu_s"]}
    for p in per_trial:
        if p["ended_at_s"] is not None:
            used = sampler.used(
                service["search_began"] + p["started_at_s"],
                service["search_began"] + p["ended_at_s"],
                classify,
            )
            p["cpu_worker_s"] = used.get("trial_worker_s", 0.0)
            p["cpu_service_s"] = sum(
                used.get(k, 0.0) for k in ("driver_s", "mlflow_server_s", "ray_other_s")
            )
            p["cpu_sampled_s"] = used["sampled_s"]
    for label, (began, ended) in windows.items():
        used = {
            key: 0.0 for key in ("trial_worker_s", "driver_s", "mlflow_server_s", "ray_other_s")
        }
        used.update(sampler.used(began, ended, classify))
        service_s = used["driver_s"] + used["mlflow_server_s"] + used["ray_other_s"]
        out[label] = {
            **used,
            "wall_s": ended - began,
            "service_s": service_s,
            "service_cores": service_s / used["sampled_s"],
            "trial_worker_cores": used["trial_worker_s"] / used["sampled_s"],
        }
    return out


def _sum(values) -> float | None:
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def _f(value: float | None, spec: str = "7.2f") -> str:
    if value is None:
        width = re.match(r"\d*", spec).group()
        return format("-", f">{width}") if width else "-"
    return format(value, spec)


def _print_summary(summary: dict, args: argparse.Namespace) -> None:
    one, br, sums = summary["one_off"], summary["run_search_breakdown"], summary["sums"]
    print(f"\n== {args.trials} trials x {args.steps} steps, one at a time, 1 CPU / torch thread")
    columns = (
        ("search_engine_s", "engine"),
        ("search_tune_time_total_s", "Tune trial"),
        ("search_span_s", "span"),
        ("gap_before_s", "gap before"),
        ("direct_engine_s", "engine"),
        ("direct_call_s", "train()"),
    )
    print(f"per trial, s      {'--- search (b) ---':^44}   {'-- direct (a) --':^22}")
    titles = "".join(f"{title:>11}" for _, title in columns)
    print(f"  {'trial':<12}{titles}  service CPU s")
    for p in summary["per_trial"]:
        same = "" if p["same_result"] else "  RESULT DIFFERS"
        values = "".join(f"{_f(p[key], '11.2f')}" for key, _ in columns)
        print(f"  {p['label']:<12}{values}  {_f(p.get('cpu_service_s'), '9.2f')}{same}")
    totals = {
        "search_engine_s": sums["search_engine_s"],
        "search_tune_time_total_s": sums["search_tune_time_total_s"],
        "search_span_s": sums["search_spans_s"],
        "gap_before_s": br["sum_gaps_s"],
        "direct_engine_s": sums["direct_engine_s"],
        "direct_call_s": sums["direct_calls_s"],
    }
    print(f"  {'sum':<12}" + "".join(f"{_f(totals[key], '11.2f')}" for key, _ in columns))
    print(
        "  (engine: TrainResult.wall_time_s, the step loop with its evaluations; Tune trial: "
        "time_total_s of the final row;\n   span: trial start to end on the driver's clock; "
        "train(): the whole direct call; service CPU s: the driver, MLflow and Ray's other "
        "processes during the trial's span)"
    )

    def line(label: str, value: float | None) -> None:
        print(f"  {label:<58} {_f(value, '8.2f')}")

    print("one-off costs (s):")
    line("import ray + search driver (Optuna, MLflow client)", one["service_imports_s"])
    line("ray.init(num_cpus=1)", one["ray_start_s"])
    line("MLflow server start", one["mlflow_start_s"])
    line("prepare_data (direct; the search does the same inside)", one["direct_prepare_data_s"])
    print(
        f"  (after: ray.shutdown {_f(one['ray_shutdown_s'], '.1f')} s, MLflow stop "
        f"{_f(one['mlflow_stop_s'], '.1f')} s; not counted)"
    )
    print(f"run_search {summary['run_search_s']:.2f} s:")
    line("set-up before Tune (spec, study, parent run, data, Tuner)", br["setup_before_tune_s"])
    line("Tune start until the first trial starts", br["tune_start_to_first_trial_s"])
    line("first trial start to last trial end (steady state)", br["trials_span_s"])
    line("    of which trials (driver spans)", br["sum_trial_spans_s"])
    line("    of which gaps between trials", br["sum_gaps_s"])
    line("after the last trial (report, artifacts, flush)", br["after_last_trial_s"])
    out = summary["outside_engine"]
    if out:
        print("steady state outside the engine's step loop (s):")
        line("search: trial spans - engine time + gaps", out["search_s"])
        line("    of which the first trial (worker warm-up)", out["search_first_trial_s"])
        line("    per later trial, incl. the gap before it", out["search_per_later_trial_s"])
        line("direct: loop - engine time (construction, test passes)", out["direct_s"])
        print(
            f"  the engine's own loop took {out['engine_time_ratio_search_vs_direct']:.3f}x as "
            "long inside the search as direct (the machine's load and the service's processes)"
        )
    cpu = summary["cpu"]
    windows = [w for w in ("run_search", "steady_state") if w in cpu]
    print(
        "CPU seconds used (sampled every 0.5 s):"
        + "".join(f"{w.replace('_', ' '):>16}" for w in windows)
    )
    for key, label in (
        ("sampled_s", "(wall time between the samples around the window)"),
        ("trial_worker_s", "trial worker (the engine, in a Ray worker process)"),
        ("trial_worker_cores", "    = cores on average"),
        ("driver_s", "driver (Tune controller, Optuna, MLflow client, ...)"),
        ("mlflow_server_s", "MLflow server"),
        ("ray_other_s", "Ray's other processes (raylet, GCS, idle workers)"),
        ("service_s", "the service's own processes (all but the worker)"),
        ("service_cores", "    = cores on average"),
    ):
        print(f"  {label:<58}" + "".join(_f(cpu[w][key], "16.2f") for w in windows))
    direct_cores = cpu["direct_loop_s"] / summary["steady_state"]["direct_s"]
    print(f"  direct loop: {cpu['direct_loop_s']:.2f} CPU s = {direct_cores:.2f} cores on average")
    e2e, steady = summary["end_to_end"], summary["steady_state"]
    print(
        f"end-to-end:   search {e2e['search_s']:.2f} s vs direct {e2e['direct_s']:.2f} s -> "
        f"ratio {e2e['ratio']:.3f} (goal <= {GOAL})"
    )
    if steady["ratio"] is not None:
        print(
            f"steady state: search {steady['search_s']:.2f} s vs direct {steady['direct_s']:.2f} s"
            f" -> ratio {steady['ratio']:.3f} (goal <= {GOAL})"
        )
    if out:
        print(
            "steady state with the engine time held equal (estimate: direct engine time + each "
            f"way's time outside it): ratio {out['ratio_engine_held_equal']:.3f}"
        )
    print(
        "results identical both ways (val acc at θbest): "
        f"{'yes' if summary['all_results_identical'] else 'NO'}"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    _set_environment()
    device = torch.device("cpu")
    benchlib.apply_threads(1, device)  # as each trial with 1 CPU (trainable.trial_threads)
    facts = benchlib.machine_facts(device)
    print(f"machine: {benchlib.describe_machine(facts)}", flush=True)

    directory = Path(tempfile.mkdtemp(prefix="reset-tune-service-overhead-"))
    try:
        spec_path = _write_spec(
            Path(args.base_spec), directory, trials=args.trials, steps=args.steps
        )
        state = directory / "state"  # fresh: a new Optuna db, MLflow db and Tune folder
        print(f"\n== (b) the search service: {spec_path} (state {state})", flush=True)
        service = run_service(spec_path, state)
    finally:
        if args.keep_state:
            print(f"kept the state directory {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)

    report = service["report"]
    _fit, starts, _ends = _trial_events(service["lines"])
    ran = [t for t in report.trials if t.label in starts]
    missing = [t.label for t in report.trials if t.label not in starts]
    if missing or not ran:
        print(f"warning: no start line for trials {missing}; they are left out", file=sys.stderr)
    order = sorted(((t, starts[t.label]) for t in ran), key=lambda pair: pair[1])
    configs = [TrainConfig.from_dict(t.config) for t, _ in order]

    print(f"\n== (a) the engine in a loop: the same {len(configs)} configurations", flush=True)
    direct = run_direct(configs)
    summary = _summarise(service, direct, order)
    _print_summary(summary, args)

    facts["driver_pid"] = os.getpid()
    facts["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    benchlib.write_json(
        args.json,
        {
            "benchmark": "service_overhead",
            "machine": facts,
            "settings": {
                "trials": args.trials,
                "steps": args.steps,
                "base_spec": str(args.base_spec),
                "concurrency": 1,
                "cpus_per_trial": 1,
                "torch_threads": torch.get_num_threads(),
            },
            "search_id": service["search_id"],
            "goal_ratio": GOAL,
            **summary,
            "configs": [c.to_dict() for c in configs],
            "argv": sys.argv[1:] if argv is None else argv,
        },
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
