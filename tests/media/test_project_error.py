"""ProjectError: in the one error tree, exported, with its data in attributes."""

from __future__ import annotations

import trio_sogni
from trio_sogni import APIError, ChatJobError, ProjectError, SogniError


def test_project_error_is_an_api_error_beside_chat_job_error() -> None:
    assert issubclass(ProjectError, APIError)
    assert issubclass(ProjectError, SogniError)
    assert not issubclass(ProjectError, ChatJobError)
    assert "ProjectError" in trio_sogni.__all__


def test_project_error_carries_the_frame_data() -> None:
    payload = {"jobID": "P", "imgID": "I", "error": 4103, "error_message": "consent required"}
    error = ProjectError(
        "consent required",
        project_id="P",
        code="4103",
        img_id="I",
        vendor_failure_category="policy",
        is_from_worker=True,
        payload=payload,
    )
    assert (error.code, error.project_id, error.img_id, error.vendor_failure_category) == (
        "4103",
        "P",
        "I",
        "policy",
    )
    assert (error.nsfw, error.retryable, error.is_from_worker, error.payload) == (
        False,
        False,
        True,
        payload,
    )
    assert str(error) == "consent required"
    assert (
        repr(error) == "ProjectError('consent required', project_id='P', img_id='I', code='4103')"
    )


def test_a_whole_project_failure_has_no_render_and_may_be_retryable() -> None:
    error = ProjectError("the server no longer knows the project", project_id="P", retryable=True)
    assert error.img_id is None
    assert error.code is None
    assert error.retryable is True
    assert (
        repr(error)
        == "ProjectError('the server no longer knows the project', project_id='P', retryable=True)"
    )
    withheld = ProjectError("withheld", project_id="P", img_id="I", code="nsfw", nsfw=True)
    assert "nsfw=True" in repr(withheld)
