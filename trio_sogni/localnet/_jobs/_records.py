"""The record of an ended job, kept by :class:`~._manager.JobManager` for tests to inspect."""

from __future__ import annotations

from dataclasses import dataclass

from ._scheduler import JobOutcome

__all__ = ["JobRecord"]


@dataclass(frozen=True)
class JobRecord:
    """One LLM job that has ended, and how."""

    job_id: str
    app_id: str
    model: str
    outcome: JobOutcome
    worker_name: str | None
