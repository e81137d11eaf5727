"""Hosted REST features that run on jobs: OpenAI-style completions, composition tools, cost
estimates, and the price-file parser.

* ``_completions``: :func:`hosted_routes` (``/v1/chat/completions`` and the composition tool
  endpoint);
* ``_composition``: the bundled composition tools (prompts and JSON schemas);
* ``_estimates``: :func:`estimate_routes` (the LLM cost estimate endpoint);
* ``_prices``: :func:`parse_prices` / :func:`load_prices` (a prices JSON file into a
  :class:`~trio_sogni.localnet.Pricing`; the pricing types themselves are configuration and live
  in ``localnet._config``, shared by billing, estimates and runs).

Imports ``_server``, ``_jobs`` and the shared leaves; never ``_runs``.
"""
