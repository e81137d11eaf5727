"""The worker layer: what runs a job's output.

* ``_base``: the :class:`Worker` protocol, :class:`JobContext` (what a worker may do with a job),
  :class:`PreparedChunk` and :class:`WorkerIdentity` (name, models, capacity);
* ``_doubles``: the test doubles :class:`SimulatedWorker` (scripted text) and
  :class:`FirehoseWorker` (pre-encoded chunks as fast as the socket takes them);
* ``_script``: script steps, compilation and :func:`expected_output`;
* ``_llama``: :class:`LlamaCppWorker` (real inference; llama-cpp-python imported on first use);
* ``_bridge``: :class:`OpenAIBridgeWorker` (needs httpx, so nothing imports it eagerly).

Imports :mod:`trio_sogni.protocol`, ``_config``, ``_jsonschema`` and ``_server`` (frame
encoding) only; never ``_jobs`` or anything above it.
"""
