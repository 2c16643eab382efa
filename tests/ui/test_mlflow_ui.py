"""What a user sees in the MLflow UI after a search, checked in a real browser.

A tiny search runs into a real `mlflow server` (on the session's Ray cluster); the UI link it
prints is opened in headless Chromium, which runs MLflow's React app; the assertions read the
rendered page (not the REST API). Screenshots of the parent run, a trial and the comparison plot
are kept under pytest's temporary directory; the test prints where.

Chromium comes from Debian (`apt-get install chromium`, as `.ci/run` does); without it the test
is skipped with that reason.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from reset_tune.tracking import find_search_runs, trial_runs

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "reset_tune.cli.main"]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
ENV.pop("RAY_ADDRESS", None)
ENV.pop("MLFLOW_TRACKING_URI", None)
EXPERIMENT = "ui-check"
# Virtual time Chromium gives the page to load its scripts and answer its REST calls (ms).
RENDER_BUDGET_MS = 20_000


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (CI installs Debian's: apt-get install -y chromium)")


def _chromium_args(chromium: str, profile: Path, size: str) -> list[str]:
    return [
        chromium,
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",  # a fresh profile: what a first-time visitor sees
        f"--virtual-time-budget={RENDER_BUDGET_MS}",
        f"--window-size={size}",
    ]


def render_dom(chromium: str, url: str, profile: Path) -> str:
    """The page at `url` as HTML, once MLflow's app has rendered it."""
    done = subprocess.run(
        [*_chromium_args(chromium, profile, "1600,1200"), "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def visible_text(dom: str) -> str:
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def render_text(chromium: str, url: str, profile: Path) -> str:
    """The visible text of the page at `url` once MLflow's app has rendered it."""
    return visible_text(render_dom(chromium, url, profile))


def screenshot(chromium: str, url: str, path: Path, profile: Path, size: str) -> Path:
    done = subprocess.run(
        [*_chromium_args(chromium, profile, size), f"--screenshot={path}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and path.stat().st_size > 10_000, done.stderr[-2000:]
    return path


@pytest.fixture(scope="module")
def search(ray_cluster, mlflow_server, tmp_path_factory):
    """A finished tiny search (one r = 0 trial, two resetting) and what it printed."""
    tmp = tmp_path_factory.mktemp("ui-search")
    spec = {
        "name": EXPERIMENT,
        "description": "UI check: digits, 40 % symmetric noise",
        "train": {
            "dataset": "digits",
            "noise": "symmetric:0.4",
            "model": "mlp",
            "steps": 200,
            "eval_every": 50,
            "device": "cpu",
        },  # fmt: skip
        "objective": "val_acc",
        "trials": 3,
        "concurrency": 2,
        "seeds": [0],
        "resources": {"cpus": 1, "gpus": 0},
        "sampler": {"type": "tpe", "seed": 0, "startup_trials": 2},
        "params": {
            "reset_prob": {"type": "loguniform", "low": 0.005, "high": 0.05},
            "patience": {"type": "int", "low": 50, "high": 100, "step": 50},
            "lr": {"type": "categorical", "choices": [0.05, 0.1]},
        },
    }
    spec_path = tmp / "ui-check.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    # Known configurations, so both arms are there whatever the sampler draws.
    seeds = tmp / "seeds.yaml"
    seeds.write_text(
        yaml.safe_dump(
            [
                {"reset_prob": 0, "lr": 0.1},
                {"reset_prob": 0.02, "patience": 50, "lr": 0.1},
                {"reset_prob": 0.01, "patience": 50, "lr": 0.05},
            ]
        )
    )
    done = subprocess.run(
        [
            *CLI,
            "search",
            str(spec_path),
            "--address",
            ray_cluster,
            "--mlflow-uri",
            mlflow_server.uri,
            "--state-dir",
            str(tmp / "state"),
            "--seed-configs",
            str(seeds),
            "--json",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=ENV,
        timeout=420,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads(done.stdout)


def test_the_printed_link_opens_a_report_in_the_model_training_view(
    search, mlflow_server, tmp_path_factory, monkeypatch
):
    chromium = _chromium()
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    shots = tmp_path_factory.mktemp("ui-screenshots")
    print(f"\nscreenshots of the MLflow UI: {shots}")
    (parent,) = find_search_runs(mlflow_server.uri, EXPERIMENT)
    trials = {t.run_name: t for t in trial_runs(mlflow_server.uri, parent.run_id)}
    best_name = next(name for name, t in trials.items() if t.tags.get("reset_tune.best"))
    url = search["mlflow_url"]
    assert url.startswith(mlflow_server.uri) and parent.run_id in url

    dom = render_dom(chromium, url, shots / "profile-parent")
    page = visible_text(dom)
    # The model-training view: its sidebar (Runs, Models), not the GenAI one (Judges, ...).
    assert "Model registry" in page
    for genai in ("Judges", "Evaluation runs", "Prompts & versions"):
        assert genai not in page
    # The parent run by its name, its nested trials by theirs (each says its arm), the winner
    # marked, the gain and the verdict in the description.
    assert search["search_id"] in page
    assert len(trials) == 3
    for name in trials:
        assert name in page
    assert any(name.endswith(" r=0") or " r=0 " in name for name in trials)
    assert "★" in best_name and best_name in page
    gain = search["summary"]["summary/gain_test_acc"]
    assert f"Gain of resetting: {100 * gain:+.1f} points" in page
    assert "verdict:" in page
    assert "summary/test_acc" in page  # the parent's metrics table
    screenshot(chromium, url, shots / "ui-parent-run.png", shots / "profile-parent", "1600,2600")

    # The description links the best trial's run; the link opens it.
    trial = trials[best_name]
    # The note's links carry the training view (the UI's own child-run links do not).
    links = set(re.findall(r'href="(#/experiments/[^"]*/runs/[0-9a-f]+\?workflowType[^"]*)"', dom))
    assert any(trial.run_id in link for link in links), links
    link = next(link for link in links if trial.run_id in link)
    base = url.split("#", 1)[0]
    target = visible_text(render_dom(chromium, base + html.unescape(link), shots / "profile-link"))
    assert best_name in target and "Model registry" in target

    # A trial: its name, its few parameters, its summary under one prefix.
    trial_url = url.replace(parent.run_id, trial.run_id)
    page = render_text(chromium, trial_url, shots / "profile-trial")
    assert best_name in page and "summary/objective" in page and "running_objective" not in page
    assert "Parameters (" in page
    shown = int(re.search(r"Parameters \((\d+)\)", page).group(1))
    assert shown == len(trial.params) <= 10
    screenshot(chromium, trial_url, shots / "ui-trial.png", shots / "profile-trial", "1600,2000")

    # The comparison plot, as the run's Artifacts tab shows it.
    plot_url = url.replace(
        f"/runs/{parent.run_id}?", f"/runs/{parent.run_id}/artifacts/comparison.png?"
    )
    page = render_text(chromium, plot_url, shots / "profile-plot")
    assert "comparison.png" in page
    screenshot(chromium, plot_url, shots / "ui-comparison.png", shots / "profile-plot", "1800,1100")

    # The second link: the search's trials, sorted by the objective.
    table = search["mlflow_trials_url"]
    assert "orderByKey=metrics.`summary/objective`" in unquote(table)
    page = render_text(chromium, table, shots / "profile-table")
    for name in trials:
        assert name in page
    screenshot(chromium, table, shots / "ui-trials-table.png", shots / "profile-table", "1600,1000")

    # The plots themselves, beside the screenshots, for a look at full size.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    plots = [
        (parent.run_id, "comparison.png", "plot-comparison.png"),
        (parent.run_id, "curves.png", "plot-winners-curves.png"),
        (trial.run_id, "curves.png", "plot-best-trial-curves.png"),
    ]
    for run_id, name, saved in plots:
        local = Path(client.download_artifacts(run_id, name, str(shots)))
        local.rename(shots / saved)
        assert (shots / saved).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
