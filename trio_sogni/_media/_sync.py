"""Looking a project up on the REST API after a reconnect: ``GET /v1/projects/{id}`` (the
official TypeScript SDK's call), which answers ``{status, data: {project}}`` with the project's
`ProjectSnapshot` (localnet: a finished project of the account), or 404.
"""

from __future__ import annotations

from urllib.parse import quote

import msgspec

from .._errors import APIStatusError, ProtocolError
from .._transport import RestClient
from ..protocol import ProjectSnapshot

__all__ = ["fetch_project"]


class _Data(msgspec.Struct):
    project: ProjectSnapshot


class _Answer(msgspec.Struct):
    data: _Data


async def fetch_project(rest: RestClient, project_id: str) -> ProjectSnapshot | None:
    """The server's snapshot of project ``project_id``, or ``None`` when it does not know it
    (404). A checkpoint; cancellable.

    Raises:
        APIStatusError: another refusal (401, 5xx...).
        ProtocolError: the answer is not ``{data: {project}}``.
        ConnectError, TransportError: the request could not be completed.
    """
    try:
        body = await rest.request("GET", f"/v1/projects/{quote(project_id, safe='')}")
    except APIStatusError as exc:
        if exc.status_code == 404:
            return None
        raise
    try:
        return msgspec.convert(body, _Answer).data.project
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"unexpected /v1/projects answer: {exc}") from None
