"""Memory format: channels_last only for conv models on CUDA; CPU runs stay NCHW, as before.

The CUDA path itself cannot run here; these check the decision, that a channels_last batch holds
the same values as the NCHW one, and that resetting's fused copies and state round trips work
with channels_last weights (the layout the engine gives conv models on CUDA).
"""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F

from reset_tune.config import TrainConfig
from reset_tune.data import DeviceAugmenter
from reset_tune.engine import TrainingRun
from reset_tune.engine.runtime import memory_format_for
from reset_tune.models import build_model
from reset_tune.resetting import StochasticResetter

CL = torch.channels_last


def test_channels_last_only_for_conv_models_on_cuda():
    cnn = build_model("cnn", in_channels=3, num_classes=10, image_size=16)
    mlp = build_model("mlp", in_channels=3, num_classes=10, image_size=16)
    assert memory_format_for(cnn, torch.device("cuda")) == CL
    assert memory_format_for(cnn, torch.device("cpu")) == torch.contiguous_format
    assert memory_format_for(mlp, torch.device("cuda")) == torch.contiguous_format


def test_a_cpu_run_keeps_its_conv_model_and_batches_nchw():
    config = TrainConfig(dataset="digits", model="cnn", steps=2, eval_every=1, device="cpu")
    run = TrainingRun(config)
    assert run.memory_format == torch.contiguous_format
    assert all(p.is_contiguous() for p in run.model.parameters())
    x = run.augmenter.train_batch(run.data.train_x[run.sampler.next_indices()])
    assert x.is_contiguous()


def test_channels_last_batches_hold_the_same_values_and_draws():
    images = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    settings = dict(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), augment="crop-flip", seed=7)
    nchw = DeviceAugmenter(**settings, device="cpu")
    nhwc = DeviceAugmenter(**settings, device="cpu", memory_format=CL)
    for _ in range(3):  # the same random crops and flips, batch after batch
        a, b = nchw.train_batch(images), nhwc.train_batch(images)
        assert a.is_contiguous() and b.is_contiguous(memory_format=CL) and not b.is_contiguous()
        assert torch.equal(a, b)
    b = nhwc.eval_batch(images)
    assert b.is_contiguous(memory_format=CL) and torch.equal(nchw.eval_batch(images), b)


def _sgd_step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def test_resetting_restores_channels_last_weights_and_round_trips_across_layouts():
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=3, num_classes=10, image_size=8).to(memory_format=CL)
    nchw_model = build_model("cnn", in_channels=3, num_classes=10, image_size=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    resetter = StochasticResetter(model, optimizer, reset_prob=1.0, patience=0)
    x = torch.randn(8, 3, 8, 8).contiguous(memory_format=CL)
    y = torch.arange(8) % 10
    conv_weight = model.block1[0].weight
    assert conv_weight.is_contiguous(memory_format=CL) and not conv_weight.is_contiguous()

    _sgd_step(model, optimizer, x, y)
    resetter.step()
    resetter.observe(val_loss=1.0, val_acc=0.5)  # θbest = θc = now; armed (patience 0)
    assert resetter.armed
    saved = {n: t.clone() for n, t in model.state_dict().items()}
    saved_momentum = optimizer.state[conv_weight]["momentum_buffer"].clone()

    _sgd_step(model, optimizer, x, y)
    assert not torch.equal(conv_weight, saved["block1.0.weight"])
    assert resetter.step()  # r = 1: reset to θc
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert conv_weight.is_contiguous(memory_format=CL)  # restored in place, layout kept
    assert torch.equal(optimizer.state[conv_weight]["momentum_buffer"], saved_momentum)

    # The resetter's state, saved from channels_last weights, restores into an NCHW model...
    buffer = io.BytesIO()
    torch.save(resetter.state_dict(), buffer)
    other = StochasticResetter(nchw_model, None, reset_prob=1.0, patience=0)
    other.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=False))
    other.copy_best_to_()
    for name, tensor in nchw_model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert nchw_model.block1[0].weight.is_contiguous()
    # ... and an NCHW model's state dict loads into the channels_last one.
    model.load_state_dict(nchw_model.state_dict())
    assert conv_weight.is_contiguous(memory_format=CL)
