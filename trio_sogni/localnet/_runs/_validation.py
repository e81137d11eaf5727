"""Validation of ``POST /v1/chat/runs`` bodies, and the fields a run's LLM jobs inherit.

:func:`validate_create` turns a create body into a :class:`~._state.RunRequest` or refuses it
with a 400 :class:`~._state.RunError`; the checks run in a fixed order so the first problem
found is the one reported. :func:`job_fields` is what each LLM round's ``llmJobRequest`` copies
from the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, cast

import msgspec

from ...protocol import SAMPLING_FIELDS, LLMJobRequest
from .._jobs._hostedtools import sogni_tools_enabled
from .._jobs._session import validate_request
from ._state import RunError, RunRequest

__all__ = ["job_fields", "validate_create"]

_MEDIA_KEYS: Final = (
    "images",
    "videos",
    "audio",
    "uploadedImages",
    "uploadedVideos",
    "uploadedAudio",
)
_SAMPLING_KEYS: Final = frozenset(SAMPLING_FIELDS)

_JOB_FIELDS: Final = (
    ("tools", "tools"),
    ("tool_choice", "tool_choice"),
    ("tokenType", "token_type"),
    ("appSource", "app_source"),
    ("billingMode", "billing_mode"),
    ("sogni_tools", "sogni_tools"),
)
"""``(llmJobRequest field, RunRequest attribute)`` copied from a run's request into its LLM
jobs."""


def job_fields(request: RunRequest) -> dict[str, Any]:
    """The run request's fields that its LLM jobs carry, under their ``llmJobRequest`` names
    (fields the request does not set are left out)."""
    fields: dict[str, Any] = {}
    for wire, attribute in _JOB_FIELDS:
        value: object = getattr(request, attribute)
        if value is not msgspec.UNSET:
            fields[wire] = value
    return fields


def _external(value: object) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def _media_problem(body: Mapping[str, Any]) -> str | None:
    """Why ``body`` carries inline (``data:``) or non-http(s) media, or ``None``."""
    for message in cast("list[Any]", body.get("messages") or []):
        if not isinstance(message, dict):
            continue
        parts = cast("dict[str, Any]", message).get("content")
        if not isinstance(parts, list):
            continue
        for part in cast("list[Any]", parts):
            item = cast("dict[str, Any]", part) if isinstance(part, dict) else {}
            if isinstance(item.get("image_url"), dict):
                url = cast("dict[str, Any]", item["image_url"]).get("url")
                if not _external(url):
                    return "messages[].content[].image_url.url must be an http(s) URL"
    references = body.get("media_references")
    if references is not None and not isinstance(references, list):
        return "media_references must be a list"
    for reference in cast("list[Any]", references or []):
        if not isinstance(reference, dict):
            return "media_references[] must be objects"
        for key in ("url", "dataUri", "data_uri"):
            value = cast("dict[str, Any]", reference).get(key)
            if value is not None and not _external(value):
                return f"media_references[].{key} must be an http(s) URL"
    context = body.get("media_context")
    if context is not None and not isinstance(context, dict):
        return "media_context must be an object"
    for key in _MEDIA_KEYS:
        items: object = cast("dict[str, Any]", context or {}).get(key) or []
        if not isinstance(items, list):
            return f"media_context.{key} must be a list"
        for item in cast("list[Any]", items):
            url = cast("dict[str, Any]", item).get("url") if isinstance(item, dict) else item
            if not _external(url):
                return f"media_context.{key}[] must be http(s) URLs"
    return None


def validate_create(body: Mapping[str, Any], default_model: str) -> RunRequest:
    """The run's request from a create body (``model`` defaults to ``default_model``).

    Raises:
        RunError: 400 ``invalid_request`` for a malformed body or one that would not make a
            valid ``llmJobRequest``; 400 ``external_media_required`` for inline or non-http(s)
            media.
    """

    def bad(message: str) -> RunError:
        return RunError(400, "invalid_request", message)

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list")
    problem = _media_problem(body)
    if problem is not None:
        raise RunError(400, "external_media_required", f"Inline media is not accepted: {problem}")
    model = body.get("model", default_model)
    if not isinstance(model, str) or not model:
        raise bad("'model' must be a non-empty string")
    raw_sampling: object = body.get("sampling") or {}
    if not isinstance(raw_sampling, dict):
        raise bad("'sampling' must be an object")
    sampling = cast("dict[str, Any]", raw_sampling)
    unknown = set(sampling) - _SAMPLING_KEYS
    if unknown:
        raise bad(f"unknown sampling fields: {', '.join(sorted(unknown))}")
    request: dict[str, Any] = {"model": model, "messages": messages}
    if sampling:
        request["sampling"] = sampling
    renames = {
        "tools": "tools",
        "tool_choice": "toolChoice",
        "session_id": "sessionId",
        "client_message_id": "clientMessageId",
        "media_references": "mediaReferences",
        "media_context": "mediaContext",
        "max_estimated_capacity_units": "maxEstimatedCapacityUnits",
        "confirm_cost": "confirmCost",
        "token_type": "tokenType",
        "billing_mode": "billingMode",
        "app_source": "appSource",
        "runtime_config": "runtimeConfig",
        "sogni_tools": "sogniTools",
        "sogni_tool_execution": "sogniToolExecution",
    }
    for source, target in renames.items():
        if body.get(source) is not None:
            request[target] = body[source]
    if request.get("tokenType", "sogni") not in ("sogni", "spark"):
        raise bad("'token_type' must be 'sogni' or 'spark'")
    if "confirmCost" in request and not isinstance(request["confirmCost"], bool):
        raise bad("'confirm_cost' must be a boolean")
    if "sogniTools" in request:
        enabled = sogni_tools_enabled(request["sogniTools"])
        if isinstance(enabled, str):
            raise bad(enabled)
    if request.get("sogniToolExecution", True) is not True:
        raise bad(
            "'sogni_tool_execution' may only be true: a run always executes its hosted tool "
            "calls server-side"
        )
    config = request.get("runtimeConfig")
    if config is not None:
        if not isinstance(config, dict):
            raise bad("'runtime_config' must be an object")
        threshold = cast("dict[str, Any]", config).get("jobConfirmationThresholdUsd")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold < 0
        ):
            raise bad("'runtime_config.jobConfirmationThresholdUsd' must be a number >= 0")
    validated = RunRequest.from_wire(request)
    probe: dict[str, Any] = {"jobID": "probe", "model": model, "messages": messages, **sampling}
    probe.update(job_fields(validated))
    try:
        job = msgspec.convert(probe, LLMJobRequest)
    except msgspec.ValidationError as exc:
        raise bad(f"invalid chat request: {exc}") from None
    problem = validate_request(job)
    if problem is not None:
        raise bad(f"invalid chat request: {problem}")
    return validated
