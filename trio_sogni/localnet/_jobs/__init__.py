"""The jobs layer: LLM job lifecycle between sockets and workers.

* ``_session``: the sans-IO per-socket state machine (client frames in, effects out). It decodes
  and validates Sogni protocol messages, so it is domain code and lives here, not in ``_server``;
* ``_scheduler``: per-model queues, worker slots and :class:`Job`;
* ``_manager``: :class:`JobManager` (submit, abort, rebind, billing holds, job tasks);
* ``_collector``: :class:`ChunkCollector`, the one merge of a job's chunks (text and tool-call
  deltas) into an assistant message, used by hosted completions and runs;
* ``_records``: :class:`JobRecord`.

Imports ``_server``, ``_workers``, ``_accounts`` (the ledger, for billing holds) and the shared
leaves; never ``_hosted`` or ``_runs``.
"""
