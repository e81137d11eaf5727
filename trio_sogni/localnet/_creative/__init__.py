"""Server-side execution of hosted creative tool calls (``sogni_tool_execution``) as media
projects, for hosted completions and durable runs; see docs/localnet.md, "Hosted creative
tools". The tools' definitions and their injection (``sogni_tools``) live with job admission,
in ``_jobs/_hostedtools``."""
