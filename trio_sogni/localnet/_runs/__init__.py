"""Durable chat runs (``/v1/chat/runs``).

* ``_state``: run state as msgspec Structs (the validated request, the in-memory run and
  stream records);
* ``_validation``: the create body's validation and the job fields it yields;
* ``_sse``: wire events and SSE framing;
* ``_executor``: the LLM rounds and hosted tool calls of one run;
* ``_manager``: :class:`RunManager` (create, get, cancel, cost confirmation, event streams);
* ``_store``: :class:`RunStore` (runs and events in the accounts database) and the
  :class:`RunCheckpoint` Struct it persists;
* ``_tools``: the hosted tool test doubles;
* ``_routes``: :func:`run_routes`.

Imports ``_server``, ``_jobs``, ``_accounts`` (the ledger) and the shared leaves.
"""
