"""StochasticResetter semantics (docs/method.md §1.2–§1.9 and §7), one behaviour per test."""

from __future__ import annotations

import io
import math

import pytest
import torch

from reset_tune.errors import ConfigError
from reset_tune.resetting import StochasticResetter


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    )
    model.layer_groups = {"body": ("0", "1"), "head": ("3",)}
    return model


def sgd(model: torch.nn.Module, lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def train_steps(model, optimizer, resetter, steps, *, generator_seed=0, start=0):
    """Deterministic toy training: the batch depends only on the step number."""
    for step in range(start + 1, start + steps + 1):
        g = torch.Generator().manual_seed(generator_seed * 100_003 + step)
        x = torch.randn(16, 4, generator=g)
        y = torch.randint(0, 3, (16,), generator=g)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        resetter.step()


def arm_now(resetter, val_loss=1.0):
    """With patience 0, the first observation makes θbest and arms at once."""
    resetter.observe(val_loss=val_loss, val_acc=0.5)
    assert resetter.armed


def snapshot_of(model, optimizer):
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    momentum = {
        n: optimizer.state[p]["momentum_buffer"].clone()
        for n, p in model.named_parameters()
        if p in optimizer.state
    }
    return params, buffers, momentum


@torch.no_grad()
def perturb_(model, optimizer):
    for p in model.parameters():
        p.add_(1.0)
        optimizer.state[p]["momentum_buffer"].add_(3.0)
    for b in model.buffers():
        if b.dtype.is_floating_point:
            b.add_(2.0)
        else:
            b.add_(7)


# -- arming ------------------------------------------------------------------------------------


def test_arms_at_first_evaluation_with_patience_steps_without_improvement():
    model = make_model()
    resetter = StochasticResetter(model, sgd(model), reset_prob=0.1, patience=30)
    losses = {10: 2.0, 20: 1.5, 30: 1.6, 40: 1.5, 50: 1.7, 60: 1.0}
    armed_at = checkpoint_at_arming = None
    for step in range(1, 61):
        resetter.step()
        if step in losses:
            resetter.observe(val_loss=losses[step], val_acc=0.0)
            if resetter.armed and armed_at is None:
                armed_at, checkpoint_at_arming = step, resetter.checkpoint_step
    # Best at 20; a tie (1.5 at 40) is no improvement; 50 - 20 = 30 = patience.
    assert armed_at == 50
    assert resetter.armed_step == 50
    assert checkpoint_at_arming == 20  # θc := θbest of the arming moment
    assert resetter.checkpoint_step == 60  # adaptive: the new best at 60 became θc


def test_does_not_arm_while_improving_nor_before_warmup():
    model = make_model()
    resetter = StochasticResetter(model, sgd(model), reset_prob=0.1, patience=0, warmup=100)
    for step in range(1, 101):
        resetter.step()
        if step % 10 == 0:
            resetter.observe(val_loss=1.0, val_acc=0.0)
            assert resetter.armed == (step >= 100)


def test_arming_on_memorisation_needs_both_the_plateau_and_memorisation():
    model = make_model()
    gated = StochasticResetter(
        model, sgd(model), reset_prob=0.1, patience=30, arm_on_memorisation=True
    )
    plain = StochasticResetter(model, sgd(model), reset_prob=0.1, patience=30)
    # Best at 20 and never again; memorisation is reported from step 80 on.
    events = {10: 2.0, 20: 1.5, 30: 1.6, 40: 1.7, 50: 1.7, 60: 1.8, 70: 1.8, 80: 1.9, 90: 2.0}
    for step in range(1, 91):
        gated.step()
        plain.step()
        if step in events:
            gated.observe(val_loss=events[step], val_acc=0.0, memorising=step >= 80)
            plain.observe(val_loss=events[step], val_acc=0.0, memorising=False)
    assert plain.armed_step == 50  # the patience rule ignores the memorisation verdict
    assert gated.armed_step == 80  # the first evaluation with both
    assert gated.checkpoint_step == 20  # θc := θbest, as with the patience rule


def test_arming_on_memorisation_still_waits_for_patience():
    model = make_model()
    gated = StochasticResetter(
        model, sgd(model), reset_prob=0.1, patience=30, arm_on_memorisation=True
    )
    for step, loss in [(10, 2.0), (20, 1.0), (30, 0.9), (40, 0.8)]:
        gated.step_count = step
        gated.observe(val_loss=loss, val_acc=0.0, memorising=True)  # improving all along
    assert not gated.armed


def test_arming_on_memorisation_refuses_a_call_without_the_verdict_and_changes_nothing():
    model = make_model()
    gated = StochasticResetter(model, sgd(model), reset_prob=0.1, arm_on_memorisation=True)
    before = gated.state_dict()
    with pytest.raises(ValueError, match="memorising="):
        gated.observe(val_loss=1.0, val_acc=0.5)
    assert gated.best_step is None and gated.state_dict()["best"] is before["best"] is None
    with pytest.raises(ConfigError, match="arm_on_memorisation"):
        StochasticResetter(model, sgd(model), reset_prob=0.1, arm_on_memorisation="yes")


def test_the_state_is_the_same_whichever_arming_rule():
    # The arming rule is a setting, like patience, not state: states move between the two.
    model = make_model()
    plain = StochasticResetter(model, sgd(model), reset_prob=0.5, patience=0)
    plain.observe(val_loss=1.0, val_acc=0.5)
    train_steps(model, plain.optimizer, plain, 5)
    gated = StochasticResetter(
        model, sgd(model), reset_prob=0.5, patience=0, arm_on_memorisation=True
    )
    gated.load_state_dict(plain.state_dict())
    assert set(gated.state_dict()) == set(plain.state_dict())
    assert gated.armed_step == plain.armed_step == 0
    assert gated.reset_steps == plain.reset_steps


def test_never_resets_before_arming_even_at_rate_one():
    model = make_model()
    resetter = StochasticResetter(model, sgd(model), reset_prob=1.0, patience=10**6)
    resetter.observe(val_loss=1.0, val_acc=0.0)
    assert not any(resetter.step() for _ in range(200))
    assert resetter.num_resets == 0


def test_val_acc_metric_picks_highest_accuracy():
    model = make_model()
    resetter = StochasticResetter(
        model, sgd(model), reset_prob=0.0, checkpoint_metric="val_acc", patience=100
    )
    for loss, acc in [(1.0, 0.5), (0.5, 0.4), (2.0, 0.7), (0.1, 0.6)]:
        resetter.step()
        resetter.observe(val_loss=loss, val_acc=acc)
    assert resetter.best_step == 3
    assert resetter.best_val_acc == 0.7 and resetter.best_val_loss == 2.0


# -- reset rate --------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.3])
def test_resets_happen_at_rate_r(rate):
    model = make_model()
    resetter = StochasticResetter(model, sgd(model), reset_prob=rate, seed=7)
    arm_now(resetter)
    steps = 40_000
    flags = [resetter.step() for _ in range(steps)]
    count = sum(flags)
    sd = math.sqrt(steps * rate * (1 - rate))
    assert abs(count - steps * rate) < 4 * sd
    # Memorylessness: the chance of a reset right after a reset is still r.
    after_reset = [flags[i + 1] for i in range(steps - 1) if flags[i]]
    p = sum(after_reset) / len(after_reset)
    assert abs(p - rate) < 4 * math.sqrt(rate * (1 - rate) / len(after_reset)) + 1e-9


def test_rate_zero_never_and_rate_one_always_resets():
    for rate, expected in ((0.0, 0), (1.0, 500)):
        model = make_model()
        resetter = StochasticResetter(model, sgd(model), reset_prob=rate)
        arm_now(resetter)
        assert sum(resetter.step() for _ in range(500)) == expected


def test_reset_schedule_depends_on_seed_only():
    def reset_steps(seed):
        model = make_model()
        resetter = StochasticResetter(model, sgd(model), reset_prob=0.05, seed=seed)
        arm_now(resetter)
        for _ in range(2000):
            resetter.step()
        return resetter.reset_steps

    assert reset_steps(3) == reset_steps(3)
    assert reset_steps(3) != reset_steps(4)


# -- what a reset restores ---------------------------------------------------------------------


def prepared(reset_layers, **kwargs):
    model = make_model()
    optimizer = sgd(model)
    resetter = StochasticResetter(
        model, optimizer, reset_prob=1.0, reset_layers=reset_layers, **kwargs
    )
    train_steps(model, optimizer, resetter, 5)
    arm_now(resetter)
    saved = snapshot_of(model, optimizer)
    perturb_(model, optimizer)
    perturbed = snapshot_of(model, optimizer)
    assert resetter.step()  # r = 1: the next step resets
    return model, optimizer, saved, perturbed


def assert_state(model, optimizer, expected_by_name):
    params, buffers, momentum = snapshot_of(model, optimizer)
    for name, (p_ref, m_ref) in expected_by_name["params"].items():
        torch.testing.assert_close(params[name], p_ref, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(momentum[name], m_ref, rtol=0, atol=0, msg=name)
    for name, b_ref in expected_by_name["buffers"].items():
        torch.testing.assert_close(buffers[name], b_ref, rtol=0, atol=0, msg=name)


def expected(saved, perturbed, restored_params, restored_buffers):
    (sp, sb, sm), (pp, pb, pm) = saved, perturbed
    return {
        "params": {n: ((sp[n], sm[n]) if n in restored_params else (pp[n], pm[n])) for n in sp},
        "buffers": {n: (sb[n] if n in restored_buffers else pb[n]) for n in sb},
    }


def test_full_reset_restores_weights_buffers_and_momentum():
    model, optimizer, saved, perturbed = prepared("all")
    everything = set(saved[0]), set(saved[1])
    assert_state(model, optimizer, expected(saved, perturbed, *everything))


def test_head_reset_restores_only_the_head():
    model, optimizer, saved, perturbed = prepared("head")
    assert_state(model, optimizer, expected(saved, perturbed, {"3.weight", "3.bias"}, set()))


def test_group_reset_brings_its_batchnorm_buffers():
    model, optimizer, saved, perturbed = prepared("body")
    params = {"0.weight", "0.bias", "1.weight", "1.bias"}
    buffers = {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert_state(model, optimizer, expected(saved, perturbed, params, buffers))


def test_glob_reset_selects_by_parameter_name_with_owner_buffers():
    model, optimizer, saved, perturbed = prepared("1.*")
    buffers = {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert_state(model, optimizer, expected(saved, perturbed, {"1.weight", "1.bias"}, buffers))


def test_without_optimizer_restore_momentum_is_left_alone():
    model = make_model()
    optimizer = sgd(model)
    resetter = StochasticResetter(model, optimizer, reset_prob=1.0, restore_optimizer=False)
    train_steps(model, optimizer, resetter, 5)
    arm_now(resetter)
    saved = snapshot_of(model, optimizer)
    perturb_(model, optimizer)
    momentum_before = snapshot_of(model, optimizer)[2]
    resetter.step()
    params, _, momentum = snapshot_of(model, optimizer)
    for name in params:
        torch.testing.assert_close(params[name], saved[0][name], rtol=0, atol=0)
        torch.testing.assert_close(momentum[name], momentum_before[name], rtol=0, atol=0)


def test_reset_copies_in_place_without_replacing_tensors():
    model = make_model()
    optimizer = sgd(model)
    resetter = StochasticResetter(model, optimizer, reset_prob=1.0)
    train_steps(model, optimizer, resetter, 3)
    arm_now(resetter)
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    pointers = [t.data_ptr() for t in tensors]
    perturb_(model, optimizer)
    assert resetter.step()
    after = [*model.parameters(), *model.buffers()]
    after += [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    assert [t.data_ptr() for t in after] == pointers


# -- adaptive θc -------------------------------------------------------------------------------


@pytest.mark.parametrize("adaptive", [True, False])
def test_adaptive_moves_the_checkpoint_to_each_new_best(adaptive):
    model = make_model()
    optimizer = sgd(model)
    resetter = StochasticResetter(model, optimizer, reset_prob=0.0, patience=0, adaptive=adaptive)
    train_steps(model, optimizer, resetter, 3)
    resetter.observe(val_loss=1.0, val_acc=0.0)  # θbest at 3, arms, θc := θbest
    at_arming = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, optimizer, resetter, 3, start=3)
    resetter.observe(val_loss=0.5, val_acc=0.0)  # new θbest at 6
    at_new_best = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, optimizer, resetter, 2, start=6)
    resetter.reset_prob = 1.0
    resetter._schedule_next_reset()
    assert resetter.step()
    target = at_new_best if adaptive else at_arming
    assert resetter.checkpoint_step == (6 if adaptive else 3)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), target[name], rtol=0, atol=0)


# -- learning rate at a reset ------------------------------------------------------------------


@pytest.mark.parametrize("mode, expected_lr", [("keep", 0.01), ("restore", 0.1)])
def test_lr_on_reset(mode, expected_lr):
    model = make_model()
    optimizer = sgd(model, lr=0.1)
    resetter = StochasticResetter(model, optimizer, reset_prob=1.0, lr_on_reset=mode)
    train_steps(model, optimizer, resetter, 2)
    arm_now(resetter)  # θc stored with lr 0.1
    optimizer.param_groups[0]["lr"] = 0.01  # the schedule has decayed since
    assert resetter.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr)


def test_restored_lr_is_decayed_from_by_a_chained_cosine_schedule():
    model = make_model()
    optimizer = sgd(model, lr=1.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    resetter = StochasticResetter(model, optimizer, reset_prob=1.0, lr_on_reset="restore")
    optimizer.step()
    resetter.step()
    scheduler.step()
    arm_now(resetter)  # θc's LR is the one after step 1
    lr_at_checkpoint = optimizer.param_groups[0]["lr"]
    for _ in range(3):
        optimizer.step()
        resetter.step()  # restores lr_at_checkpoint
        scheduler.step()  # then one chained cosine decay from it
    t = scheduler.last_epoch
    chained = (
        lr_at_checkpoint * (1 + math.cos(math.pi * t / 10)) / (1 + math.cos(math.pi * (t - 1) / 10))
    )
    assert optimizer.param_groups[0]["lr"] == pytest.approx(chained)


# -- state round-trip --------------------------------------------------------------------------


def build_run(seed=0):
    model = make_model()
    optimizer = sgd(model)
    resetter = StochasticResetter(
        model, optimizer, reset_prob=0.1, reset_layers="head", patience=20, seed=seed
    )
    return model, optimizer, resetter


def run_with_evaluations(model, optimizer, resetter, start, stop):
    for step in range(start + 1, stop + 1):
        train_steps(model, optimizer, resetter, 1, start=step - 1)
        if step % 10 == 0:
            # A validation loss that improves, then stalls so that resetting arms.
            resetter.observe(val_loss=max(1.0, 3.0 - step / 20) + (step % 30) / 100, val_acc=0.0)


def test_resume_from_state_dict_equals_uninterrupted_run():
    model_a, opt_a, res_a = build_run()
    run_with_evaluations(model_a, opt_a, res_a, 0, 300)
    assert res_a.armed and res_a.num_resets > 3

    model_b, opt_b, res_b = build_run()
    run_with_evaluations(model_b, opt_b, res_b, 0, 150)
    buffer = io.BytesIO()
    torch.save(
        {"model": model_b.state_dict(), "opt": opt_b.state_dict(), "res": res_b.state_dict()},
        buffer,
    )
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model_c, opt_c, res_c = build_run(seed=99)  # a different seed: the state must override it
    model_c.load_state_dict(saved["model"])
    opt_c.load_state_dict(saved["opt"])
    res_c.load_state_dict(saved["res"])
    run_with_evaluations(model_c, opt_c, res_c, 150, 300)

    assert res_c.reset_steps == res_a.reset_steps
    assert res_c.armed_step == res_a.armed_step
    assert res_c.checkpoint_step == res_a.checkpoint_step
    for (name, pa), pc in zip(
        model_a.state_dict().items(), model_c.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(pc, pa, rtol=0, atol=0, msg=name)


def test_load_state_dict_checks_structure_before_changing_anything():
    model, optimizer, resetter = build_run()
    run_with_evaluations(model, optimizer, resetter, 0, 100)
    state = resetter.state_dict()
    other_model = make_model()
    other = StochasticResetter(other_model, sgd(other_model), reset_prob=0.1, reset_layers="all")
    with pytest.raises(ValueError, match="reset_layers"):
        other.load_state_dict(state)
    assert other.step_count == 0 and not other.armed


# -- bad settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"reset_prob": 1.5}, "reset_prob=1.5"),
        ({"reset_prob": -0.1}, "reset_prob=-0.1"),
        ({"reset_prob": "often"}, "reset_prob='often'"),
        ({"reset_prob": 0.1, "reset_layers": "layer9"}, "'layer9'"),
        ({"reset_prob": 0.1, "reset_layers": "encoder.*"}, "'encoder.*'"),
        ({"reset_prob": 0.1, "reset_layers": ""}, "reset_layers"),
        ({"reset_prob": 0.1, "patience": -1}, "patience=-1"),
        ({"reset_prob": 0.1, "warmup": 2.5}, "warmup=2.5"),
        ({"reset_prob": 0.1, "lr_on_reset": "reset"}, "'reset'"),
        ({"reset_prob": 0.1, "checkpoint_metric": "val_f1"}, "'val_f1'"),
    ],
)
def test_invalid_settings_name_the_setting(kwargs, fragment):
    model = make_model()
    with pytest.raises(ConfigError) as error:
        StochasticResetter(model, sgd(model), **kwargs)
    assert fragment in str(error.value)


def test_unknown_group_message_lists_the_allowed_groups():
    model = make_model()
    with pytest.raises(ConfigError) as error:
        StochasticResetter(model, sgd(model), reset_prob=0.1, reset_layers="layer4")
    assert "body" in str(error.value) and "head" in str(error.value)
