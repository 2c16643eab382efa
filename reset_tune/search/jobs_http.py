"""The Ray dashboard's Jobs REST API over plain HTTP, for callers that must not import Ray.

`reset-tune up` and `down` talk to a head they started (or are about to stop) and only need to
know whether the dashboard answers and to stop the jobs it runs; importing Ray for that would cost
seconds. Everything else about jobs goes through Ray's client in `reset_tune.search.jobs`.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from typing import Any

ACTIVE_STATUSES = ("PENDING", "RUNNING")


def http_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether an HTTP server answers `url` with success or an auth refusal (it is up)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except urllib.error.HTTPError as error:
        return error.code in (401, 403)
    except (OSError, ValueError):
        return False


def dashboard_ready(dashboard_url: str) -> bool:
    """Whether the dashboard's version and Jobs endpoints both answer."""
    return http_answers(f"{dashboard_url}/api/version") and http_answers(
        f"{dashboard_url}/api/jobs/"
    )


def list_job_records(dashboard_url: str) -> list[dict[str, Any]]:
    """The dashboard's job records (`submission_id`, `status`, ...); [] when it does not answer."""
    try:
        with urllib.request.urlopen(f"{dashboard_url}/api/jobs/", timeout=5.0) as response:
            listed = json.loads(response.read())
    except (OSError, ValueError):
        return []
    return [job for job in listed if isinstance(job, dict)] if isinstance(listed, list) else []


def stop_running_jobs(dashboard_url: str, *, timeout_s: float = 15.0) -> list[str]:
    """Ask the Jobs API to stop every pending or running job; wait (bounded) until they end.

    Best effort: returns the ids asked to stop.
    """
    asked = []
    for job in list_job_records(dashboard_url):
        job_id = job.get("submission_id")
        if job_id and job.get("status") in ACTIVE_STATUSES:
            request = urllib.request.Request(
                f"{dashboard_url}/api/jobs/{job_id}/stop", method="POST", data=b""
            )
            with contextlib.suppress(OSError, ValueError):
                urllib.request.urlopen(request, timeout=5.0).close()
                asked.append(job_id)
    deadline = time.monotonic() + timeout_s
    while asked and time.monotonic() < deadline:
        if not any(job.get("status") in ACTIVE_STATUSES for job in list_job_records(dashboard_url)):
            break
        time.sleep(0.3)
    return asked
