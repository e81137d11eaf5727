"""Hosted creative tools: their definitions (``sogni_tools``) and their server-side execution
(``sogni_tool_execution``) as media projects; see docs/localnet.md, "Hosted creative tools"."""
