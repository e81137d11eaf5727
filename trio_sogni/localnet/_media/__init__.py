"""Media projects (image, video, audio) in localnet.

* ``_render``: the :class:`MediaWorker` protocol, :class:`RenderSpec` / :class:`RenderedMedia`,
  and the TEST DOUBLE :class:`SimulatedMediaWorker` (real media drawn with Pillow and PyAV,
  the ``media`` extra, imported on first use);
* ``_bridge``: :class:`OpenAIImagesBridgeWorker` (real images from an OpenAI-compatible
  ``/v1/images`` upstream, over h11; no httpx);
* ``_storage``: :class:`MediaStorage` (results and uploads on disk, signed expiring URLs);
* ``_files``: the REST routes ``/v1/{image,media}/{download,upload}Url`` and the signed file
  endpoints;
* ``_catalog``: the media models, their tiers and per-render prices; ``_projects``: ``jobRequest``
  validation and project/render state; ``_manager``: the projects manager (admission, billing,
  renders scheduled with the chat jobs, retries, cancel, recovery); ``_routes``: models list,
  tiers, projects sync, ``/v1/projects/{id}`` and estimates.

Sits beside ``_hosted`` and ``_runs``: may import ``_jobs``, ``_workers``, ``_accounts``,
``_server`` and the shared leaves, never the client and never httpx
(tests/localnet/test_localnet_imports.py).
"""
