"""`reset-tune recommend`: reset settings for a new dataset, from a probe, the theory and past
searches in MLflow."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reset_tune.cli.state_option import checked_state_dir
from reset_tune.cli.train_command import _OPTIONS
from reset_tune.config import TrainConfig
from reset_tune.errors import ConfigError, ResetTuneError
from reset_tune.redact import redact_text, redact_uri
from reset_tune.state import mlflow_dir

# The settings that describe the user's problem and training; reset settings are the answer.
_SETTINGS = (
    "dataset", "data_root", "label_file", "image_size", "noise", "val_fraction", "train_subset",
    "augment", "model", "loss", "steps", "eval_every", "batch_size", "lr", "optimizer",
    "momentum", "weight_decay", "schedule", "patience", "seed", "device",
)  # fmt: skip


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "recommend",
        help="recommend reset settings for a dataset",
        description=(
            "Profile the dataset (noise rate estimated without clean labels), probe the "
            "dynamics of training it without resetting (drift, diffusion, Péclet number), and "
            "combine the drift-diffusion theory with the finished searches in MLflow, weighted "
            "by similarity. The probe also looks, without clean labels, for memorisation of "
            "wrong labels within --steps; resetting is recommended on only where it sees it (or "
            "similar past searches say resetting won by a margin), otherwise the verdict is "
            "'cannot act' with what to change. Prints the verdict, the recommended reset_prob "
            "(with an interval), reset_layers and checkpoint policy, the expected gain over no "
            "resetting and the evidence, and logs it to MLflow's `recommendations` experiment."
        ),
    )
    for option, field, kind, text in _OPTIONS:
        if field not in _SETTINGS:
            continue
        default = "none" if field == "noise" else TrainConfig.__dataclass_fields__[field].default
        extra = " (default: none, the labels as they are)" if field == "noise" else ""
        if field == "dataset":
            extra = " (required)"
        parser.add_argument(
            option, dest=field, type=kind, default=None,
            help=f"{text}{extra or f' (default: {default})'}",
        )  # fmt: skip
    parser.add_argument(
        "--known-noise-rate",
        type=float,
        help="a wrong-label fraction known from elsewhere (e.g. a published figure): the "
        "estimate's error against it is reported",
    )
    parser.add_argument("--mlflow-uri", help="MLflow tracking server (default: the local one)")
    parser.add_argument(
        "--no-history", action="store_true", help="answer from the theory and the profile only"
    )
    parser.add_argument(
        "--no-log", action="store_true", help="do not log the recommendation to MLflow"
    )
    parser.add_argument(
        "--write-spec",
        metavar="FILE",
        help="write a short search spec confirming the recommendation (must not exist yet)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.add_argument(
        "--state-dir",
        help="project state directory (default: $RESET_TUNE_STATE_DIR or .reset-tune)",
    )
    parser.set_defaults(handler=run)


def _config_from(args: argparse.Namespace) -> TrainConfig:
    values = {f: getattr(args, f) for f in _SETTINGS if getattr(args, f, None) is not None}
    values.setdefault("noise", "none")
    if args.dataset is None:
        raise ConfigError("--dataset is required (e.g. --dataset digits)")
    return TrainConfig.from_dict(values, source="recommend")


def run(args: argparse.Namespace) -> int:
    from reset_tune.atomic import write_bytes_atomic
    from reset_tune.recommend import History, read_history, recommend
    from reset_tune.tracking import resolve_tracking_uri

    config = _config_from(args)
    if args.known_noise_rate is not None and not 0 <= args.known_noise_rate < 1:
        raise ConfigError(
            f"--known-noise-rate must be a fraction in [0, 1), got {args.known_noise_rate}"
        )
    spec_path = Path(args.write_spec) if args.write_spec else None
    if spec_path is not None and spec_path.exists():
        raise ConfigError(f"--write-spec {spec_path}: the file exists; give a new path")
    if spec_path is not None and not spec_path.parent.is_dir():
        raise ConfigError(f"--write-spec {spec_path}: folder {spec_path.parent} does not exist")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    _check_names(config)
    if args.mlflow_uri is not None:
        from reset_tune.search.preflight import check_tracking_uri

        check_tracking_uri(args.mlflow_uri)
    tracking_uri = None
    notes: list[str] = []
    if not (args.no_history and args.no_log):
        tracking_uri, server = resolve_tracking_uri(
            args.mlflow_uri, mlflow_dir(checked_state_dir(args.state_dir))
        )
        if server is not None and server.started:
            say(f"started the local MLflow server at {server.uri}")
        if server is None and not _answers(tracking_uri):
            # MLflow's client would retry for minutes per call; the answer needs no server.
            shown = redact_uri(tracking_uri)
            say(f"warning: no MLflow server answers at {shown}; answering without it")
            notes.append(
                f"MLflow at {shown} did not answer: history not consulted, answer not logged "
                "(check --mlflow-uri)"
            )
            tracking_uri = None
    history = History() if args.no_history or tracking_uri is None else None
    if history is None:
        assert tracking_uri is not None  # resolved above unless --no-history
        say(f"reading finished searches from {redact_uri(tracking_uri)} ...")
        try:
            history = read_history(tracking_uri, say=say)
        except Exception as error:  # noqa: BLE001 - any client/server failure: one clear line
            raise ResetTuneError(
                f"cannot read past searches from {redact_uri(tracking_uri)}: "
                f"{error.__class__.__name__}: {redact_text(str(error))[:200]}; check "
                "--mlflow-uri, or use --no-history"
            ) from None
    answer = recommend(
        config,
        tracking_uri=tracking_uri,
        known_noise_rate=args.known_noise_rate,
        history=history,
        log=not args.no_log,
        say=say,
    )
    if args.no_history:
        answer.notes.append("history not consulted (--no-history)")
    answer.notes.extend(notes)
    if spec_path is not None:
        write_bytes_atomic(spec_path, answer.spec_text().encode())
    if args.json:
        payload = answer.to_json()
        payload["spec_written"] = str(spec_path) if spec_path else None
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(answer.table())
        if spec_path is not None:
            print(f"\nconfirming search spec written to {spec_path}: "
                  f"reset-tune search {spec_path}")  # fmt: skip
        if answer.run_id is not None and tracking_uri is not None:  # logged: a URI was resolved
            from reset_tune.tracking import run_url

            url = run_url(tracking_uri, answer.run_id)
            print(f"logged to MLflow: {redact_uri(url) if url else answer.run_id}")
    return 0


def _check_names(config: TrainConfig) -> None:
    """Dataset, model and noise named as the engine knows them: checked before an MLflow server
    is started or history read, not after."""
    from reset_tune.data import DATASET_NAMES, parse_noise_spec
    from reset_tune.models import MODEL_NAMES

    if config.dataset not in DATASET_NAMES:
        raise ConfigError(
            f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASET_NAMES)}"
        )
    if config.model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {config.model!r}; choose one of {', '.join(MODEL_NAMES)}")
    parse_noise_spec(config.noise)


def _answers(tracking_uri: str) -> bool:
    """Whether the MLflow server at an http(s) URI answers within seconds (other stores: yes)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    from reset_tune.tracking.server import health_ok

    return health_ok(tracking_uri.rstrip("/"), timeout_s=3.0)
