"""Several runs in one process, stepped in lockstep: small trials sharing one GPU.

A small network leaves a GPU mostly idle, and separate processes share it badly: each has its own
CUDA context, and contexts take turns on the chip. A `TrainingGroup` steps K runs round-robin in
one thread, each on its own CUDA stream, so one run's kernels (or graph replay) overlap with the
next run's host work and kernels. Every run keeps its own config, data order, resetter, callbacks
and result: a run's result is the one it gets alone (exactly on the CPU; on a GPU within the
determinism of its kernels), because runs share no state but the process-wide kernel settings,
which must agree (`deterministic`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from reset_tune.config import TrainConfig
from reset_tune.data import DataSplits
from reset_tune.engine.callbacks import Callback
from reset_tune.engine.loop import TrainingRun, data_settings
from reset_tune.engine.result import TrainResult
from reset_tune.engine.runtime import kernel_settings
from reset_tune.errors import ConfigError


@contextlib.contextmanager
def _on(stream: torch.cuda.Stream | None) -> Iterator[None]:
    if stream is None:
        yield
    else:
        with torch.cuda.stream(stream):
            yield


class TrainingGroup:
    """K `TrainingRun`s on one device, stepped in lockstep; `run()` returns their results."""

    def __init__(self, runs: Sequence[TrainingRun]) -> None:
        if not runs:
            raise ConfigError("a training group needs at least one run")
        devices = {str(run.device) for run in runs}
        if len(devices) != 1:
            raise ConfigError(
                f"a training group's runs must share one device, not {sorted(devices)}"
            )
        modes = {run.config.deterministic for run in runs}
        if len(modes) != 1:
            raise ConfigError(
                "a training group's runs must agree on `deterministic`: the kernel settings are "
                "process-wide"
            )
        self.runs = list(runs)
        self.device = runs[0].device
        self.deterministic = runs[0].config.deterministic

    def run(self, callbacks: Sequence[Sequence[Callback]] | None = None) -> list[TrainResult]:
        """Train every run to its end; `callbacks[i]` are run i's callbacks."""
        per_run = list(callbacks) if callbacks is not None else [() for _ in self.runs]
        if len(per_run) != len(self.runs):
            raise ValueError(f"{len(per_run)} callback lists for {len(self.runs)} runs")
        results: list[TrainResult | None] = [None] * len(self.runs)
        with kernel_settings(deterministic=self.deterministic, device=self.device):
            streams = self._streams()
            for run, cbs, stream in zip(self.runs, per_run, streams, strict=True):
                with _on(stream):
                    run.begin(cbs)
            active = list(range(len(self.runs)))
            while active:
                still_running = []
                for i in active:
                    with _on(streams[i]):
                        if self.runs[i].advance(per_run[i]):
                            still_running.append(i)
                        else:
                            results[i] = self.runs[i].end(per_run[i])
                active = still_running
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        return [result for result in results if result is not None]

    def _streams(self) -> list[torch.cuda.Stream | None]:
        if self.device.type != "cuda":
            return [None] * len(self.runs)
        current = torch.cuda.current_stream(self.device)
        streams: list[torch.cuda.Stream | None] = []
        for _ in self.runs:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(current)  # the data and models were made on the current stream
            streams.append(stream)
        return streams


def train_group(configs: Sequence[TrainConfig]) -> list[TrainResult]:
    """Train `configs` as one `TrainingGroup`; runs whose data settings agree share one copy."""
    shared: dict[str, DataSplits] = {}
    runs = []
    for config in configs:
        key = repr(sorted(data_settings(config).items()))
        run = TrainingRun(config, data=shared.get(key))
        shared.setdefault(key, run.data)
        runs.append(run)
    return TrainingGroup(runs).run()
