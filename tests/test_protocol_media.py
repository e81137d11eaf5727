"""The media-project messages: captured official frames round-trip, every server frame encodes and
decodes under its wire names, and a jobRequest is decoded tolerantly."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from trio_sogni import protocol as p


def captured(name: str) -> dict[str, Any]:
    path = Path(__file__).parent / "data" / "media-wire" / f"{name}.json"
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def payload(frame: bytes) -> Any:
    return json.loads(base64.b64decode(json.loads(frame)["data"]))


@pytest.mark.parametrize("name", ["jobRequest-projects-create", "jobRequest-generate_image-tool"])
def test_captured_job_requests_round_trip_exactly(name: str) -> None:
    document = captured(name)
    frame = p.encode_envelope(document["type"], document["data"])
    message = p.decode_client_message(frame)
    assert isinstance(message, p.MediaJobRequest)
    assert message.job_id == document["data"]["jobID"]
    assert message.key_frame is not None
    assert message.key_frame.model_id == "flux1-schnell-fp8"
    assert payload(p.encode_client_message(message)) == document["data"]


def test_captured_request_fields_decode_to_their_attributes() -> None:
    message = p.decode_client_message(
        p.encode_envelope("jobRequest", captured("jobRequest-projects-create")["data"])
    )
    assert isinstance(message, p.MediaJobRequest)
    kf = message.key_frames[0]
    assert (kf.steps, kf.guidance_scale, kf.positive_prompt) == (4, 1, "a red fox in snow")
    assert isinstance(kf.seed, msgspec.UnsetType)
    assert (message.number_of_images, message.token_type, message.output_format) == (
        1,
        "spark",
        "png",
    )
    assert kf.context_images() == ()


def test_job_request_unknown_fields_are_dropped_not_refused() -> None:
    data = captured("jobRequest-projects-create")["data"]
    data = {**data, "someNewField": {"x": 1}}
    data["keyFrames"] = [{**data["keyFrames"][0], "loraFuture": True, "hasContextImage3": True}]
    message = p.decode_client_message(p.encode_envelope("jobRequest", data))
    assert isinstance(message, p.MediaJobRequest)
    assert message.key_frames[0].context_images() == (3,)
    assert "someNewField" not in payload(p.encode_client_message(message))


def test_job_request_known_fields_are_still_type_checked() -> None:
    data = captured("jobRequest-projects-create")["data"]
    with pytest.raises(msgspec.ValidationError):
        p.decode_client_message(p.encode_envelope("jobRequest", {**data, "numberOfImages": "2"}))
    with pytest.raises(msgspec.ValidationError):
        p.decode_client_message(p.encode_envelope("jobRequest", {**data, "keyFrames": [{}]}))


def test_cancel_frame_is_the_official_shape() -> None:
    frame = p.encode_client_message(p.AbortJob(job_id="P1"))
    assert payload(frame) == {
        "jobID": "P1",
        "error": "artistCanceled",
        "error_message": "artistCanceled",
        "isFromWorker": False,
    }


SERVER_EXAMPLES: list[tuple[p.ServerMessage, dict[str, Any]]] = [
    (
        p.JobState(job_id="P", type="queued", queue_position=2, estimated_start_seconds=8),
        {"jobID": "P", "type": "queued", "queuePosition": 2, "estimatedStartSeconds": 8},
    ),
    (
        p.JobState(
            job_id="P",
            type="jobStarted",
            img_id="I",
            worker_name="w",
            job_index=1,
            positive_prompt="fox",
            negative_prompt="",
        ),
        {
            "jobID": "P",
            "type": "jobStarted",
            "imgID": "I",
            "workerName": "w",
            "jobIndex": 1,
            "positivePrompt": "fox",
            "negativePrompt": "",
        },
    ),
    (p.JobState(job_id="P", type="jobCompleted"), {"jobID": "P", "type": "jobCompleted"}),
    (
        p.JobProgress(job_id="P", img_id="I", step=2, step_count=4, progress=0.5, job_index=0),
        {"jobID": "P", "imgID": "I", "step": 2, "stepCount": 4, "progress": 0.5, "jobIndex": 0},
    ),
    (
        p.JobETA(job_id="P", img_id="I", eta_seconds=1.5),
        {"jobID": "P", "imgID": "I", "etaSeconds": 1.5},
    ),
    (
        p.JobResult(
            job_id="P",
            img_id="I",
            performed_step_count=4,
            last_seed="42",
            triggered_nsfw_filter=False,
            output_format="png",
        ),
        {
            "jobID": "P",
            "imgID": "I",
            "performedStepCount": 4,
            "lastSeed": "42",
            "outputFormat": "png",
        },
    ),
    (
        p.JobResult(job_id="P", img_id="I", user_canceled=True),
        {"jobID": "P", "imgID": "I", "userCanceled": True},
    ),
    (
        p.JobError(job_id="P", img_id="I", error="genfailure", error_message="x", job_index=0),
        {"jobID": "P", "imgID": "I", "error": "genfailure", "error_message": "x", "jobIndex": 0},
    ),
    (
        p.JobError(job_id="P", error=4001, error_message="bad", is_from_worker=False),
        {"jobID": "P", "error": 4001, "error_message": "bad", "isFromWorker": False},
    ),
    (
        p.JobRetry(job_id="P", img_id="I", job_index=3),
        {"jobID": "P", "imgID": "I", "jobIndex": 3},
    ),
    (
        p.ArtistCancelConfirmation(job_id="P", did_cancel=True),
        {"jobID": "P", "didCancel": True},
    ),
    (
        p.ProjectQueue(job_id="P", queue_position=1, queue_status="waiting"),
        {"jobID": "P", "queuePosition": 1, "queueStatus": "waiting"},
    ),
    (p.SwarmModels(models={"flux1-schnell-fp8": 2}), {"flux1-schnell-fp8": 2}),
]


@pytest.mark.parametrize(("message", "wire"), SERVER_EXAMPLES)
def test_server_frames_use_wire_names_and_round_trip(
    message: p.ServerMessage, wire: dict[str, Any]
) -> None:
    frame = p.encode_server_message(message)
    assert json.loads(frame)["type"] == message.message_type
    assert payload(frame) == wire
    assert p.decode_server_message(frame) == message


def test_server_frames_ignore_unknown_fields() -> None:
    frame = p.encode_envelope("jobProgress", {"jobID": "P", "imgID": "I", "step": 1, "new": [1]})
    assert p.decode_server_message(frame) == p.JobProgress(job_id="P", img_id="I", step=1)


def test_authenticated_carries_project_snapshots() -> None:
    snapshot = p.ProjectSnapshot(
        id="P",
        status="completed",
        app_id="app",
        model=p.ProjectModel(id="flux1-schnell-fp8", type="image"),
        image_count=1,
        completed_worker_jobs=[
            p.WorkerJobSnapshot(id="I", img_id="I", status="jobCompleted", seed_used=7)
        ],
    )
    message = p.Authenticated(id="a", active_projects=[], unclaimed_completed_projects=[snapshot])
    wire = payload(p.encode_server_message(message))
    assert wire["activeProjects"] == []
    assert wire["unclaimedCompletedProjects"][0]["completedWorkerJobs"] == [
        {"id": "I", "imgID": "I", "status": "jobCompleted", "seedUsed": 7}
    ]
    assert p.decode_server_message(p.encode_server_message(message)) == message
    # An older server's authenticated (no media fields) still decodes.
    older = p.decode_server_message(p.encode_envelope("authenticated", {"id": "a"}))
    assert isinstance(older, p.Authenticated)
    assert older.active_projects is None
