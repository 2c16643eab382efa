"""CUDA graphs for the training step and the evaluation: one replay instead of hundreds of launches.

A small network's step on a GPU is bound by the host, not the chip: Python, the autograd engine
and a few hundred kernel launches take milliseconds for arithmetic that takes microseconds. A
CUDA graph records the step's kernels once and replays them with one launch. What makes that
valid here (docs/architecture.md §6a, "GPU execution paths"):

- **Static shapes and addresses.** Batches have a fixed size (the sampler drops the last partial
  slice); each step copies its augmented batch into the graph's input buffers. Augmentation stays
  outside the graph (it draws from its own generator); the gather, forward, loss, backward,
  optimizer step and the device-side loss/accuracy sums are inside.
- **The learning rate as a device scalar.** The schedule runs on host floats as in the eager path;
  before each replay its value is written into the one-element tensor the captured optimizer step
  reads (SGD's fused kernel takes the LR as a tensor; the foreach kernel would read it on the host).
- **Resets between replays.** The resetter restores θc by in-place copies into the same tensors
  the graph reads, after a replay and before the next one. Where a restore would rebind optimizer
  state (a snapshot taken before the state existed), `rebind_optimizer_state` puts the captured
  buffers back with the right values: zero momentum is the same as a fresh buffer for SGD without
  dampening.
- **Warm-up before capture.** The first `WARMUP_STEPS` steps run eagerly (they create the momentum
  buffers and let cuDNN choose its kernels); the first evaluation runs eagerly for the same reason.

Where a graph is not valid (the CPU, an optimizer other than SGD, `cuda_graphs=False`) or its
capture fails, the eager step runs; `ExecutionPath` says which ran and why, and the result's
provenance records it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

EAGER = "eager"
CUDA_GRAPH = "cuda_graph"
# Eager steps before the training step is captured: momentum buffers exist and cuDNN has chosen
# its algorithms after one; three is what PyTorch's whole-network capture example uses.
WARMUP_STEPS = 3
# The optimizers whose step can be captured with the learning rate as a device tensor.
GRAPH_OPTIMIZERS = ("sgd",)


@dataclass(frozen=True)
class ExecutionPath:
    """How a run's training step and evaluation execute, and why."""

    train_step: str  # CUDA_GRAPH | EAGER
    evaluation: str  # CUDA_GRAPH | EAGER
    reason: str

    def as_provenance(self) -> dict[str, str]:
        return {
            "train_step": self.train_step,
            "evaluation": self.evaluation,
            "execution_reason": self.reason,
        }


def choose_path(*, cuda_graphs: bool, device: torch.device, optimizer: str) -> ExecutionPath:
    """The paths a run starts on; a capture that fails later falls back to eager (`fall_back`)."""
    if not cuda_graphs:
        return ExecutionPath(EAGER, EAGER, "cuda_graphs is off")
    if device.type != "cuda":
        return ExecutionPath(EAGER, EAGER, f"CUDA graphs need a CUDA device, not {device}")
    if optimizer not in GRAPH_OPTIMIZERS:
        return ExecutionPath(
            EAGER,
            CUDA_GRAPH,
            f"optimizer {optimizer}: its step keeps a host-side counter, so the training step "
            "stays eager (captured: SGD)",
        )
    return ExecutionPath(CUDA_GRAPH, CUDA_GRAPH, "captured after warm-up")


def fall_back(path: ExecutionPath, *, part: str, error: BaseException) -> ExecutionPath:
    """`path` with `part` ("train_step" or "evaluation") eager because its capture failed."""
    reason = f"{part} capture failed ({type(error).__name__}: {str(error).splitlines()[0][:160]})"
    if part == "train_step":
        return ExecutionPath(EAGER, path.evaluation, reason)
    return ExecutionPath(path.train_step, EAGER, reason)


class CaptureFailed(RuntimeError):
    """A graph could not be captured; the run continues on the eager path."""

    def __init__(self, part: str, error: BaseException) -> None:
        super().__init__(f"{part}: {error}")
        self.part, self.error = part, error


class GraphedTrainStep:
    """Replays one captured training step; `step(x, y)` is the eager step's drop-in.

    `compute(x, y)` is the step itself (forward, loss, backward, optimizer step, device-side
    sums), the same function the eager path calls after `zero_grad`. Captured once, after
    `WARMUP_STEPS` eager calls; each later call copies the batch into the static buffers, writes
    the current learning rates into the LR tensors and replays.
    """

    def __init__(
        self,
        compute: Callable[[torch.Tensor, torch.Tensor], None],
        optimizer: torch.optim.Optimizer,
        device: torch.device,
    ) -> None:
        self._compute = compute
        self._optimizer = optimizer
        self._device = device
        self._eager_calls = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_x: torch.Tensor | None = None
        self._static_y: torch.Tensor | None = None
        self._lrs: list[torch.Tensor] = []
        self._captured_state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One training step: eager during warm-up, captured at the next, replayed after."""
        if self._graph is None:
            if self._eager_calls < WARMUP_STEPS:
                self._eager_step(x, y)
                self._eager_calls += 1
                return
            self._capture(x, y)
        assert self._static_x is not None and self._static_y is not None
        self._static_x.copy_(x)
        self._static_y.copy_(y)
        for lr, group in zip(self._lrs, self._optimizer.param_groups, strict=True):
            lr.fill_(float(group["lr"]))
        self._graph.replay()  # type: ignore[union-attr]

    def _eager_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        # A side stream, as PyTorch's capture recipe asks: warm-up work must not sit on the
        # stream the capture will use.
        side = torch.cuda.Stream(self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side):
            self._optimizer.zero_grad(set_to_none=True)
            self._compute(x, y)
        torch.cuda.current_stream(self._device).wait_stream(side)

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Record the step. Capture runs nothing, so a failed capture changes no values."""
        self._static_x, self._static_y = x.clone(), y.clone()
        groups = self._optimizer.param_groups
        self._lrs = [torch.full((), float(g["lr"]), device=self._device) for g in groups]
        saved = [(g["lr"], g.get("fused"), g.get("foreach")) for g in groups]
        self._optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            for group, lr in zip(groups, self._lrs, strict=True):
                group["lr"], group["fused"], group["foreach"] = lr, True, False
            with torch.cuda.graph(graph):
                self._compute(self._static_x, self._static_y)
        except Exception as error:  # any capture failure means: stay eager
            self._optimizer.zero_grad(set_to_none=True)
            raise CaptureFailed("train_step", error) from error
        finally:
            # The host-side optimizer never steps again; its groups go back as they were, so the
            # schedule, the resetter and state_dict() see plain floats and flags.
            for group, (lr, fused, foreach) in zip(groups, saved, strict=True):
                group["lr"], group["fused"], group["foreach"] = lr, fused, foreach
        self._graph = graph
        self.record_captured_state()

    def record_captured_state(self) -> None:
        """Remember the optimizer-state tensors the captured step reads (at capture)."""
        self._captured_state = {
            p: {k: v for k, v in state.items() if torch.is_tensor(v)}
            for p, state in self._optimizer.state.items()
        }

    def rebind_optimizer_state(self) -> None:
        """After a reset: give the optimizer back the tensors the graph reads, with the values
        the restore meant (a removed state becomes zeros, which SGD treats as a fresh buffer)."""
        for param, captured in self._captured_state.items():
            current = self._optimizer.state.get(param)
            for key, tensor in captured.items():
                value = current.get(key) if current else None
                if value is tensor:
                    continue
                if value is None:
                    tensor.zero_()
                else:
                    tensor.copy_(value)
                if current is None:
                    current = self._optimizer.state[param] = {}
                current[key] = tensor


class GraphedEvaluation:
    """Replays one captured evaluation (its inputs are fixed tensors, so nothing is copied in).

    `compute()` returns the evaluation's device tensors. The first call runs eagerly (cuDNN
    chooses its kernels for these shapes); the second is captured and replayed, and every later
    call replays. The returned tensors are the graph's outputs: read them before the next call.
    """

    def __init__(self, compute: Callable[[], tuple[torch.Tensor, ...]], device: torch.device):
        self._compute = compute
        self._device = device
        self._calls = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def __call__(self) -> tuple[torch.Tensor, ...]:
        if self._graph is None:
            self._calls += 1
            if self._calls == 1:
                return self._compute()
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    outputs = self._compute()
            except Exception as error:  # any capture failure means: stay eager
                raise CaptureFailed("evaluation", error) from error
            self._graph, self._outputs = graph, outputs
        self._graph.replay()
        return self._outputs
