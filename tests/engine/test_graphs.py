"""CUDA-graph execution paths: the choice, the fallback, resets between replays.

Capture itself needs a GPU: the CUDA tests below run on one (benchmarks/README.md, "GPU speed"
records the run); on the CPU, the decision, the provenance and the optimizer-state rebinding
that resets between replays rely on are checked directly.
"""

from __future__ import annotations

import pytest
import torch

from reset_tune.config import TrainConfig
from reset_tune.engine import Callback, TrainingRun, prepare_data, train
from reset_tune.engine.graphs import (
    CUDA_GRAPH,
    EAGER,
    GraphedTrainStep,
    choose_path,
    fall_back,
)
from reset_tune.resetting.snapshot import restore_, take_snapshot

FAST = dict(
    dataset="digits",
    model="cnn",
    steps=60,
    eval_every=20,
    batch_size=32,
    lr=0.05,
    noise="symmetric:0.4",
    patience=0,
    reset_prob=0.2,
    device="cpu",
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="capture needs a CUDA GPU")


def test_the_path_is_eager_off_cuda_or_when_turned_off_and_says_why():
    cpu = choose_path(cuda_graphs=True, device=torch.device("cpu"), optimizer="sgd")
    assert (cpu.train_step, cpu.evaluation) == (EAGER, EAGER)
    assert "CUDA device" in cpu.reason
    off = choose_path(cuda_graphs=False, device=torch.device("cuda"), optimizer="sgd")
    assert (off.train_step, off.evaluation) == (EAGER, EAGER)
    adam = choose_path(cuda_graphs=True, device=torch.device("cuda"), optimizer="adam")
    assert (adam.train_step, adam.evaluation) == (EAGER, CUDA_GRAPH)
    assert "adam" in adam.reason
    sgd = choose_path(cuda_graphs=True, device=torch.device("cuda"), optimizer="sgd")
    assert (sgd.train_step, sgd.evaluation) == (CUDA_GRAPH, CUDA_GRAPH)


def test_a_failed_capture_falls_back_only_for_its_part_and_names_the_error():
    path = choose_path(cuda_graphs=True, device=torch.device("cuda"), optimizer="sgd")
    after = fall_back(path, part="train_step", error=RuntimeError("operation not permitted\nmore"))
    assert (after.train_step, after.evaluation) == (EAGER, CUDA_GRAPH)
    assert "RuntimeError: operation not permitted" in after.reason
    assert "more" not in after.reason
    after_eval = fall_back(path, part="evaluation", error=ValueError("x"))
    assert (after_eval.train_step, after_eval.evaluation) == (CUDA_GRAPH, EAGER)


def test_a_cpu_result_names_the_eager_path_in_its_provenance():
    result = train(TrainConfig(**{**FAST, "steps": 20}))
    assert result.provenance["train_step"] == EAGER
    assert result.provenance["evaluation"] == EAGER
    assert "CUDA device" in result.provenance["execution_reason"]


def _sgd_pair():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    return model, optimizer


def _one_step(model, optimizer, x):
    optimizer.zero_grad(set_to_none=True)
    model(x).square().sum().backward()
    optimizer.step()


def test_zero_momentum_is_a_fresh_buffer_so_rebinding_keeps_the_method_exact():
    # A restore that drops the optimizer state (a snapshot taken before it existed) makes eager
    # SGD start a new buffer; between graph replays the captured buffer is zeroed instead.
    x = torch.randn(8, 4)
    dropped, dropped_opt = _sgd_pair()
    zeroed, zeroed_opt = _sgd_pair()
    for model, opt in ((dropped, dropped_opt), (zeroed, zeroed_opt)):
        _one_step(model, opt, x)
    dropped_opt.state.clear()
    for state in zeroed_opt.state.values():
        state["momentum_buffer"].zero_()
    for _ in range(3):
        _one_step(dropped, dropped_opt, x)
        _one_step(zeroed, zeroed_opt, x)
    for a, b in zip(dropped.parameters(), zeroed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rebinding_after_a_restore_puts_the_captured_buffers_back_with_the_restored_values():
    model, optimizer = _sgd_pair()
    x = torch.randn(8, 4)
    names = [n for n, _ in model.named_parameters()]
    empty = take_snapshot(model, optimizer, names, optimizer_names=names, step=0)  # no state yet
    _one_step(model, optimizer, x)
    with_state = take_snapshot(model, optimizer, names, optimizer_names=names, step=1)
    _one_step(model, optimizer, x)
    step = GraphedTrainStep(lambda x, y: None, optimizer, torch.device("cpu"))
    step.record_captured_state()
    captured = {p: s["momentum_buffer"] for p, s in optimizer.state.items()}

    restore_(model, optimizer, empty, optimizer_names=names)  # drops the state
    assert not optimizer.state
    step.rebind_optimizer_state()
    for param, buffer in captured.items():
        assert optimizer.state[param]["momentum_buffer"] is buffer
        assert torch.count_nonzero(buffer) == 0

    _one_step(model, optimizer, x)
    optimizer.state[next(iter(captured))]["momentum_buffer"] = torch.ones(3, 4)  # a rebind
    step.rebind_optimizer_state()
    for param, buffer in captured.items():
        assert optimizer.state[param]["momentum_buffer"] is buffer
    assert torch.equal(next(iter(captured.values())), torch.ones(3, 4))

    restore_(model, optimizer, with_state, optimizer_names=names)  # in place: nothing to do
    step.rebind_optimizer_state()
    for name, param in model.named_parameters():
        assert optimizer.state[param]["momentum_buffer"] is captured[param]
        saved = with_state.optimizer_state[name]["momentum_buffer"]
        assert torch.equal(captured[param], saved)


@needs_cuda
@pytest.mark.parametrize("model", ["cnn", "vcnn"])
def test_graphed_runs_match_eager_runs_on_a_gpu_resets_included(model):
    config = dict(FAST, model=model, device="cuda", steps=200, reset_prob=0.05)
    data = prepare_data(TrainConfig(**config), "cuda")
    graphed = train(TrainConfig(**config), data=data)
    eager = train(TrainConfig(**config, cuda_graphs=False), data=data)
    assert graphed.provenance["train_step"] == CUDA_GRAPH
    assert graphed.provenance["evaluation"] == CUDA_GRAPH
    assert eager.provenance["train_step"] == EAGER
    assert graphed.num_resets > 0
    assert graphed.reset_steps == eager.reset_steps  # the reset draws do not depend on the path
    assert graphed.best_step == eager.best_step
    assert graphed.test_acc == pytest.approx(eager.test_acc, abs=0.02)
    for g, e in zip(graphed.history, eager.history, strict=True):
        assert g["val/loss"] == pytest.approx(e["val/loss"], rel=1e-3, abs=1e-3)


class _StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_evaluation(self, run, metrics) -> None:
        if run.step >= self.step:
            run.request_stop("checkpoint")


@needs_cuda
def test_a_graphed_run_resumed_from_a_checkpoint_captures_again_and_continues():
    config = TrainConfig(**dict(FAST, device="cuda", steps=120))
    whole = train(config)
    first = TrainingRun(config)
    first.run([_StopAt(60)])
    resumed = TrainingRun(config)
    resumed.load_state_dict(first.state_dict())
    result = resumed.run()
    assert result.provenance["train_step"] == CUDA_GRAPH
    assert result.steps_completed == 120
    assert result.reset_steps == whole.reset_steps
    assert result.test_acc == pytest.approx(whole.test_acc, abs=0.02)
