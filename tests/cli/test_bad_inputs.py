"""Bad input, as users produce it, against every command: one line naming the problem, the right
exit code (2 for usage errors, 1 for a service that does not answer), no traceback, nothing on
stdout, and nothing created (no --out files, no search record, no Optuna study, no MLflow run).

Every case runs in-process through `reset_tune.cli.main.main`. "Nothing created" is checked on
the whole scratch folder (also the working directory): its tree is the same before and after.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from reset_tune.cli.main import main

SPEC = str(Path(__file__).resolve().parents[2] / "search_spaces" / "default.yaml")
SPEC_TEXT = Path(SPEC).read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Scratch:
    """Files and folders users point the tool at by mistake, made fresh for each case."""

    root: Path

    def path(self, name: str) -> str:
        return str(self.root / name)

    def write(self, name: str, data: str | bytes) -> str:
        target = self.root / name
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data, encoding="utf-8")
        return str(target)

    @property
    def folder(self) -> str:
        (self.root / "a-folder").mkdir(exist_ok=True)
        return self.path("a-folder")

    @property
    def plain_file(self) -> str:
        return self.write("plain.txt", "hello\n")

    @property
    def binary(self) -> str:
        return self.write("random.bin", bytes(range(256)) * 4)

    @property
    def latin1(self) -> str:
        return self.write("latin1.yaml", "dataset: digits  # caf\xe9\n".encode("latin-1"))

    @property
    def nul_bytes(self) -> str:
        return self.write("nul.yaml", "dataset: digits\n\x00\x00\n")

    @property
    def truncated(self) -> str:
        return self.write("truncated.yaml", "dataset: [digits, mnist\nsteps: 2")

    @property
    def loop(self) -> str:
        link = self.root / "loop.yaml"
        if not link.is_symlink():
            link.symlink_to(link)
        return str(link)

    @property
    def state(self) -> str:
        return self.path("state")

    def spec(self, text: str, name: str = "myspec.yaml") -> str:
        return self.write(name, text)


Argv = Callable[[Scratch], list[str]]


@dataclass
class Case:
    id: str
    argv: Argv
    fragment: str
    code: int = 2
    env: dict[str, str] | None = None
    secret: str | None = None  # must not appear in the output


def train(*args: str) -> Argv:
    return lambda s: ["train", "--steps", "20", "--eval-every", "10", "--out", s.path("out"), *args]


def train_with(make: Callable[[Scratch], list[str]]) -> Argv:
    return lambda s: [*train()(s), *make(s)]


def search(*args: str) -> Argv:
    return lambda s: ["search", SPEC, "--state-dir", s.state, *args]


def search_with(make: Callable[[Scratch], list[str]]) -> Argv:
    return lambda s: ["search", *make(s)]


def submit(*args: str) -> Argv:
    return lambda s: ["submit", SPEC, "--address", "http://127.0.0.1:1", *args]


def config(text: str | bytes) -> Argv:
    return train_with(lambda s: ["--config", s.write("run.yaml", text)])


FREE = _free_port()  # nothing listens there during the tests

TRAIN_CASES = [
    Case("steps-negative", train("--steps", "-1"), "steps"),
    Case("steps-zero", train("--steps", "0"), "steps"),
    Case("steps-huge", train("--steps", "99999999999999999999"), "steps must be at most"),
    Case("steps-word", train("--steps", "abc"), "--steps"),
    Case("steps-empty", train("--steps", ""), "--steps"),
    Case("steps-float", train("--steps", "1.5"), "--steps"),
    Case("lr-zero", train("--lr", "0"), "lr"),
    Case("lr-negative", train("--lr", "-1"), "lr"),
    Case("lr-nan", train("--lr", "nan"), "lr"),
    Case("lr-inf", train("--lr", "inf"), "lr"),
    Case("lr-overflow", train("--lr", "1e400"), "lr"),
    Case("lr-comma", train("--lr", "0,1"), "--lr"),
    # A finite blow-up (loss ~1e7 by step 10) is divergence, not a finished run at chance.
    Case("lr-blows-up", train("--lr", "90", "--quiet"), "training diverged at step 10", code=1),
    Case("batch-zero", train("--batch-size", "0"), "batch_size"),
    Case("reset-prob-above-one", train("--reset-prob", "1.5"), "reset_prob"),
    Case("reset-prob-negative", train("--reset-prob", "-0.1"), "reset_prob"),
    Case("noise-kind", train("--noise", "gaussian:0.2"), "gaussian"),
    Case("noise-rate", train("--noise", "symmetric:1.4"), "1.4"),
    Case("noise-no-rate", train("--noise", "symmetric:"), "symmetric"),
    Case("dataset-unknown", train("--dataset", "imagenet"), "imagenet"),
    Case("dataset-empty", train("--dataset", ""), "dataset"),
    Case("dataset-unicode", train("--dataset", "数字"), "数字"),
    Case("model-unknown", train("--model", "resnet50"), "resnet50"),
    Case("optimizer-unknown", train("--optimizer", "adamw2"), "adamw2"),
    Case("schedule-typo", train("--schedule", "cosinee"), "cosinee"),
    Case("precision-unknown", train("--precision", "fp8"), "fp8"),
    Case("device-cuda-word", train("--device", "cuda:abc"), "cuda:abc"),
    Case("device-tpu", train("--device", "tpu"), "tpu"),
    Case("device-absent-gpu", train("--device", "cuda:99"), "cuda:99"),
    Case("seed-negative", train("--seed", "-1"), "seed"),
    Case("seed-huge", train("--seed", str(2**40)), "seed must be at most"),
    Case("eval-every-above-steps", train("--eval-every", "50"), "eval_every"),
    Case("val-fraction-zero", train("--val-fraction", "0"), "val_fraction"),
    Case("val-fraction-high", train("--val-fraction", "0.95"), "val_fraction"),
    Case("momentum-above-one", train("--momentum", "1.5"), "momentum"),
    Case("weight-decay-negative", train("--weight-decay", "-1"), "weight_decay"),
    Case("train-subset-one", train("--train-subset", "1"), "train_subset"),
    Case("image-size-tiny", train("--image-size", "2"), "image_size"),
    Case("image-size-huge", train("--image-size", "100000"), "image_size"),
    Case("augment-unknown", train("--augment", "wild"), "wild"),
    Case("checkpoint-metric", train("--checkpoint-metric", "acc"), "acc"),
    Case("lr-on-reset", train("--lr-on-reset", "reset"), "reset"),
    Case("gce-q-zero", train("--gce-q", "0"), "gce_q"),
    Case("patience-negative", train("--patience", "-5"), "patience"),
    Case("lr-gamma-above-one", train("--lr-gamma", "2"), "lr_gamma"),
    Case("baseline-without-resetting", train("--baseline", "--reset-prob", "0"), "--reset-prob"),
    Case("unknown-flag", train("--frobnicate"), "--frobnicate"),
    Case("noise-matrix-missing", train("--noise", "matrix:/nonexistent/m.npy"), "does not exist"),
    Case(
        "noise-matrix-folder",
        train_with(lambda s: ["--noise", f"matrix:{s.folder}"]),
        "is a directory, not a file",
    ),
    Case(
        "noise-matrix-text-as-npy",
        train_with(lambda s: ["--noise", "matrix:" + s.write("m.npy", "0.5 0.5\n")]),
        "not a .npy file",
    ),
    Case(
        "imagefolder-root-is-file",
        train_with(lambda s: ["--dataset", "imagefolder", "--data-root", s.plain_file]),
        "is a file, not a folder",
    ),
    Case(
        "imagefolder-root-missing",
        train("--dataset", "imagefolder", "--data-root", "/nonexistent/images"),
        "does not exist",
    ),
    Case(
        "reset-layers-unknown",
        train("--reset-layers", "layer9", "--reset-prob", "0.1"),
        "layer9",
    ),
    # --config files
    Case("config-missing", train("--config", "/nonexistent/run.yaml"), "no such --config file"),
    Case(
        "config-folder",
        train_with(lambda s: ["--config", s.folder]),
        "is a directory, not a --config file",
    ),
    Case("config-binary", train_with(lambda s: ["--config", s.binary]), "not UTF-8"),
    Case("config-latin1", train_with(lambda s: ["--config", s.latin1]), "not UTF-8"),
    Case("config-nul-bytes", train_with(lambda s: ["--config", s.nul_bytes]), "#x0000"),
    Case("config-truncated", train_with(lambda s: ["--config", s.truncated]), "line 2"),
    Case("config-symlink-loop", train_with(lambda s: ["--config", s.loop]), "loop.yaml"),
    Case("config-duplicate-key", config("lr: 0.1\nlr: 0.2\n"), "duplicate key 'lr'"),
    Case("config-list", config("- lr: 0.1\n"), "mapping"),
    Case("config-unknown-key", config("reset_probability: 0.1\n"), "reset_probability"),
    Case("config-lr-word", config("lr: fast\n"), "lr must be a number"),
    Case("config-batch-float", config("batch_size: 1.5\n"), "batch_size must be an integer"),
    Case("config-python-tag", config("lr: !!python/object/apply:os.system [echo]\n"), "run.yaml"),
    Case("config-deep-nesting", config("[" * 5000 + "]" * 5000), "run.yaml"),
    Case("config-bad-date", config("seed: 2024-02-30\n"), "run.yaml"),
    # --out locations
    Case("out-is-file", lambda s: ["train", "--out", s.plain_file], "is a file, not a folder"),
    Case("out-below-dev-null", lambda s: ["train", "--out", "/dev/null/x"], "/dev/null"),
    Case("out-in-proc", lambda s: ["train", "--out", "/proc/reset-tune-x"], "/proc"),
    Case(
        "out-holds-curves-folder",
        lambda s: ["train", "--out", str(_with_curves_folder(s))],
        "curves.png there is a folder",
    ),
    Case("out-name-too-long", lambda s: ["train", "--out", s.path("x" * 300)], "not a usable"),
]


def _with_curves_folder(s: Scratch) -> Path:
    (s.root / "prev" / "curves.png").mkdir(parents=True, exist_ok=True)
    return s.root / "prev"


def _recorded_search(s: Scratch, tracking_uri: str) -> str:
    """A search record as a search tracked at `tracking_uri` leaves it; returns its id."""
    from reset_tune.search.record import SearchRecord, search_directory

    folder = search_directory(Path(s.state), "old-1")
    folder.mkdir(parents=True, exist_ok=True)
    SearchRecord(
        search_id="old-1",
        experiment_name="old",
        spec={},
        spec_source="old.yaml",
        spec_text="",
        tracking_uri=tracking_uri,
        optuna_storage="sqlite:///unused.db",
        target_trials=1,
        tracking_explicit=True,
        directory=str(folder),
    ).save()
    return "old-1"


NOISE_MATRIX_SPEC = SPEC_TEXT.replace("noise: symmetric:0.4", "noise: matrix:/nonexistent/m.npy")
EMPTY_CIFAR_SPEC = SPEC_TEXT.replace(
    "dataset: digits", "dataset: cifar10\n  data_root: /nonexistent/cifar\n  download: false"
)

SEARCH_CASES = [
    Case("no-spec", lambda s: ["search", "--state-dir", s.state], "give a search spec file"),
    Case("spec-missing", search_with(lambda s: ["/nonexistent/s.yaml"]), "no such spec file"),
    Case("spec-folder", search_with(lambda s: [s.folder]), "is a directory"),
    Case("spec-binary", search_with(lambda s: [s.binary, "--state-dir", s.state]), "not UTF-8"),
    Case(
        "spec-truncated",
        search_with(lambda s: [s.truncated, "--state-dir", s.state]),
        "invalid YAML: line",
    ),
    Case(
        "spec-duplicate-key",
        search_with(lambda s: [s.spec("trials: 2\ntrials: 3\n"), "--state-dir", s.state]),
        "duplicate key",
    ),
    Case(
        "spec-unknown-key",
        search_with(lambda s: [s.spec(SPEC_TEXT + "trails: 3\n"), "--state-dir", s.state]),
        "trails",
    ),
    Case("trials-zero", search("--trials", "0"), "trials must be at least 1"),
    Case("trials-negative", search("--trials", "-5"), "trials must be at least 1"),
    Case("max-failures-negative", search("--max-failures", "-1"), "max_failures"),
    Case("checkpoint-every-zero", search("--checkpoint-every", "0"), "checkpoint_every"),
    Case("top-negative", search("--top", "-1"), "--top"),
    Case("top-zero", search("--top", "0"), "--top"),
    Case(
        "address-nobody-listens",
        search("--address", f"127.0.0.1:{FREE}"),
        "no Ray cluster answers",
        code=1,
    ),
    Case("address-words", search("--address", "my cluster"), "not a Ray address"),
    Case("address-port-range", search("--address", "127.0.0.1:99999"), "not a Ray address"),
    Case(
        "ray-address-env",
        search(),
        "no Ray cluster answers",
        code=1,
        env={"RAY_ADDRESS": f"127.0.0.1:{FREE}"},
    ),
    Case("storage-unknown-scheme", search("--storage", "bogus://nowhere"), "bogus"),
    Case("storage-missing-folder", search("--storage", "sqlite:////nonexistent/o.db"), "exist"),
    Case("storage-in-memory", search("--storage", "sqlite://"), "in memory"),
    Case("storage-not-a-url", search("--storage", "not a url"), "not a database URL"),
    Case(
        "storage-folder",
        search_with(lambda s: [SPEC, "--state-dir", s.state, "--storage", f"sqlite:///{s.folder}"]),
        "is a directory",
    ),
    Case(
        "storage-password-masked",
        search("--storage", "bogus://optuna:hunter2@db/optuna"),
        "bogus",
        secret="hunter2",
    ),
    Case("tune-storage-below-file", search("--tune-storage", "/dev/null/x"), "/dev/null"),
    Case(
        "tune-storage-is-file",
        search_with(lambda s: [SPEC, "--state-dir", s.state, "--tune-storage", s.plain_file]),
        "is a file",
    ),
    Case("tune-storage-scheme", search("--tune-storage", "bogus://bucket/x"), "--tune-storage"),
    Case("mlflow-not-a-url", search("--mlflow-uri", "notaurl"), "neither a URL"),
    Case("mlflow-ftp", search("--mlflow-uri", "ftp://host/x"), "unknown scheme"),
    Case("mlflow-no-host", search("--mlflow-uri", "http://:5000"), "no host"),
    Case("mlflow-port-word", search("--mlflow-uri", "http://host:abc"), "--mlflow-uri"),
    Case(
        "mlflow-password-masked",
        search("--mlflow-uri", "http://alice:hunter2@host:abc"),
        "alice:***@host",
        secret="hunter2",
    ),
    Case(
        "mlflow-env",
        search(),
        "$MLFLOW_TRACKING_URI",
        env={"MLFLOW_TRACKING_URI": "notaurl"},
    ),
    Case(
        "state-dir-is-file",
        search_with(lambda s: [SPEC, "--state-dir", s.plain_file]),
        "is a file, not a folder",
    ),
    Case(
        "seed-configs-unknown-id",
        search("--seed-configs", "no-such-search"),
        "neither a file nor a search id",
    ),
    Case(
        "seed-configs-outside-space",
        search_with(
            lambda s: [
                SPEC,
                "--state-dir",
                s.state,
                "--seed-configs",
                s.write("seeds.yaml", "- {reset_prob: 0.5, lr: 0.05, batch_size: 32}\n"),
            ]
        ),
        "reset_prob",
    ),
    Case(
        "seed-configs-binary",
        search_with(lambda s: [SPEC, "--state-dir", s.state, "--seed-configs", s.binary]),
        "not UTF-8",
    ),
    Case(
        "seed-configs-scalar",
        search_with(
            lambda s: [SPEC, "--state-dir", s.state, "--seed-configs", s.write("x.yaml", "42\n")]
        ),
        "list of configurations",
    ),
    Case("resume-nothing", search("--resume"), "no search"),
    Case("resume-unknown-id", search("--resume", "nope-1"), "no search 'nope-1'"),
    Case(
        "data-noise-matrix-missing",
        search_with(lambda s: [s.spec(NOISE_MATRIX_SPEC), "--state-dir", s.state]),
        "does not exist",
    ),
    Case(
        "data-cifar-root-empty",
        search_with(lambda s: [s.spec(EMPTY_CIFAR_SPEC), "--state-dir", s.state]),
        "not found",
    ),
]

OTHER_CASES = [
    # sync
    Case("sync-unknown-search", lambda s: ["sync", "nope", "--state-dir", s.state], "no search"),
    Case(
        "sync-not-a-url",
        lambda s: ["sync", "nope", "--state-dir", s.state, "--mlflow-uri", "notaurl"],
        "neither a URL",
    ),
    Case(
        "sync-state-is-file",
        lambda s: ["sync", "nope", "--state-dir", s.plain_file],
        "is a file",
    ),
    Case(
        "sync-dead-server",
        lambda s: [
            "sync",
            _recorded_search(s, "http://127.0.0.1:1"),
            "--state-dir",
            s.state,
            "--mlflow-uri",
            f"http://alice:hunter2@127.0.0.1:{FREE}",
        ],
        "no MLflow server answers at http://alice:***@",
        code=1,
        secret="hunter2",
    ),
    Case(
        "sync-masked-recorded-uri",
        lambda s: [
            "sync",
            _recorded_search(s, "http://alice:***@127.0.0.1:1"),
            "--state-dir",
            s.state,
        ],
        "give --mlflow-uri with its credentials",
    ),
    # up / down / stack
    Case("up-state-is-file", lambda s: ["up", "--state-dir", s.plain_file], "is a file"),
    Case(
        "up-config-missing",
        lambda s: ["up", "--state-dir", s.state, "--config", "/nonexistent/stack.yaml"],
        "does not exist",
    ),
    Case(
        "up-config-binary",
        lambda s: ["up", "--state-dir", s.state, "--config", s.binary],
        "not UTF-8",
    ),
    Case(
        "up-config-truncated",
        lambda s: ["up", "--state-dir", s.state, "--config", s.truncated],
        "invalid YAML: line",
    ),
    Case(
        "up-config-unknown-key",
        lambda s: [
            "up",
            "--state-dir",
            s.state,
            "--config",
            s.write("stack.yaml", "ray: {num_cpu: 1}\n"),
        ],
        "ray.num_cpu",
    ),
    Case("up-num-cpus", lambda s: ["up", "--state-dir", s.state, "--num-cpus", "-1"], "--num-cpus"),
    Case("down-timeout", lambda s: ["down", "--state-dir", s.state, "--timeout", "0"], "--timeout"),
    Case("stack-state-is-file", lambda s: ["stack", "--state-dir", s.plain_file], "is a file"),
    # submit / jobs / stop
    Case("submit-id-dots", submit("--submission-id", "../../x"), "--submission-id"),
    Case("submit-id-slash", submit("--submission-id", "a/b"), "--submission-id"),
    Case("submit-id-empty", submit("--submission-id", ""), "--submission-id"),
    Case("submit-mlflow-not-a-url", submit("--mlflow-uri", "notaurl"), "neither a URL"),
    Case("submit-trials-after-dashes", submit("--", "--trials", "0"), "trials must be at least"),
    Case("submit-unknown-after-dashes", submit("--", "--bogus"), "unrecognized arguments"),
    Case("submit-top-after-dashes", submit("--", "--top", "-1"), "--top"),
    Case("submit-resume-after-dashes", submit("--", "--resume"), "--resume"),
    Case(
        "submit-mlflow-after-dashes",
        submit("--", "--mlflow-uri", "notaurl"),
        "neither a URL",
    ),
    Case("submit-int-after-dashes", submit("--", "--max-failures", "x"), "--max-failures"),
    Case(
        "submit-seed-configs-outside-space",
        lambda s: [
            *submit()(s),
            "--seed-configs",
            s.write("seeds.yaml", "- {reset_prob: 0.5, lr: 0.05, batch_size: 32}\n"),
        ],
        "reset_prob",
    ),
    Case(
        "submit-seed-configs-folder",
        lambda s: [*submit()(s), "--seed-configs", s.folder],
        "is a directory",
    ),
    Case(
        "submit-spec-missing",
        lambda s: ["submit", "/nonexistent/s.yaml", "--address", "http://127.0.0.1:1"],
        "no such search spec file",
    ),
    Case(
        "submit-spec-binary",
        lambda s: ["submit", s.binary, "--address", "http://127.0.0.1:1"],
        "not UTF-8",
    ),
    Case("stop-timeout", lambda s: ["stop", "j1", "--timeout", "0"], "--timeout"),
    Case("stop-job-id-path", lambda s: ["stop", "../../etc"], "JOB '../../etc'"),
    Case("logs-job-id-slash", lambda s: ["logs", "a/b"], "JOB 'a/b'"),
    Case("jobs-state-is-file", lambda s: ["jobs", "--state-dir", s.plain_file], "is a file"),
    # recommend
    Case("recommend-no-dataset", lambda s: ["recommend", "--no-log"], "--dataset is required"),
    Case(
        "recommend-noise-rate",
        lambda s: ["recommend", "--dataset", "digits", "--known-noise-rate", "1.5"],
        "--known-noise-rate",
    ),
    Case(
        "recommend-mlflow-not-a-url",
        lambda s: ["recommend", "--dataset", "digits", "--mlflow-uri", "notaurl"],
        "neither a URL",
    ),
    Case(
        "recommend-spec-exists",
        lambda s: ["recommend", "--dataset", "digits", "--write-spec", s.plain_file],
        "exists",
    ),
    Case(
        "recommend-spec-folder-missing",
        lambda s: ["recommend", "--dataset", "digits", "--write-spec", "/nonexistent/x.yaml"],
        "does not exist",
    ),
    Case("recommend-dataset", lambda s: ["recommend", "--dataset", "imagenet"], "imagenet"),
    Case(
        "recommend-model",
        lambda s: ["recommend", "--dataset", "digits", "--model", "resnet50"],
        "resnet50",
    ),
    Case(
        "recommend-noise",
        lambda s: ["recommend", "--dataset", "digits", "--noise", "gaussian:0.2"],
        "gaussian",
    ),
    Case(
        "recommend-steps", lambda s: ["recommend", "--dataset", "digits", "--steps", "-1"], "steps"
    ),
    # the top level
    Case("no-command", lambda s: [], "COMMAND"),
    Case("unknown-command", lambda s: ["trian"], "trian"),
]

ALL_CASES = TRAIN_CASES + SEARCH_CASES + OTHER_CASES
_ENVIRONMENT = (
    "RAY_ADDRESS",
    "MLFLOW_TRACKING_URI",
    "RESET_TUNE_STATE_DIR",
    "RESET_TUNE_OPTUNA_STORAGE",
    "RESET_TUNE_TUNE_STORAGE",
)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_the_table_is_large_and_its_ids_distinct(tmp_path):
    ids = [case.id for case in ALL_CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 80
    commands = {
        case.argv(Scratch(tmp_path))[0] for case in ALL_CASES if case.argv(Scratch(tmp_path))
    }
    for command in (
        "train",
        "search",
        "sync",
        "up",
        "down",
        "stack",
        "submit",
        "stop",
        "logs",
        "jobs",
    ):
        assert command in commands
    assert "recommend" in commands


@pytest.mark.parametrize("case", ALL_CASES, ids=[case.id for case in ALL_CASES])
def test_bad_input_is_one_line_and_creates_nothing(case, tmp_path, monkeypatch, capsys):
    for name in _ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    for name, value in (case.env or {}).items():
        monkeypatch.setenv(name, value)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)  # a default output folder (runs/, .reset-tune/) would land here
    argv = case.argv(Scratch(scratch))
    before = _tree(scratch)

    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own usage errors
        code = exit_info.code

    out, err = capsys.readouterr()
    assert code == case.code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert case.fragment in lines[0], lines[0]
    assert out == ""
    if case.secret is not None:
        assert case.secret not in err
    assert _tree(scratch) == before, "something was created"
    assert not os.path.exists("/nonexistent")
