"""The Jobs API's errors are one line: a used submission id says so; a server's traceback in
Ray's error text is cut to its first line."""

from __future__ import annotations

import pytest

from reset_tune.search.jobs import JobsError, _call

SERVER_TRACEBACK = (
    "Request failed with status code 500: Traceback (most recent call last):\n"
    '  File "job_head.py", line 1, in submit_job\n'
    "ValueError: Job with submission_id nightly already exists. Please use a different "
    "submission_id.\n."
)


def _raises(text: str):
    def action():
        raise RuntimeError(text)

    return action


def test_a_used_submission_id_is_one_line_saying_so():
    with pytest.raises(JobsError) as raised:
        _call("http://127.0.0.1:8265", None, _raises(SERVER_TRACEBACK))
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert "submission id already exists" in message and "--submission-id" in message


def test_another_api_failure_keeps_only_the_first_line():
    with pytest.raises(JobsError) as raised:
        _call("http://127.0.0.1:8265", None, _raises("Request failed: boom\nline two\nline three"))
    assert str(raised.value).splitlines() == [
        "the Ray Jobs API at http://127.0.0.1:8265 failed: Request failed: boom"
    ]
