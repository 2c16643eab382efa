"""The training loop: one run of SGD with stochastic resetting on noisily-labelled data.

The hot loop has no host syncs: batches are slices of a device-side permutation, augmentation
runs on the device, and training loss/accuracy accumulate on the device until the next
evaluation, which reads everything back in one transfer.

At every evaluation the label-free memorisation detector (`engine.memorisation`) takes the
accuracy of the evaluated model on a fixed subset of the training split (the train probe) and on
the validation split, both against their noisy labels (host floats of that one transfer), before
the resetter observes the evaluation, so `arm_on_memorisation` can act on the same evaluation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from reset_tune import names
from reset_tune.config import TrainConfig
from reset_tune.data import (
    BatchSampler,
    DataSplits,
    DeviceAugmenter,
    build_splits,
    load_dataset,
    parse_noise_spec,
)
from reset_tune.engine.callbacks import Callback
from reset_tune.engine.evaluation import (
    autocast_context,
    evaluate_split,
    memorisation_fraction,
    predictions,
)
from reset_tune.engine.graphs import (
    CUDA_GRAPH,
    CaptureFailed,
    GraphedEvaluation,
    GraphedTrainStep,
    choose_path,
    fall_back,
)
from reset_tune.engine.memorisation import (
    TRAIN_PROBE_STREAM,
    MemorisationDetector,
    replay_detector,
    train_probe_size,
)
from reset_tune.engine.optim import build_optimizer, build_scheduler
from reset_tune.engine.result import TrainResult
from reset_tune.engine.runtime import (
    kernel_settings,
    memory_format_for,
    provenance,
    resolve_device,
)
from reset_tune.errors import ConfigError, TrainingDiverged
from reset_tune.losses import build_loss
from reset_tune.models import build_model
from reset_tune.resetting import StochasticResetter
from reset_tune.seeding import INIT_STREAM, MEMORISATION_STREAM, torch_seed

# 2: the memorisation detector's state joined; a version-1 state rebuilds it from its history.
_STATE_VERSION = 2
_READABLE_STATE_VERSIONS = (1, 2)
# Keys that may differ between a saved state and the run resuming it.
_RESUMABLE_DIFFERENCES = frozenset(
    {"device", "data_root", "download", "eval_batch_size", "cuda_graphs"}
)


# The settings that determine a run's data: runs agreeing on these can share one DataSplits.
DATA_SETTINGS = (
    "dataset", "data_root", "label_file", "image_size", "noise", "val_fraction", "clean_val",
    "train_subset", "augment", "seed",
)  # fmt: skip


def data_settings(config: TrainConfig) -> dict[str, Any]:
    return {key: getattr(config, key) for key in DATA_SETTINGS}


def prepare_data(config: TrainConfig, device: torch.device | str = "cpu") -> DataSplits:
    """Load the dataset, inject the label noise and carve the splits, as `config` says."""
    noise = parse_noise_spec(config.noise)
    dataset = load_dataset(
        config.dataset,
        data_root=config.data_root,
        download=config.download,
        label_file=config.label_file,
        image_size=config.image_size,
    )
    splits = build_splits(
        dataset,
        noise=noise,
        seed=config.seed,
        val_fraction=config.val_fraction,
        clean_val=config.clean_val,
        train_subset=config.train_subset,
        augment=config.augment,
        device=device,
    )
    splits.settings = data_settings(config)
    return splits


class TrainingRun:
    """Everything one run needs, built and validated before the first step; owns the loop."""

    def __init__(self, config: TrainConfig, *, data: DataSplits | None = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        if config.precision == "bf16" and self.device.type != "cuda":
            raise ConfigError("precision bf16 needs a CUDA device; use --precision fp32 on CPU.")
        if data is not None and data.settings != data_settings(config):
            differing = sorted(
                k for k, v in data_settings(config).items() if data.settings.get(k) != v
            )
            raise ValueError(f"the data given were prepared with other settings: {differing}")
        self.data = prepare_data(config, self.device) if data is None else data.to(self.device)
        n_train = int(self.data.train_y.shape[0])
        if config.batch_size > n_train:
            raise ConfigError(
                f"batch_size ({config.batch_size}) exceeds the training split ({n_train} samples); "
                "lower --batch-size or use more training data."
            )
        self.autocast_dtype = torch.bfloat16 if config.precision == "bf16" else None

        with torch.random.fork_rng(devices=[]):
            # Initialisation depends on the seed only, without touching the caller's global RNG.
            torch.manual_seed(torch_seed(config.seed, INIT_STREAM))
            model = build_model(
                config.model,
                in_channels=self.data.in_channels,
                num_classes=self.data.num_classes,
                image_size=self.data.image_size,
            )
        # channels_last on CUDA for conv models (`memory_format_for`); the optimizer, resetter
        # snapshots (clones) and momentum buffers (like the gradients) take the weights' layout.
        self.memory_format = memory_format_for(model, self.device)
        # torch's stubs have no overload for device and memory_format together; Module.to takes both
        self.model = model.to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.loss_fn = build_loss(
            config.loss,
            num_classes=self.data.num_classes,
            gce_q=config.gce_q,
            sce_alpha=config.sce_alpha,
            sce_beta=config.sce_beta,
        )
        self.resetter = StochasticResetter(
            self.model,
            self.optimizer,
            reset_prob=config.reset_prob,
            reset_layers=config.reset_layers,
            patience=config.patience,
            warmup=config.warmup,
            arm_on_memorisation=config.arm_on_memorisation,
            checkpoint_metric=config.checkpoint_metric,
            adaptive=config.adaptive,
            restore_optimizer=config.restore_optimizer,
            lr_on_reset=config.lr_on_reset,
            seed=config.resolved_reset_seed,
        )
        self.sampler = BatchSampler(
            n_train,
            config.batch_size,
            seed=config.seed,
            device=self.device,
        )
        self.augmenter = DeviceAugmenter(
            mean=self.data.mean,
            std=self.data.std,
            augment=self.data.augment,
            seed=config.seed,
            device=self.device,
            memory_format=self.memory_format,
        )
        self._memorisation_index = self._choose_memorisation_probe()
        # Label-free: accuracy on a fixed training subset vs on the validation split, both noisy.
        n_val = max(1, int(self.data.val_y.shape[0]))
        probe = self._choose_train_probe(n_train, n_val)
        self._probe_x, self._probe_y = self.data.train_x[probe], self.data.train_y[probe]
        self.memorisation = MemorisationDetector(n_val=n_val)

        self.step = 0
        self.history: list[dict[str, float]] = []
        self.elapsed_s = 0.0
        self._stop_reason: str | None = None
        self._train_loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self._train_correct = torch.zeros((), device=self.device, dtype=torch.int64)
        self._train_steps_since_eval = 0

        # How the step and the evaluation execute (`engine.graphs`); recorded in the provenance.
        self.path = choose_path(
            cuda_graphs=config.cuda_graphs, device=self.device, optimizer=config.optimizer
        )
        self._graphed_step = (
            GraphedTrainStep(self._compute_step, self.optimizer, self.device)
            if self.path.train_step == CUDA_GRAPH
            else None
        )
        self._graphed_evaluation = (
            GraphedEvaluation(self._evaluation_tensors, self.device)
            if self.path.evaluation == CUDA_GRAPH
            else None
        )
        self._started = 0.0
        self._interval_started = 0.0
        self._interval_first_step = 0

    # -- control ----------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Stop after the current evaluation (e.g. an early-stopping scheduler's decision)."""
        self._stop_reason = reason

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, callbacks: Sequence[Callback] = ()) -> TrainResult:
        """Train to `config.steps` (or a requested stop), evaluate θbest on the test split.

        The kernel settings (`config.deterministic`) hold only while this runs: the caller's
        deterministic-algorithms mode, cuDNN flags and `CUBLAS_WORKSPACE_CONFIG` come back when it
        returns or raises.
        """
        with kernel_settings(deterministic=self.config.deterministic, device=self.device):
            return self._run(callbacks)

    def _run(self, callbacks: Sequence[Callback]) -> TrainResult:
        self.begin(callbacks)
        while self.advance(callbacks):
            pass
        return self.end(callbacks)

    # The loop in three calls, so that a `TrainingGroup` can step several runs in lockstep.
    def begin(self, callbacks: Sequence[Callback] = ()) -> None:
        """Start the loop (callbacks' `on_train_start`, the clocks). Inside `kernel_settings`."""
        for callback in callbacks:
            callback.on_train_start(self)
        self.model.train()
        self._started = time.perf_counter() - self.elapsed_s
        self._interval_started = time.perf_counter()
        self._interval_first_step = self.step

    def advance(self, callbacks: Sequence[Callback] = ()) -> bool:
        """One training step, and the evaluation when one is due; False once the loop is over."""
        if self.step >= self.config.steps or self._stop_reason is not None:
            return False
        self._train_step()
        if self.step % self.config.eval_every == 0 or self.step == self.config.steps:
            metrics = self._evaluate()
            now = time.perf_counter()
            metrics[names.STEPS_PER_S] = (self.step - self._interval_first_step) / max(
                now - self._interval_started, 1e-9
            )
            self.elapsed_s = now - self._started
            self.history.append(metrics)
            for callback in callbacks:
                callback.on_evaluation(self, metrics)
            self._interval_started, self._interval_first_step = time.perf_counter(), self.step
        return self.step < self.config.steps and self._stop_reason is None

    def end(self, callbacks: Sequence[Callback] = ()) -> TrainResult:
        """θbest's test accuracy and the result (callbacks' `on_train_end`)."""
        self.elapsed_s = time.perf_counter() - self._started
        result = self._finish()
        for callback in callbacks:
            callback.on_train_end(self, result)
        return result

    def _train_step(self) -> None:
        index = self.sampler.next_indices()
        x = self.augmenter.train_batch(self.data.train_x[index])
        y = self.data.train_y[index]
        if self._graphed_step is not None:
            try:
                self._graphed_step.step(x, y)
            except CaptureFailed as failed:
                self.path = fall_back(self.path, part=failed.part, error=failed.error)
                self._graphed_step = None
        if self._graphed_step is None:
            self.optimizer.zero_grad(set_to_none=True)
            self._compute_step(x, y)
        if self.resetter.step() and self._graphed_step is not None and self._graphed_step.captured:
            self._graphed_step.rebind_optimizer_state()
        self.scheduler.step()
        self.step += 1
        self._train_steps_since_eval += 1

    def _compute_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, loss, backward, optimizer step and the device-side sums: what a graph holds."""
        with autocast_context(self.device, self.autocast_dtype, cache_enabled=False):
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
        loss.backward()
        self.optimizer.step()
        self._train_loss_sum += loss.detach().double()
        self._train_correct += (logits.detach().argmax(dim=1) == y).sum()

    def _choose_memorisation_probe(self) -> torch.Tensor | None:
        if self.data.train_is_wrong is None:
            return None
        wrong = torch.nonzero(self.data.train_is_wrong.cpu(), as_tuple=False).flatten()
        limit = self.config.memorisation_samples
        if limit and wrong.numel() > limit:
            generator = torch.Generator().manual_seed(
                torch_seed(self.config.seed, MEMORISATION_STREAM)
            )
            wrong = wrong[torch.randperm(wrong.numel(), generator=generator)[:limit]].sort().values
        return wrong.to(self.device)

    def _choose_train_probe(self, n_train: int, n_val: int) -> torch.Tensor:
        """A fixed random subset of the training split, the size of the validation split (at
        most `TRAIN_PROBE_MAX`), from its own seeded stream: training is left untouched."""
        size = train_probe_size(n_train=n_train, n_val=n_val)
        generator = torch.Generator().manual_seed(torch_seed(self.config.seed, TRAIN_PROBE_STREAM))
        chosen = torch.randperm(n_train, generator=generator)[:size].sort().values
        return chosen.to(self.device)

    def _evaluation_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Validation loss and accuracy, the memorisation fraction and the train probe's accuracy,
        as device tensors (the model is in eval mode): what an evaluation graph holds."""
        config, data = self.config, self.data
        val_loss, val_acc = evaluate_split(
            self.model,
            data.val_x,
            data.val_y,
            self.augmenter.eval_batch,
            batch_size=config.eval_batch_size,
            autocast_dtype=self.autocast_dtype,
        )
        if self._memorisation_index is not None:
            index = self._memorisation_index
            predicted = predictions(
                self.model,
                data.train_x[index],
                self.augmenter.eval_batch,
                batch_size=config.eval_batch_size,
                autocast_dtype=self.autocast_dtype,
            )
            memorisation = memorisation_fraction(predicted, data.train_y[index])
        else:
            memorisation = torch.full((), math.nan, device=self.device, dtype=torch.float64)
        _, probe_acc = evaluate_split(
            self.model,
            self._probe_x,
            self._probe_y,
            self.augmenter.eval_batch,
            batch_size=config.eval_batch_size,
            autocast_dtype=self.autocast_dtype,
        )
        return val_loss, val_acc, memorisation, probe_acc

    def _evaluate(self) -> dict[str, float]:
        config = self.config
        self.model.eval()
        if self._graphed_evaluation is not None:
            try:
                val_loss, val_acc, memorisation, probe_acc = self._graphed_evaluation()
            except CaptureFailed as failed:
                self.path = fall_back(self.path, part=failed.part, error=failed.error)
                self._graphed_evaluation = None
        if self._graphed_evaluation is None:
            val_loss, val_acc, memorisation, probe_acc = self._evaluation_tensors()
        self.model.train()
        steps = max(1, self._train_steps_since_eval)
        seen = steps * config.batch_size
        # The one host sync of an evaluation.
        train_loss, train_correct, v_loss, v_acc, mem, p_acc = torch.stack(
            [
                self._train_loss_sum / steps,
                self._train_correct.double() / seen,
                val_loss.double(),
                val_acc.double(),
                memorisation,
                probe_acc.double(),
            ]
        ).tolist()
        self._train_loss_sum.zero_()
        self._train_correct.zero_()
        self._train_steps_since_eval = 0
        # A finite blow-up is divergence too (lr=90 gives a loss of 1e9, then chance accuracy):
        # a chance-level classifier's cross-entropy is ln(C), so 100x that is not training.
        limit = 100.0 * max(1.0, math.log(self.data.num_classes))
        if (
            not (math.isfinite(train_loss) and math.isfinite(v_loss))
            or max(train_loss, v_loss) > limit
        ):
            raise TrainingDiverged(
                f"training diverged at step {self.step}: train loss {train_loss}, val loss "
                f"{v_loss}; lower the learning rate (lr={config.lr}) or use fp32."
            )
        gap = self.memorisation.observe(
            step=self.step, train_acc=p_acc, val_acc=v_acc, n_seen=int(self._probe_y.shape[0])
        )
        memorising = self.memorisation.memorising
        self.resetter.observe(val_loss=v_loss, val_acc=v_acc, memorising=memorising)
        return {
            names.STEP: float(self.step),
            names.TRAIN_LOSS: train_loss,
            names.TRAIN_ACC: train_correct,
            names.VAL_LOSS: v_loss,
            names.VAL_ACC: v_acc,
            names.MEMORISATION: mem,
            names.TRAIN_PROBE_ACC: p_acc,
            names.MEMORISATION_GAP: gap,
            names.MEMORISING: 1.0 if memorising else 0.0,
            names.LR: float(self.optimizer.param_groups[0]["lr"]),
            names.RESET_COUNT: float(self.resetter.num_resets),
            names.RESET_ARMED: 1.0 if self.resetter.armed else 0.0,
        }

    def _test_accuracy(self) -> float:
        self.model.eval()
        _, acc = evaluate_split(
            self.model,
            self.data.test_x,
            self.data.test_y,
            self.augmenter.eval_batch,
            batch_size=self.config.eval_batch_size,
            autocast_dtype=self.autocast_dtype,
        )
        return float(acc)

    def _finish(self) -> TrainResult:
        r = self.resetter
        if r.best_step is None:
            raise RuntimeError("the run ended before its first evaluation; nothing to report")
        assert r.best_val_loss is not None and r.best_val_acc is not None  # set with best_step
        final_test_acc = self._test_accuracy()
        r.copy_best_to_()
        test_acc = self._test_accuracy()
        return TrainResult(
            test_acc=test_acc,
            final_test_acc=final_test_acc,
            best_step=int(r.best_step),
            best_val_loss=float(r.best_val_loss),
            best_val_acc=float(r.best_val_acc),
            num_resets=r.num_resets,
            reset_steps=list(r.reset_steps),
            armed_step=r.armed_step,
            checkpoint_step=r.checkpoint_step,
            steps_completed=self.step,
            stopped_early=self._stop_reason,
            wall_time_s=self.elapsed_s,
            steps_per_s=self.step / max(self.elapsed_s, 1e-9),
            memorisation_step=self.memorisation.onset_step,
            history=list(self.history),
            data=self.data.summary(),
            config=self.config.to_dict(),
            provenance={**provenance(self.device), **self.path.as_provenance()},
        )

    # -- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The full training state; `load_state_dict` of it continues bit-exactly on CPU."""
        return {
            "version": _STATE_VERSION,
            "config": self.config.to_dict(),
            "data_fingerprint": self.data.fingerprint,
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "history": [dict(h) for h in self.history],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "resetter": self.resetter.state_dict(),
            "memorisation": self.memorisation.state_dict(),
            "sampler": self.sampler.state_dict(),
            "augmenter": self.augmenter.state_dict(),
            "train_loss_sum": self._train_loss_sum.clone(),
            "train_correct": self._train_correct.clone(),
            "train_steps_since_eval": self._train_steps_since_eval,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state_dict()` of the same configuration; checks before loading."""
        version = state.get("version")
        if version not in _READABLE_STATE_VERSIONS:
            raise ValueError(f"training state version {version!r} is not supported")
        saved, current = state["config"], self.config.to_dict()
        # A setting added after the state was saved had its default then.
        defaults = TrainConfig().to_dict()
        differing = sorted(
            k
            for k in current
            if k not in _RESUMABLE_DIFFERENCES and saved.get(k, defaults[k]) != current[k]
        )
        if differing:
            raise ValueError(f"training state was saved with different settings: {differing}")
        if state["data_fingerprint"] != self.data.fingerprint:
            raise ValueError("training state was saved with different data (fingerprint differs)")
        if version >= 2 and not isinstance(state.get("memorisation"), Mapping):
            raise ValueError("training state lacks the memorisation detector's state")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.resetter.load_state_dict(state["resetter"])
        self.sampler.load_state_dict(state["sampler"])
        self.augmenter.load_state_dict(state["augmenter"])
        self.step = int(state["step"])
        self.elapsed_s = float(state["elapsed_s"])
        self.history = [dict(h) for h in state["history"]]
        self._train_loss_sum.copy_(state["train_loss_sum"])
        self._train_correct.copy_(state["train_correct"])
        self._train_steps_since_eval = int(state["train_steps_since_eval"])
        if version >= 2:
            self.memorisation.load_state_dict(state["memorisation"])
        else:
            self._replay_memorisation()

    def _replay_memorisation(self) -> None:
        """Rebuild the detector from the history (a version-1 state): it is a function of the
        evaluations' accuracies, so this gives the state it would have had (rows from before the
        train probe existed use the running training accuracy instead)."""
        self.memorisation, _ = replay_detector(
            self.history,
            n_val=self.memorisation.n_val,
            batch_size=self.config.batch_size,
            probe_size=int(self._probe_y.shape[0]),
        )


def train(
    config: TrainConfig,
    *,
    callbacks: Sequence[Callback] = (),
    data: DataSplits | None = None,
    resume_state: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train one classifier with stochastic resetting as `config` says; see `TrainingRun`."""
    run = TrainingRun(config, data=data)
    if resume_state is not None:
        run.load_state_dict(resume_state)
    return run.run(callbacks)
