"""The search driver: a Ray Tune `Tuner` with `OptunaSearch`, every trial tracked in MLflow.

One call of `run_search` is one *segment* of a search: a `Tuner.fit()` over the trials still to
run. The search's state lives in the state directory (`reset_tune.state`)::

    searches/<SEARCH_ID>/search.json     the record (spec, segments, best, MLflow parent run)
    searches/<SEARCH_ID>/tune/<segment>/ Ray Tune's results and checkpoints, one folder a trial
    searches/<SEARCH_ID>/outbox/         what MLflow could not take yet (`sync` replays it)
    optuna.db                            the Optuna study, named SEARCH_ID (or --storage URL)

`--resume` continues a search: the study is loaded from its storage (so TPE keeps everything it
learned), trials the interrupted segment left running are queued again with their parameters and
continue from their last Tune checkpoint, and the new segment runs until the study holds the
target number of finished trials (`--trials` raises the target of a finished search).

The data of each seed are prepared once, here, and shipped to every node's object store through
`tune.with_parameters`; trials on a node read them from there instead of rebuilding them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import optuna

from reset_tune import __version__
from reset_tune.config import TrainConfig
from reset_tune.data import DataSplits
from reset_tune.engine import prepare_data
from reset_tune.engine.runtime import git_commit
from reset_tune.errors import ConfigError
from reset_tune.names import METRIC_VAL_ACC
from reset_tune.redact import MASK, redact_text, redact_uri
from reset_tune.search import stores
from reset_tune.search.parent_run import (
    build_report,
    finish_search_run,
    search_params,
    search_tags,
)
from reset_tune.search.preflight import SearchFailed, check_ray_address, check_services, ray_target
from reset_tune.search.racing import Race, RaceRules, split_race_params
from reset_tune.search.record import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    SearchRecord,
    Segment,
    find_search,
    new_search_id,
    search_directory,
)
from reset_tune.search.report import (
    SearchReport,
)
from reset_tune.search.space import (
    enqueue_configurations,
    make_sampler,
    space_function,
    to_trial_params,
)
from reset_tune.search.spec import (
    RESETTING,
    RESETTING_OFF,
    RESETTING_ON,
    AshaScheduler,
    Categorical,
    SearchSpec,
    load_spec,
)
from reset_tune.search.trainable import (
    OBJECTIVE,
    RUNNING_OBJECTIVE,
    TrialSetup,
    params_key,
    run_trial,
    trial_threads,
)
from reset_tune.search.tune_files import read_experiment
from reset_tune.state import mlflow_dir, optuna_storage_url
from reset_tune.tracking import (
    MlflowSink,
    TrackingSink,
    resolve_tracking_uri,
    run_url,
)
from reset_tune.tracking.names import FAILED as RUN_FAILED
from reset_tune.tracking.names import KILLED as RUN_KILLED
from reset_tune.yaml_files import read_text_file, read_yaml_file

DONE_STATES = ("COMPLETE", "PRUNED", "FAIL")
INTERRUPTED_ATTR = "reset_tune.interrupted"  # an Optuna trial left running by a killed driver


Say = Callable[[str], None]  # prints one line of progress


@dataclass
class SearchOptions:
    """Everything `reset-tune search` takes besides the spec."""

    state: Path
    address: str | None = None  # Ray cluster; None: $RAY_ADDRESS, `reset-tune up`'s, or a new one
    mlflow_uri: str | None = None  # None: $MLFLOW_TRACKING_URI or the embedded local server
    storage: str | None = None  # Optuna RDB URL; None: sqlite in the state directory
    resume: bool = False
    search_id: str | None = None  # with resume: which search (default: the spec's latest)
    trials: int | None = None  # target number of finished trials (default: the spec's)
    seed_configs: str | None = None  # a YAML/JSON file, or a previous search id
    max_failures: int = 2  # Tune retries per trial after a worker or node dies
    checkpoint_every: int = 5  # evaluations between trial checkpoints
    report_interval_s: float = 2.0  # least time between a trial's reports (without a scheduler)
    tune_storage: str | None = None  # where Tune keeps trial files; shared across nodes
    stream: TextIO | None = None  # progress (default stdout)
    tracking: TrackingSink | None = None  # None: an MlflowSink; tests may pass a MemorySink


@dataclass
class SearchOutcome:
    record: SearchRecord
    report: SearchReport


def experiment_name(spec: SearchSpec) -> str:
    """The MLflow experiment (and search-id prefix): the spec's `name`, else its file's stem; a
    stem that reads as MLflow's own "Default" experiment (default.yaml) becomes `reset-tune`."""
    stem = Path(spec.source).stem
    # The loader names a spec after its file when it gives no name, so `name` equal to the stem
    # is (almost always) that default; checked first, or default.yaml would become "default".
    if stem.lower() == "default" and spec.name == stem:
        from reset_tune.tracking.names import DEFAULT_EXPERIMENT

        return DEFAULT_EXPERIMENT
    if "name" in spec.model_fields_set:
        return spec.name
    return stem if stem and stem != "search spec" else spec.name


def run_search(spec_path: str | os.PathLike | None, options: SearchOptions) -> SearchOutcome:
    """Run (or resume) a search; returns its record and report. See the module docstring.

    Everything that can be checked is checked before anything is created (`_checked_search`,
    `reset_tune.search.preflight`, the data). What fails after the record exists ends the parent
    run FAILED with the reason; a new search that never ran a trial is marked failed, so that
    `--resume` does not pick it.
    """
    out = options.stream or sys.stdout
    say = _printer(out)
    spec, seeds, resumed = _checked_search(spec_path, options)
    check_services(
        options.state,
        address=options.address,
        storage=options.storage,
        tune_storage=options.tune_storage,
        mlflow_uri=options.mlflow_uri,
        tracking_given=options.tracking is not None,
        new_search=resumed is None,
    )
    data = _shared_data(spec)  # a missing dataset or noise matrix fails here, before any record
    record = resumed if resumed is not None else _new_record(spec_path, spec, options)
    say(f"search {record.search_id}: {spec.description or spec.source}")

    parent: str | None = None
    sink: TrackingSink | None = None
    try:
        if options.tracking is not None:
            tracking_uri, server = record.tracking_uri or "memory", None
        else:
            explicit = options.mlflow_uri or _recorded_uri(record, options)
            tracking_uri, server = resolve_tracking_uri(explicit, mlflow_dir(options.state))
            record.tracking_explicit = server is None
        if server is not None and server.started:
            say(f"started the local MLflow server at {server.uri} (state in {server.state_dir})")
        # The record keeps the URI with its credentials masked (a resume asks for them again).
        record.tracking_uri = redact_uri(tracking_uri)
        sink = options.tracking or MlflowSink(
            tracking_uri, record.experiment_name, outbox_dir=record.outbox_dir
        )
        study = _open_study(spec, record, options, seeds)
        parent = sink.start_search(
            record.search_id,
            params=search_params(spec),
            tags=search_tags(spec),
            run_name=record.search_id,
            run_key=record.search_id,
        )
        with tune_environment(), _ray_connection(options.address, options.state, say):
            _run_segment(spec, record, study, sink, parent, options, say, data)
        report = build_report(spec, record, study)
        report.tracking_uri = redact_uri(tracking_uri)
        finish_search_run(sink, parent, record, report)
        sink.flush(timeout_s=30.0)
        run_id = getattr(sink, "mlflow_run_id", lambda _h: None)(parent)
        record.mlflow_parent_run_id = run_id
        report.mlflow_url = run_url(tracking_uri, run_id) if run_id else None
        if report.mlflow_url is not None:
            report.mlflow_url = redact_uri(report.mlflow_url)
        record.status = FINISHED
        best = report.best
        record.best = None if best is None else {"label": best.label, "config": best.config}
        record.verdict = report.verdict().to_json()
        record.save()
        return SearchOutcome(record=record, report=report)
    except BaseException as error:
        _record_failure(record, sink, parent, error, new=resumed is None)
        raise
    finally:
        if sink is not None:
            sink.close()


def _record_failure(
    record: SearchRecord,
    sink: TrackingSink | None,
    parent: str | None,
    error: BaseException,
    *,
    new: bool,
) -> None:
    """After a failure: the parent run ends FAILED with the reason (KILLED when interrupted);
    the record says `interrupted` when trials ran or an interrupt stopped it (so `--resume`
    continues it), else `failed` (so `--resume` does not pick it)."""
    interrupted = isinstance(error, KeyboardInterrupt)
    ran = bool(record.segments)  # a Tune segment started: trials may have run
    if record.status == RUNNING:
        record.status = INTERRUPTED if interrupted or ran or not new else FAILED
        record.save()
    if sink is None or parent is None or interrupted:
        return
    reason = redact_text(str(error).splitlines()[0] if str(error) else type(error).__name__)
    try:
        sink.finish_search(parent, RUN_FAILED, failure_reason=reason)
    except Exception:  # noqa: BLE001 - the original error is what the user must see
        pass


# -- opening a search ----------------------------------------------------------------------------
SeedConfigs = tuple[list[dict[str, Any]], str]  # configurations to queue first, and their source


def _checked_search(
    spec_path: str | os.PathLike | None, options: SearchOptions
) -> tuple[SearchSpec, SeedConfigs | None, SearchRecord | None]:
    """Check everything the user gave; creates nothing. Returns the spec, the configurations to
    try first, and the record of the search to resume (None for a new search)."""
    if options.resume:
        name = None
        if spec_path is not None and options.search_id is None:
            name = experiment_name(load_spec(spec_path))
        record = find_search(options.state, options.search_id, spec_name=name)
        spec = SearchSpec.from_dict(record.spec, source=record.spec_source)
        if spec_path is not None:
            given = load_spec(spec_path)
            if given.model_dump() != spec.model_dump():
                raise ConfigError(
                    f"{spec_path}: the spec differs from the one search {record.search_id} "
                    "started with; resume without the SPEC argument, or start a new search"
                )
        if options.seed_configs:
            raise ConfigError("--seed-configs applies to a new search, not to --resume")
        if options.trials is not None:
            record.target_trials = options.trials
        record.status = RUNNING
        return spec, None, record
    if spec_path is None:
        raise ConfigError("give a search spec file (e.g. search_spaces/default.yaml)")
    spec = load_spec(spec_path)
    for i, config in enumerate(spec.first_trials):
        to_trial_params(spec, config, where=f"{spec_path}: first_trials[{i}]")
    seeds = None
    if options.seed_configs:
        configs, source = _seed_configs(options.seed_configs, options.state)
        for i, config in enumerate(configs):
            to_trial_params(spec, config, where=f"{source}[{i}]")  # raises on a bad one
        seeds = (configs, source)
    return spec, seeds, None


def _open_search(
    spec_path: str | os.PathLike | None, options: SearchOptions
) -> tuple[SearchRecord, SearchSpec, SeedConfigs | None]:
    """Check what the user gave, then (only then) open the search's record: the resumed one, or
    a new one created now. (`run_search` runs the preflight and prepares the data in between.)"""
    spec, seeds, resumed = _checked_search(spec_path, options)
    record = resumed if resumed is not None else _new_record(spec_path, spec, options)
    return record, spec, seeds


def _new_record(
    spec_path: str | os.PathLike | None, spec: SearchSpec, options: SearchOptions
) -> SearchRecord:
    """Create the new search's folder and record (only once every check has passed)."""
    assert spec_path is not None  # a new search always has a spec file (`_checked_search`)
    name = experiment_name(spec)
    search_id = new_search_id(name)
    directory = search_directory(options.state, search_id)
    directory.mkdir(parents=True, exist_ok=False)
    record = SearchRecord(
        search_id=search_id,
        experiment_name=name,
        spec=spec.model_dump(mode="json"),
        spec_source=str(spec.source),
        spec_text=read_text_file(spec_path, "search spec file"),
        tracking_uri="",
        optuna_storage=stores.recorded_storage(
            stores.optuna_storage_url(options.storage) or optuna_storage_url(options.state)
        ),
        target_trials=options.trials or spec.trials,
        directory=str(directory),
    )
    record.save()
    return record


def _recorded_uri(record: SearchRecord, options: SearchOptions) -> str | None:
    """A resumed search keeps a tracking server it was given (the embedded one is found anew);
    a recorded URI had its credentials masked, so the user gives it again."""
    if options.resume and record.tracking_explicit:
        if MASK in record.tracking_uri:
            raise ConfigError(
                f"search {record.search_id} was tracked at {record.tracking_uri}; give that "
                "--mlflow-uri again, with its credentials, to resume it"
            )
        return record.tracking_uri
    return None


def _open_study(
    spec: SearchSpec,
    record: SearchRecord,
    options: SearchOptions,
    seeds: SeedConfigs | None = None,
) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = stores.open_optuna_storage(
        record.optuna_storage, stores.optuna_storage_url(options.storage)
    )
    study = optuna.create_study(
        study_name=record.search_id,
        storage=storage,
        sampler=make_sampler(spec),
        direction=spec.objective.direction,
        load_if_exists=True,
    )
    if options.resume:
        return study
    queued: list = []
    if spec.first_trials:
        queued = enqueue_configurations(study, spec, spec.first_trials, source="first_trials")
        _printer(options.stream or sys.stdout)(f"queued the spec's {len(queued)} first trial(s)")
    if seeds is not None:
        configs, source = seeds
        known = enqueue_configurations(study, spec, configs, source=source)
        queued += known
        _printer(options.stream or sys.stdout)(
            f"queued {len(known)} known configuration(s) from {source} first"
        )
    if spec.has_off_arm:
        # The random start-up trials alternate resetting on and off (everything else drawn at
        # random): a fair coin leaves one arm out of 6 start-up trials once in 32 searches,
        # and then TPE has nothing to compare the other arm with.
        startup = min(spec.sampler.startup_trials, record.target_trials - len(queued))
        for i in range(max(startup, 0)):
            study.enqueue_trial({RESETTING: RESETTING_ON if i % 2 == 0 else RESETTING_OFF})
    return study


def _seed_configs(value: str, state: Path) -> tuple[list[dict[str, Any]], str]:
    """Configurations to try first: a YAML/JSON list file, or a previous search's best ones."""
    path = Path(value)
    if path.exists():
        loaded = read_yaml_file(path, "--seed-configs file")
        if isinstance(loaded, dict):
            loaded = [loaded]
        if not isinstance(loaded, list) or not all(isinstance(c, dict) for c in loaded):
            raise ConfigError(
                f"{path}: must hold a list of configurations (mappings of parameter: value)"
            )
        return loaded, str(path)
    try:
        previous = find_search(state, value)
    except ConfigError:
        raise ConfigError(
            f"--seed-configs {value!r}: neither a file nor a search id in {state}; give a "
            "YAML/JSON file of configurations or the id of a previous search"
        ) from None
    spec = SearchSpec.from_dict(previous.spec, source=previous.spec_source)
    ranked = build_report(spec, previous, None).ranked()
    configs = []
    for t in ranked[:5]:
        configs.append(split_race_params(t.params)[0])
    if not configs:
        raise ConfigError(f"--seed-configs {value!r}: that search has no complete trial")
    return configs, f"search {value}"


# -- the Tune segment ----------------------------------------------------------------------------
def _run_segment(
    spec: SearchSpec,
    record: SearchRecord,
    study: optuna.Study,
    sink: TrackingSink,
    parent: str,
    options: SearchOptions,
    say: Say,
    data: dict[tuple[int, str], DataSplits],
) -> None:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    from reset_tune.search.searcher import TrialSearch
    from reset_tune.search.tracker import ProgressPrinter, TrialTracker

    tune_storage = stores.tune_storage_uri(options.tune_storage, record.search_id)
    for earlier in record.segments:  # shared Tune storage: read here what they left there
        stores.mirror_tune_files(tune_storage, record.tune_dir, earlier.name)
    resume_from = _requeue_interrupted(spec, record, study, sink, parent, say)
    done = _finished_count(study)
    remaining = record.target_trials - done
    race = _open_race(spec, record) if spec.racing is not None else None
    if remaining <= 0 and (race is None or (race.closed and not race.busy)):
        say(f"the study already has {done} finished trial(s) (target {record.target_trials})")
        return
    if race is not None:
        race.closed = False  # a new segment may add configurations; it closes the race again
        waiting = sum(len(c.scheduled) for c in race.contenders.values())
        if record.race is not None and waiting:
            say(f"resuming the race: {waiting} seed run(s) of raced configurations to run")
    remaining = max(remaining, 0)

    setup = TrialSetup(
        spec=spec,
        data=data,
        checkpoint_every=options.checkpoint_every,
        threads=trial_threads(spec.resources.cpus),
        resume_from=resume_from,
        # A scheduler decides at its rungs, so it must see every evaluation; without one,
        # batching evaluations saves a driver round trip per evaluation.
        report_interval_s=0.0 if spec.prunes else options.report_interval_s,
    )
    searcher = TrialSearch(
        space=space_function(spec),
        metric=OBJECTIVE,
        mode=spec.mode,
        # Seeded past the trials already in the study, so a resumed search does not replay
        # the random start-up draws of the first segment.
        sampler=make_sampler(spec, seed_offset=len(study.get_trials(deepcopy=False))),
        study_name=record.search_id,
        storage=stores.open_optuna_storage(
            record.optuna_storage, stores.optuna_storage_url(options.storage)
        ),
        steps_per_seed=int(TrainConfig.from_dict(spec.fixed).steps),
    )
    search: Any = searcher
    if race is not None and spec.racing is not None:  # (a race exists only with racing)
        from reset_tune.search.searcher import RacingSearch

        def save_race(state: dict[str, Any]) -> None:
            record.race = state
            record.save()

        race.rules = RaceRules(
            seeds=tuple(spec.race_seeds),
            mode=spec.mode,
            n_val=_validation_size(data) if spec.objective.metric == METRIC_VAL_ACC else None,
            z=spec.racing.z,
        )
        search = RacingSearch(
            searcher,
            race,
            new_configurations=remaining,
            resets=lambda params: spec.config_for(params).reset_prob > 0,
            on_change=save_race,
            resume_params=_configuration_params(record),
        )

    def number(trial_id: str) -> int | None:
        found = search.trial_number(trial_id)
        if found is None:
            return record.trial_numbers.get(trial_id)
        if record.trial_numbers.get(trial_id) != found:
            record.trial_numbers[trial_id] = found
            record.save()  # so that a resumed search can tell its trials apart
        return found

    tracker = TrialTracker(
        sink,
        parent,
        spec,
        record.search_id,
        tags=_trial_tags(data),
        trial_number=number,
    )
    progress = ProgressPrinter(
        spec,
        total=record.target_trials,
        stream=options.stream,
        trial_number=number,
        race_summary=None if race is None else lambda: race_summary(spec, race),
    )
    progress.done = done
    scheduler = None
    max_t = spec.max_t  # set exactly when the scheduler is ASHA
    if isinstance(spec.scheduler, AshaScheduler) and max_t is not None:
        scheduler = ASHAScheduler(
            time_attr="step",
            metric=RUNNING_OBJECTIVE,
            mode=spec.mode,
            max_t=max_t,
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    segment = Segment(
        name=f"segment-{len(record.segments) + 1}", trials=remaining, started=time.time()
    )
    record.segments.append(segment)
    record.save()
    resources = {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus}
    storage_path, storage_filesystem = stores.tune_run_storage(tune_storage, record.tune_dir)
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=scheduler,
            # With racing the number of seed runs is the race's to decide: it says FINISHED.
            num_samples=-1 if race is not None else remaining,
            max_concurrent_trials=spec.concurrency,
            # A finished trial's worker (torch imported, data in memory) runs the next one.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=segment.name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            # Two, not one: Tune snapshots the experiment each time a trial's oldest kept
            # checkpoint is deleted, and with one that happened at every checkpoint.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[tracker, progress, JsonLoggerCallback()],
            verbose=0,
        ),
    )
    racing = (
        ""
        if spec.racing is None
        else f", raced on up to {spec.racing.max_seeds} seeds {spec.race_seeds} (paired)"
    )
    say(
        f"running {remaining} {'configuration' if race is not None else 'trial'}(s){racing}, "
        f"{spec.concurrency} at a time, "
        f"{spec.resources.cpus:g} CPU / {spec.resources.gpus:g} GPU each"
    )
    try:
        tuner.fit()
    except KeyboardInterrupt:
        tracker.interrupt_running("the search was interrupted; `reset-tune search --resume`")
        raise
    finally:
        stores.mirror_tune_files(tune_storage, record.tune_dir, segment.name)
        record.save()
    if tracker.has_running():
        tracker.interrupt_running("the search ended before this trial finished")
    segment.finished = True
    record.save()


def _finished_count(study: optuna.Study) -> int:
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state.name in DONE_STATES and not t.user_attrs.get(INTERRUPTED_ATTR)
    )


def _requeue_interrupted(
    spec: SearchSpec,
    record: SearchRecord,
    study: optuna.Study,
    sink: TrackingSink,
    parent: str,
    say: Say,
) -> dict[str, str]:
    """Queue again what an interrupted segment left running; map their params to checkpoints.

    The study marks such trials failed (their Tune trials will never report); each one's
    parameters are enqueued so that it runs next, and its trainable continues from the last
    checkpoint the interrupted trial saved. Their MLflow runs end as KILLED.
    """
    from reset_tune.search.trial_run import trial_run_key

    stale = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("RUNNING", "WAITING")]
    running = [t for t in stale if t.state.name == "RUNNING"]
    for trial in running:
        # Optuna has no "interrupted" state: FAIL it, marked so that it is not counted as done.
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(dict(trial.params))
    running_numbers = {t.number for t in running}
    resume_from: dict[str, str] = {}
    for segment in record.segments:
        if segment.finished:
            continue
        for tune_trial in read_experiment(record.tune_dir / segment.name):
            if tune_trial.final_row is not None or tune_trial.failure_reason is not None:
                continue
            number = record.trial_numbers.get(tune_trial.trial_id)
            if number is not None and number not in running_numbers:
                continue  # pruned or finished as far as the study knows
            if number is None and spec.prunes:
                continue  # cannot tell a pruned trial from an interrupted one: leave it
            record.interrupted_trials.append(tune_trial.trial_id)
            checkpoint = tune_trial.latest_checkpoint()
            if checkpoint is not None:
                resume_from[params_key(tune_trial.params)] = str(checkpoint)
            run_key = trial_run_key(record.search_id, tune_trial.trial_id)
            handle = sink.start_trial(parent, tune_trial.trial_id, run_key=run_key)
            sink.finish_trial(
                handle, RUN_KILLED, failure_reason="the search was interrupted; re-run on resume"
            )
        segment.finished = True
    record.save()
    if running:
        say(
            f"resuming: {len(running)} interrupted trial(s) queued again "
            f"({len(resume_from)} continue from a checkpoint)"
        )
    return resume_from


def race_summary(spec: SearchSpec, race: Race) -> str:
    """One line: each arm's incumbent, its seeds and mean objective."""
    from reset_tune.tracking.sink import trial_run_name

    parts = []
    for resets, arm in ((True, "resetting"), (False, "r = 0")):
        incumbent = race.incumbent(resets)
        if incumbent is None:
            continue
        values = list(incumbent.results.values())
        mean = sum(values) / len(values) if values else float("nan")
        parts.append(
            f"{arm} {trial_run_name(incumbent.config_id)} ({len(values)} seed(s), mean "
            f"{spec.objective.metric} {mean:.4f})"
        )
    return "incumbents: " + ("; ".join(parts) if parts else "none yet")


def _open_race(spec: SearchSpec, record: SearchRecord) -> Race:
    """The search's race: new, or as the record holds it (runs left running go back on the
    schedule; the rules are set by the caller once the data are known)."""
    race = Race(RaceRules(seeds=tuple(spec.race_seeds), mode=spec.mode))
    if record.race is not None:
        race.load_state_dict(record.race, interrupted=True)
    return race


def _configuration_params(record: SearchRecord) -> dict[int, dict[str, Any]]:
    """Each configuration's parameters (Tune config of its first run) from earlier segments."""
    params: dict[int, dict[str, Any]] = {}
    for segment in record.segments:
        for trial in read_experiment(record.tune_dir / segment.name):
            number = record.trial_numbers.get(trial.trial_id)
            if number is not None:
                params[number] = split_race_params(trial.params)[0]
    return params


def _validation_size(data: Mapping[Any, Any]) -> int:
    return min(int(d.val_y.shape[0]) for d in data.values())


def _shared_data(spec: SearchSpec) -> dict[tuple[int, str], DataSplits]:
    """The splits of each seed (and augmentation setting, when searched), prepared once."""
    augment = spec.params.get("augment")
    choices = augment.choices if isinstance(augment, Categorical) else [None]
    data: dict[tuple[int, str], DataSplits] = {}
    for seed in spec.race_seeds:
        for choice in choices:
            values = {**spec.fixed, "seed": seed}
            if choice is not None:
                values["augment"] = choice
            config = TrainConfig.from_dict(values, source=f"{spec.source}: train")
            data[(seed, config.augment)] = prepare_data(config, "cpu")
    return data


def _trial_tags(data: Mapping[Any, Any]) -> dict[str, str]:
    from reset_tune.tracking import names

    first = next(iter(data.values()))
    tags = {names.DATA_FINGERPRINT: first.fingerprint, names.PACKAGE_VERSION: __version__}
    commit = git_commit()
    if commit:
        tags[names.CODE_VERSION] = commit
    return tags


# -- the Ray connection ---------------------------------------------------------------------------
# Tune settings the driver needs. Ray 2.60 reads each of them in the driver process while a search
# runs (at `Tuner.fit`, per checkpoint and per reported row), so they are set only for that time.
_TUNE_ENVIRONMENT = {
    # Tune's default loggers would copy the final row's full results into a CSV and TensorBoard
    # files; the driver adds the JSON logger (the result files `sync` reads) itself.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # The searcher's metric (`objective`) is in a trial's final row only, by design: a pruned
    # trial must not hand Optuna a partial value. Tune would reject the other rows otherwise.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
}
# Its advice (fewer checkpoints) is already taken; the warning would repeat all search long. Only a
# default: a user's own threshold wins.
_TUNE_ENVIRONMENT_DEFAULTS = {"TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


@contextlib.contextmanager
def tune_environment() -> Iterator[None]:
    """The driver's `TUNE_*` settings for the duration of a `with` block; the caller's
    environment (values, and absence) comes back afterwards, also on an exception."""
    wanted = {**_TUNE_ENVIRONMENT}
    wanted.update({k: v for k, v in _TUNE_ENVIRONMENT_DEFAULTS.items() if k not in os.environ})
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _ray_connection(address: str | None, state: Path, say: Say) -> Iterator[None]:
    """Connect to the cluster `address` / $RAY_ADDRESS / `reset-tune up`'s, or start one here."""
    import logging

    import ray

    if ray.is_initialized():
        yield
        return
    from reset_tune.search.cluster import find_local_stack
    from reset_tune.search.ray_auth import (
        ensure_auth_mode,
        head_listens_on_loopback_only,
        is_loopback_address,
        join_local_stack,
    )

    target = ray_target(address, state)
    stack = find_local_stack(state)
    if target and target != "auto" and not target.startswith("ray://"):
        check_ray_address(target)
    if target is not None and (
        (stack is not None and target == stack.gcs_address)
        or (is_loopback_address(target) and head_listens_on_loopback_only(target))
    ):
        # A loopback-only head (ours, or one another state directory started) listens on
        # 127.0.0.1 only: without the same setting Ray dials the machine's routable address
        # and hangs for minutes.
        join_local_stack()
    else:
        ensure_auth_mode(target)
    try:
        if target:
            ray.init(address=target, logging_level=logging.WARNING, log_to_driver=False)
            say(f"connected to the Ray cluster at {target}")
        else:
            # address="local": a new instance, never a cluster `ray start` left on this machine.
            ray.init(
                address="local",
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
            say("started a local Ray instance for this search (`reset-tune up` keeps one running)")
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise SearchFailed(
            f"cannot connect to the Ray cluster at {target}: {error}; check --address / "
            "RAY_ADDRESS, or leave both unset to use a local cluster"
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


_check_reachable = check_ray_address  # the name the driver's tests know it by


def _printer(stream: TextIO) -> Say:
    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    return say
