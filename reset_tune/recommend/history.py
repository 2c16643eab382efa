"""Past searches as evidence: what each one was (its setting's profile and probe figures) and what
won in it (the best resetting trial against the best r = 0 trial of the same search).

Searches are read from MLflow: parent runs tagged `reset_tune.kind = search` and their nested
trial runs. Within a search, trials are ranked by the search's own objective (never by test
accuracy, docs/method.md §3); the gain of resetting is the clean test accuracy of the best resetting
trial minus that of the best r = 0 trial. A raced search's seed runs (tag
`reset_tune.configuration`) are read as one configuration each, their means over seeds, and as
in the search's own report a configuration run on more seeds outranks one on fewer: the race
gave its incumbents the most seeds, and a mean over one lucky seed does not beat a mean over four.
A search's description (dataset profile and dynamics probe, on its best r = 0 configuration) is
computed the first time a recommendation needs it and cached on the search's parent run as
`recommend/description.json`, so each search is probed once.

Searches that cannot serve as evidence are listed with the reason instead of stopping the
recommendation: unfinished, no finished trial in one of the arms, parameters that no longer make
a valid configuration, a dataset that cannot be loaded here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reset_tune import names
from reset_tune.config import TrainConfig
from reset_tune.data import DataSplits
from reset_tune.errors import ConfigError, DataError
from reset_tune.recommend.probe import ProbeResult, probe_config, probe_dynamics
from reset_tune.recommend.profile import DatasetProfile, profile_dataset
from reset_tune.tracking import RunSummary
from reset_tune.tracking import names as tracking_names

DESCRIPTION_ARTIFACT = "recommend/description.json"
# 2: probe points carry best_step; both drift estimators. 3: the noise estimate uses up to 10,000
# samples (was 3,000). 4: the probe checks for memorisation (label-free) and runs on, within the
# configuration's steps, until it sees it. Older caches are recomputed.
DESCRIPTION_VERSION = 4


@dataclass(frozen=True)
class SettingDescription:
    """A dataset/noise/model/batch setting as a recommendation compares it with others."""

    profile: DatasetProfile
    probe: ProbeResult
    version: int = DESCRIPTION_VERSION

    def to_json(self) -> str:
        return json.dumps(
            {"version": self.version, "profile": self.profile.to_dict(),
             "probe": self.probe.to_dict()},
            indent=2, default=str,
        ) + "\n"  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> SettingDescription:
        values = json.loads(text)
        if values.get("version") != DESCRIPTION_VERSION:
            raise ValueError(f"description version {values.get('version')!r} is not supported")
        return cls(
            profile=DatasetProfile.from_dict(values["profile"]),
            probe=ProbeResult.from_dict(values["probe"]),
        )


def describe_setting(config: TrainConfig, *, known_noise_rate: float | None = None,
                     probe_window: int | None = None,
                     data: DataSplits | None = None) -> SettingDescription:  # fmt: skip
    """Profile `config`'s data and probe its dynamics (one short run without resetting);
    `data`, when given, are `config`'s prepared data."""
    if data is None:
        from reset_tune.engine import prepare_data

        data = prepare_data(config, "cpu")
    profile = profile_dataset(data, known_noise_rate=known_noise_rate, seed=config.seed)
    probe = probe_dynamics(config, data=data, window=probe_window)
    return SettingDescription(profile=profile, probe=probe)


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial of a past search."""

    name: str
    config: dict[str, Any]
    objective: float
    test_acc: float
    wall_time_s: float
    configuration: str | None = None  # racing: the configuration this seed run belongs to
    n_seeds: int = 1  # seeds behind `objective` and `test_acc` (means over them)
    data_fingerprint: str | None = None  # of the data it trained on (None: not recorded)

    @property
    def resets(self) -> bool:
        return float(self.config.get("reset_prob", 0.0)) > 0


def merge_seed_runs(records: list[TrialRecord]) -> list[TrialRecord]:
    """One record per raced configuration (means over its seed runs, the first run's config);
    trials of a search without racing pass through unchanged."""
    merged: list[TrialRecord] = [r for r in records if r.configuration is None]
    groups: dict[str, list[TrialRecord]] = {}
    for record in records:
        if record.configuration is not None:
            groups.setdefault(record.configuration, []).append(record)
    for label, runs in groups.items():
        merged.append(
            TrialRecord(
                name=label,
                config=runs[0].config,
                objective=sum(r.objective for r in runs) / len(runs),
                test_acc=sum(r.test_acc for r in runs) / len(runs),
                wall_time_s=sum(r.wall_time_s for r in runs),
                configuration=label,
                n_seeds=len(runs),
                data_fingerprint=runs[0].data_fingerprint,
            )
        )
    return merged


def best_of_arm(records: list[TrialRecord], *, objective: str) -> TrialRecord:
    """The arm's best: most seeds first (a race's incumbent), then the objective."""
    sign = 1.0 if objective == "val_acc" else -1.0
    return max(records, key=lambda r: (r.n_seeds, sign * r.objective))


@dataclass
class PastSearch:
    """A finished search: its best trial of each arm, and its setting's description."""

    run_id: str
    name: str
    search_id: str
    experiment_id: str
    objective_metric: str
    best_reset: TrialRecord
    best_baseline: TrialRecord
    trials: int
    compute_steps: int  # training steps of its finished trials
    wall_time_s: float  # summed trial wall time
    description: SettingDescription | None = None

    @property
    def gain(self) -> float:
        """Clean test accuracy: best resetting trial minus best r = 0 trial (by objective)."""
        return self.best_reset.test_acc - self.best_baseline.test_acc

    @property
    def resetting_won(self) -> bool:
        better = (
            self.best_reset.objective > self.best_baseline.objective
            if self.objective_metric == "val_acc"
            else self.best_reset.objective < self.best_baseline.objective
        )
        return better

    @property
    def setting(self) -> dict[str, Any]:
        c = self.best_baseline.config
        return {k: c.get(k) for k in ("dataset", "noise", "model", "batch_size", "train_subset")}


@dataclass
class History:
    searches: list[PastSearch] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (search name, reason)
    source: str | None = None  # the tracking server read; None: history was not consulted


class _Unusable(Exception):
    pass


# A trial's metrics as searches record them (`search.trial_run.SUMMARY_METRICS`), each with the
# name searches before the ``summary/`` names used: past searches stay readable.
_OBJECTIVE_KEYS = ("summary/objective", names.OBJECTIVE)
_TEST_ACC_KEYS = ("summary/test_acc", names.TEST_ACC)
_WALL_TIME_KEYS = ("summary/wall_time_s", names.WALL_TIME)
_CONFIG_ARTIFACT = "config.json"  # a trial's full resolved config (its params hold a subset)


def _metric(run: RunSummary, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if key in run.metrics:
            return float(run.metrics[key])
    return None


def _trial_config(tracking_uri: str, run: RunSummary) -> dict[str, Any]:
    """A trial's resolved config: from its params when they hold every field (searches before
    the trimmed params), else from its `config.json` artifact."""
    from reset_tune.config import FIELD_KINDS
    from reset_tune.tracking import config_from_params
    from reset_tune.tracking.queries import read_artifact_text

    values = config_from_params(run.params)
    if len(values) == len(FIELD_KINDS):
        return values
    text = read_artifact_text(tracking_uri, run.run_id, _CONFIG_ARTIFACT)
    if text is None:
        raise _Unusable(f"trial {run.run_name} has no {_CONFIG_ARTIFACT}")
    try:
        stored = json.loads(text)
    except ValueError:
        raise _Unusable(f"trial {run.run_name} has an unreadable {_CONFIG_ARTIFACT}") from None
    return {k: v for k, v in stored.items() if k in FIELD_KINDS}


def _trial_record(run: RunSummary, tracking_uri: str = "") -> TrialRecord:
    objective = _metric(run, _OBJECTIVE_KEYS)
    test_acc = _metric(run, _TEST_ACC_KEYS)
    if objective is None or not math.isfinite(objective):
        raise _Unusable(f"trial {run.run_name} finished without its objective metric")
    if test_acc is None or not math.isfinite(test_acc):
        raise _Unusable(f"trial {run.run_name} finished without its test accuracy metric")
    try:
        config = TrainConfig.from_dict(_trial_config(tracking_uri, run), source=run.run_name)
    except ConfigError as error:
        raise _Unusable(f"trial {run.run_name} has parameters that are not a valid config: "
                        f"{error}") from None  # fmt: skip
    wall_time = _metric(run, _WALL_TIME_KEYS)
    return TrialRecord(
        name=run.run_name,
        config=config.to_dict(),
        objective=objective,
        test_acc=test_acc,
        wall_time_s=math.nan if wall_time is None else wall_time,
        configuration=run.tags.get(tracking_names.CONFIGURATION),
        data_fingerprint=run.tags.get(tracking_names.DATA_FINGERPRINT),
    )


def _past_search(tracking_uri: str, parent: RunSummary) -> PastSearch:
    from reset_tune.tracking import trial_runs
    from reset_tune.tracking.names import FINISHED

    if parent.status != FINISHED:
        raise _Unusable(f"the search did not finish (status {parent.status})")
    # "objective_metric" since the parent's params took the trials' names; "objective" before.
    objective = parent.params.get("objective_metric") or parent.params.get("objective", "val_acc")
    if objective not in ("val_acc", "val_loss"):
        raise _Unusable(f"unknown objective {objective!r} in its parameters")
    finished = [t for t in trial_runs(tracking_uri, parent.run_id) if t.status == FINISHED]
    records = []
    for run in finished:
        try:
            records.append(_trial_record(run, tracking_uri))
        except _Unusable:
            continue  # one broken trial does not spoil the search; an empty arm does (below)
    if not records:
        raise _Unusable("no finished trial with valid parameters and metrics")
    configurations = merge_seed_runs(records)
    resetting = [r for r in configurations if r.resets]
    baseline = [r for r in configurations if not r.resets]
    if not resetting or not baseline:
        arm = "resetting" if not resetting else "r = 0"
        raise _Unusable(f"no finished {arm} trial, so the gain of resetting is unknown")
    return PastSearch(
        run_id=parent.run_id,
        name=parent.run_name,
        search_id=parent.search_id or parent.run_name,
        experiment_id=parent.experiment_id,
        objective_metric=objective,
        best_reset=best_of_arm(resetting, objective=objective),
        best_baseline=best_of_arm(baseline, objective=objective),
        trials=len(configurations),
        compute_steps=sum(int(r.config["steps"]) for r in records),
        wall_time_s=sum(r.wall_time_s for r in records if math.isfinite(r.wall_time_s)),
    )


def _cached_description(tracking_uri: str, search: PastSearch) -> SettingDescription | None:
    from reset_tune.tracking.queries import read_artifact_text

    text = read_artifact_text(tracking_uri, search.run_id, DESCRIPTION_ARTIFACT)
    if text is None:
        return None
    try:
        return SettingDescription.from_json(text)
    except (ValueError, KeyError, TypeError):
        return None  # a stale or damaged cache is recomputed


def same_setting(
    searches: list[PastSearch], config: TrainConfig, fingerprint: str
) -> PastSearch | None:
    """A past search whose description is what `describe_setting(config)` would compute here:
    profiled without a known noise rate, probed with the same configuration (seed included),
    on data with the same fingerprint."""
    wanted = probe_config(config).to_dict()
    for search in searches:
        described = search.description
        if (
            described is not None
            and search.best_baseline.data_fingerprint == fingerprint
            and described.probe.config == wanted
            and described.profile.noise_estimate.known_rate is None
        ):
            return search
    return None


def read_history(
    tracking_uri: str,
    *,
    describe: bool = True,
    exclude: Callable[[PastSearch], bool] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> History:
    """Every finished search in the tracking server, each with its description.

    `describe=False` only reads cached descriptions (searches without one are skipped);
    `exclude` leaves searches out (the leave-one-out benchmark uses it).
    """
    from reset_tune.tracking import find_search_runs
    from reset_tune.tracking.standalone import attach_artifacts

    history = History(source=tracking_uri)
    for parent in find_search_runs(tracking_uri):
        try:
            search = _past_search(tracking_uri, parent)
        except _Unusable as reason:
            history.skipped.append((parent.run_name, str(reason)))
            continue
        except Exception as error:  # noqa: BLE001 - a damaged run is reported, never fatal
            history.skipped.append((parent.run_name, f"unreadable: {error}"))
            continue
        if exclude is not None and exclude(search):
            continue
        search.description = _cached_description(tracking_uri, search)
        if search.description is None:
            if not describe:
                history.skipped.append((search.name, "not yet profiled (run recommend once)"))
                continue
            config = TrainConfig.from_dict(search.best_baseline.config)
            say(f"profiling past search {search.name} once ({config.dataset}, {config.noise}, "
                f"batch {config.batch_size}) ...")  # fmt: skip
            try:
                search.description = describe_setting(config)
            except (DataError, ConfigError) as error:
                history.skipped.append((search.name, f"its data cannot be loaded here: {error}"))
                continue
            except Exception as error:  # noqa: BLE001 - one search's probe failing is not fatal
                history.skipped.append((search.name, f"could not be profiled: {error}"))
                continue
            attach_artifacts(tracking_uri, search.run_id,
                             {DESCRIPTION_ARTIFACT: search.description.to_json()})  # fmt: skip
        history.searches.append(search)
    return history
