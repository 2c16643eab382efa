"""`recommend`: reset settings for a new dataset, from a probe of it, the theory and past searches.

Steps (each documented in its module): profile the data and estimate its noise rate (`profile`),
probe the dynamics of the user's configuration without resetting (`probe`, `theory`), read the
finished searches from MLflow and describe each once (`history`), weigh them by similarity and
combine them with the theory prior (`combine`). The answer is logged as a run in the
`recommendations` experiment, and can be written out as a short confirming search spec.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from reset_tune.config import TrainConfig
from reset_tune.recommend.combine import Combined, Evidence, combine, confidence_label
from reset_tune.recommend.history import (
    History,
    SettingDescription,
    describe_setting,
    read_history,
    same_setting,
)
from reset_tune.recommend.profile import describe_estimate
from reset_tune.redact import redact_text, redact_uri

EXPERIMENT = "recommendations"
SETTING_KEYS = ("dataset", "noise", "model", "batch_size", "lr", "steps", "train_subset")


@dataclass
class Recommendation:
    """The answer, with everything it rests on."""

    setting: dict[str, Any]
    description: SettingDescription
    combined: Combined
    evidence: list[Evidence]
    skipped: list[tuple[str, str]]
    confidence: str
    config: dict[str, Any]  # the user's configuration with the recommended reset settings
    wall_time_s: float
    tracking_uri: str | None = None
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def reset_prob(self) -> float:
        return self.combined.reset_prob

    @property
    def verdict(self) -> str:
        """helps | does not help | cannot act | unknown (`combine`'s docstring has the rule)."""
        return self.combined.verdict

    @property
    def memorised(self) -> bool | None:
        """Whether the probe saw memorisation within the budget (None: not checked)."""
        return self.combined.memorised

    def reset_settings(self) -> dict[str, Any]:
        c = self.combined
        return {
            "reset_prob": c.reset_prob,
            "reset_layers": c.reset_layers,
            "patience": c.patience,
            "checkpoint_metric": c.checkpoint_metric,
            "adaptive": c.adaptive,
        }

    def to_json(self) -> dict[str, Any]:
        c = self.combined
        figures = self.description.probe.figures
        return {
            "setting": self.setting,
            "recommendation": {
                "verdict": c.verdict,
                "verdict_reason": c.verdict_reason,
                "advice": list(c.advice),
                "resetting": c.resetting,
                **self.reset_settings(),
                "reset_prob_interval": list(c.reset_prob_interval) if c.resetting else None,
                "reset_prob_if_on": c.rate_if_on,
                "expected_gain": c.expected_gain,
                "expected_gain_sd": c.expected_gain_sd,
                "probability_of_gain": c.probability_of_gain,
                "confidence": self.confidence,
                "basis": c.basis,
                "reasons": list(c.reasons),
            },
            "profile": self.description.profile.to_dict(),
            "probe": {
                "verdict": self.description.probe.verdict,
                "theory_verdict": self.description.probe.theory_verdict,
                "armed_step": self.description.probe.armed_step,
                "memorisation": self._memorisation_json(),
                "steps_trained": self.description.probe.steps_trained,
                "wall_time_s": self.description.probe.wall_time_s,
                "figures": None if figures is None else asdict(figures),
            },
            "evidence": [asdict(e) for e in self.evidence],
            "skipped": [{"search": name, "reason": why} for name, why in self.skipped],
            "config": self.config,
            "notes": self.notes,
            "wall_time_s": self.wall_time_s,
            "mlflow": {"tracking_uri": self.tracking_uri, "run_id": self.run_id},
        }

    def _memorisation_json(self) -> dict[str, Any]:
        probe = self.description.probe
        return {
            "checked": probe.memorisation_checked,
            "seen": probe.memorised if probe.memorisation_checked else None,
            "onset_step": probe.memorisation_step,
            "max_gap": probe.max_gap,
            "final_gap": probe.final_gap,
            "final_gap_threshold": probe.final_gap_threshold,
            "transient_onsets": list(probe.transient_onsets),
            "window_end_step": probe.window_end_step,
            "extension_steps": probe.extension_steps,
            "budget_steps": probe.budget_steps,
        }

    def table(self) -> str:
        c, d = self.combined, self.description
        p = d.profile
        rows: list[tuple[str, str]] = []
        rows.append(("verdict", f"resetting {c.verdict}: {c.verdict_reason}"))
        if c.resetting:
            low, high = c.reset_prob_interval
            rows.append(("reset_prob", f"{c.reset_prob:.4g}  (90% interval {low:.3g}–{high:.3g})"))
            rows.append(("reset_layers", c.reset_layers))
            rows.append(("checkpoint policy", f"patience {c.patience}, θbest by "
                         f"{c.checkpoint_metric}, adaptive {str(c.adaptive).lower()}"))  # fmt: skip
        else:
            rows.append(("reset_prob", f"0 (no resetting; a confirming search would try "
                         f"{c.rate_if_on:.4g})"))  # fmt: skip
        for item in c.advice:
            rows.append(("to change", item))
        if c.expected_gain is not None:
            rows.append(("expected gain", f"{c.expected_gain:+.2%} clean test accuracy over r = 0 "
                         f"(± {c.expected_gain_sd:.2%}; P(gain > 0) = "
                         f"{c.probability_of_gain:.2f})"))  # fmt: skip
        else:
            rows.append(("expected gain", "unknown: no similar past search to measure it"))
        rows.append(("confidence", f"{self.confidence}  ({c.basis})"))
        rows.append(("data", f"{p.dataset}: {p.num_classes} classes, {p.num_train} training "
                     f"samples, input {'×'.join(map(str, p.input_shape))}"))  # fmt: skip
        rows.append(("noise estimate", describe_estimate(p.noise_estimate)))
        rows.append(("probe", d.probe.describe()))
        rows.append(("memorisation", d.probe.describe_memorisation()))
        figures = d.probe.figures
        if figures is not None and figures.reset_prob > 0:
            rows.append(("theory", f"r* = {figures.optimal_scaled_rate:.3g}·D/L² → per-step "
                         f"{figures.reset_prob:.3g} ({figures.reset_prob_interval[0]:.3g}–"
                         f"{figures.reset_prob_interval[1]:.3g}); first passage "
                         f"{_speedup(figures.speedup)}"))  # fmt: skip
        for reason in c.reasons:
            rows.append(("why", reason))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        if self.evidence:
            lines.append("")
            lines.append("evidence (most similar first):")
            lines.append(f"  {'weight':>6}  {'search':<44} {'setting':<34} {'best r':>7} "
                         f"{'layers':<12} {'gain':>7}")  # fmt: skip
            for e in self.evidence[:10]:
                setting = f"{e.dataset} {e.noise} b{e.batch_size}"
                lines.append(f"  {e.weight:6.3f}  {e.name[:44]:<44} {setting[:34]:<34} "
                             f"{e.best_reset_prob:7.4f} {e.best_reset_layers[:12]:<12} "
                             f"{e.gain:+7.2%}")  # fmt: skip
        for name, why in self.skipped:
            lines.append(f"skipped {name}: {why}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def spec(self, *, trials: int = 6, concurrency: int = 2) -> dict[str, Any]:
        """A short search that confirms the recommendation: its first trials are the
        recommendation and the r = 0 arm at the same lr and batch size; ranges are narrowed
        around it."""
        c = self.combined
        train = {
            k: v
            for k, v in self.config.items()
            if k in _SPEC_TRAIN_KEYS and v != TrainConfig.__dataclass_fields__[k].default
        }
        train["dataset"] = self.config["dataset"]
        train["noise"] = self.config["noise"]
        lr = float(self.config["lr"])
        # Off or on, the interval is where the evidence puts r should resetting be tried.
        low, high = c.reset_prob_interval
        center = c.reset_prob if c.resetting else math.sqrt(low * high)
        low, high = min(low, center / 1.5), max(high, center * 1.5)
        layer_choices = [c.reset_layers] + [x for x in ("all", "head") if x != c.reset_layers]
        params: dict[str, Any] = {
            "reset_prob": {"type": "loguniform", "low": _round(low), "high": _round(high),
                           "off_arm": True},
            "reset_layers": {"type": "categorical", "choices": layer_choices},
            "patience": {"type": "int", "low": max(0, c.patience - 50), "high": c.patience + 50,
                         "step": 25 if c.patience >= 50 and c.patience % 25 == 0 else 1},
            "lr": {"type": "loguniform", "low": _round(lr / 2), "high": _round(lr * 2)},
        }  # fmt: skip
        recommended = {"reset_prob": _round(center), "reset_layers": c.reset_layers,
                       "patience": c.patience, "lr": lr}  # fmt: skip
        baseline = {"reset_prob": 0.0, "lr": lr}
        first = [recommended, baseline] if c.resetting else [baseline, recommended]
        fixed_policy = {"checkpoint_metric": c.checkpoint_metric, "adaptive": c.adaptive}
        train.update({k: v for k, v in fixed_policy.items()
                      if v != TrainConfig.__dataclass_fields__[k].default})  # fmt: skip
        return {
            "description": (
                f"confirm the recommendation for {self.config['dataset']} "
                f"({self.config['noise']}): resetting {c.verdict}, r = {c.reset_prob:.4g}, "
                f"layers {c.reset_layers}"
            ),
            "train": train,
            "objective": "val_acc",
            "trials": trials,
            "concurrency": concurrency,
            "seeds": [int(self.config["seed"])],
            "resources": {"cpus": 1, "gpus": 1 if self.config["device"].startswith("cuda") else 0},
            "scheduler": "none",
            "sampler": {"type": "tpe", "seed": 0, "startup_trials": max(0, trials // 2 - 2)},
            "first_trials": first,
            "params": params,
        }

    def spec_text(self, **kwargs: Any) -> str:
        c = self.combined
        header = (
            "# Written by `reset-tune recommend`: a short search to confirm its recommendation.\n"
            "# The first two trials are the recommendation and the r = 0 arm at the same lr and\n"
            "# batch size; the ranges are narrowed around the recommendation.\n"
            f"# Verdict: resetting {c.verdict} ({'on' if c.resetting else 'off'}).\n"
        )
        if not c.resetting:
            header += (
                "# Resetting is recommended off: the r = 0 arm comes first; the resetting arm is\n"
                "# there to check that answer.\n"
            )
        if c.advice:
            header += (
                "# The probe saw no memorisation within these steps, so this search will most\n"
                "# likely show resetting with nothing to counter. To change that:\n"
                + "".join(f"#   - {item}\n" for item in c.advice)
            )
        return header + yaml.safe_dump(self.spec(**kwargs), sort_keys=False, allow_unicode=True)


_SPEC_TRAIN_KEYS = (
    "dataset", "data_root", "label_file", "image_size", "noise", "val_fraction", "clean_val",
    "train_subset", "augment", "model", "loss", "steps", "eval_every", "batch_size", "optimizer",
    "momentum", "weight_decay", "schedule", "precision", "device",
)  # fmt: skip


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def _speedup(value: float) -> str:
    return "finite only with resetting" if math.isinf(value) else f"{value:.2f}× sooner"


def recommend(
    config: TrainConfig,
    *,
    tracking_uri: str | None,
    known_noise_rate: float | None = None,
    history: History | None = None,
    description: SettingDescription | None = None,
    log: bool = True,
    say: Callable[[str], None] = lambda _: None,
) -> Recommendation:
    """Recommend reset settings for `config`'s dataset, model, batch size and lr.

    `tracking_uri` None means no history and nothing logged; `history` given skips reading it;
    `description` given (a profile and probe of exactly `config`) skips computing it.
    """
    started = time.perf_counter()
    notes: list[str] = []
    if history is None:
        if tracking_uri is None:
            history = History()
            notes.append("no tracking server: answered from the theory and the profile alone")
        else:
            say(f"reading finished searches from {redact_uri(tracking_uri)} ...")
            history = read_history(tracking_uri, say=say)
    if description is None:
        from reset_tune.engine import prepare_data

        data = prepare_data(config, "cpu")
        same = None
        if known_noise_rate is None:
            same = same_setting(history.searches, config, data.fingerprint)
        if same is not None and same.description is not None:
            # The same probe on the same data: its result is what a new probe would compute.
            description = same.description
            say(f"{config.dataset} at batch {config.batch_size}, lr {config.lr} was profiled "
                f"and probed for past search {same.name}: using that")  # fmt: skip
            notes.append(f"profile and probe from past search {same.name}: the same setting, "
                         "probe configuration and data")  # fmt: skip
        else:
            say(f"profiling {config.dataset} and probing its dynamics at batch "
                f"{config.batch_size}, lr {config.lr} ...")  # fmt: skip
            description = describe_setting(config, known_noise_rate=known_noise_rate, data=data)
    elif description.probe.config != config.replace(reset_prob=0.0).to_dict() | {
        "eval_every": description.probe.config["eval_every"]
    }:
        raise ValueError("the description given was made for another configuration")
    combined, evidence = combine(description, history.searches, model=config.model)
    if history.source is not None and not history.searches:
        notes.append("no finished search in history: the answer rests on the theory and the "
                     "profile; run a search (e.g. --write-spec) to build evidence")  # fmt: skip
    recommended = config.replace(
        reset_prob=combined.reset_prob,
        reset_layers=combined.reset_layers,
        patience=combined.patience,
        checkpoint_metric=combined.checkpoint_metric,
        adaptive=combined.adaptive,
    )
    answer = Recommendation(
        setting={k: getattr(config, k) for k in SETTING_KEYS},
        description=description,
        combined=combined,
        evidence=evidence,
        skipped=list(history.skipped),
        confidence=confidence_label(combined),
        config=recommended.to_dict(),
        wall_time_s=time.perf_counter() - started,
        tracking_uri=None if tracking_uri is None else redact_uri(tracking_uri),
        notes=notes,
    )
    if log and tracking_uri is not None:
        try:
            answer.run_id = log_recommendation(answer, tracking_uri)
        except Exception as error:  # noqa: BLE001 - a failing log must never cost the answer
            reason = redact_text(str(error).splitlines()[0] if str(error) else repr(error))
            answer.notes.append(
                f"not logged to MLflow at {redact_uri(tracking_uri)} ({reason[:200]}); "
                "check --mlflow-uri, or use --no-log"
            )
    return answer


def log_recommendation(answer: Recommendation, tracking_uri: str) -> str:
    """One run in the `recommendations` experiment: the setting and the answer as params, the
    figures as metrics, the full JSON, the table and the confirming spec as artifacts."""
    from reset_tune.tracking import config_tags, names
    from reset_tune.tracking.standalone import log_run

    c = answer.combined
    figures = answer.description.probe.figures
    estimate = answer.description.profile.noise_estimate
    metrics: dict[str, float] = {
        "recommended/reset_prob": c.reset_prob,
        "recommended/resetting": 1.0 if c.resetting else 0.0,
        "recommended/reset_prob_if_on": c.rate_if_on,
        "probe/memorised": math.nan if c.memorised is None else float(c.memorised),
        "probe/steps_trained": float(answer.description.probe.steps_trained),
        "probe/extension_steps": float(answer.description.probe.extension_steps),
        "noise/estimate": estimate.rate,
        "noise/estimate_low": estimate.low,
        "noise/estimate_high": estimate.high,
        "evidence/weight": c.evidence_weight,
        "evidence/searches": float(len(answer.evidence)),
        "time/recommend_s": answer.wall_time_s,
    }
    if c.resetting and c.reset_prob_interval:
        metrics["recommended/reset_prob_low"], metrics["recommended/reset_prob_high"] = (
            c.reset_prob_interval
        )
    if estimate.error is not None:
        metrics["noise/estimate_error"] = estimate.error
    if c.expected_gain is not None:
        metrics["expected/gain"] = c.expected_gain
        metrics["expected/probability_of_gain"] = float(c.probability_of_gain or 0.0)
    probe = answer.description.probe
    if probe.memorisation_step is not None:
        metrics["probe/memorisation_step"] = float(probe.memorisation_step)
    if probe.max_gap is not None and math.isfinite(probe.max_gap):
        metrics["probe/max_gap"] = probe.max_gap
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
    if figures is not None:
        for key in ("peclet", "drift", "diffusion", "distance", "reset_prob"):
            value = getattr(figures, key)
            if math.isfinite(value):
                metrics[f"probe/{key}"] = value
    params = {f"setting.{k}": v for k, v in answer.setting.items()}
    params.update({f"recommended.{k}": v for k, v in answer.reset_settings().items()})
    params.update({"confidence": answer.confidence, "basis": c.basis,
                   "verdict": c.verdict, "resetting": c.resetting,
                   "probe.verdict": answer.description.probe.verdict,
                   "probe.memorised": c.memorised})  # fmt: skip
    tags = config_tags(answer.config)
    tags["mlflow.note.content"] = answer.table()
    artifacts = {
        "recommendation.json": json.dumps(answer.to_json(), indent=2, default=str) + "\n",
        "recommendation.txt": answer.table() + "\n",
        "confirm_spec.yaml": answer.spec_text(),
    }
    name = f"{answer.setting['dataset']}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    return log_run(tracking_uri, EXPERIMENT, name, kind=names.KIND_RECOMMENDATION,
                   params=params, metrics=metrics, tags=tags, artifacts=artifacts)  # fmt: skip
