"""The synchronous composition tools localnet runs as LLM jobs: ``enhance_prompt``,
``compose_script``, ``compose_lyrics``, ``compose_instrumental``.

Each tool has (in ``_data/``):

* its prompt contract and its *argument* JSON Schema, copied unchanged from
  ``@sogni-ai/sogni-protocol`` 1.0.0-alpha.45 (``prompts/tools/<tool>.json``,
  ``schemas/tools/<tool>.schema.json``; ISC licence, © Sogni AI);
* a *result* schema that is localnet's own (``_data/tool-results/<tool>.json``): sogni-protocol
  ships argument schemas only.

A tool call becomes one LLM job: a system message with the tool's ``baseDescription``, its
parameter docs and the instruction to answer with one JSON object matching the result schema; a
user message with the arguments as JSON; and ``response_format: {type: "json_schema",
json_schema: {name: "<tool>_result", schema: <result schema>, strict: true}}``. The job's output
is then parsed and validated against the result schema (:mod:`trio_sogni.localnet._jsonschema`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Final

from ...protocol import ChatMessage, JSONSchemaFormat, ResponseFormatJSONSchema
from .._jsonschema import check_schema, validate

__all__ = ["COMPOSITION_TOOLS", "CompositionTool", "composition_tool"]

COMPOSITION_TOOLS: Final = (
    "enhance_prompt",
    "compose_script",
    "compose_lyrics",
    "compose_instrumental",
)
"""The tools ``POST /v1/creative-agent/tools/execute`` runs."""


def _read(path: str) -> Any:
    text = resources.files("trio_sogni.localnet").joinpath(f"_data/{path}").read_text("utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class CompositionTool:
    """One composition tool: its prompt and its argument and result schemas."""

    name: str
    description: str
    parameter_docs: Mapping[str, str] = field(repr=False)
    arguments_schema: Mapping[str, Any] = field(repr=False)
    result_schema: Mapping[str, Any] = field(repr=False)

    def check_arguments(self, arguments: object) -> list[str]:
        """The argument schema's complaints about ``arguments`` (empty: acceptable)."""
        return validate(arguments, self.arguments_schema, "$.arguments")

    def check_result(self, result: object) -> list[str]:
        """The result schema's complaints about ``result`` (empty: acceptable)."""
        return validate(result, self.result_schema, "$")

    def messages(self, arguments: Mapping[str, Any]) -> list[ChatMessage]:
        """The job's messages for a call with ``arguments``."""
        docs = "\n".join(f"- {name}: {doc}" for name, doc in self.parameter_docs.items())
        system = (
            f"You are the {self.name} tool.\n\n{self.description}\n\nParameters:\n{docs}\n\n"
            "Answer with exactly one JSON object that validates against the JSON Schema given as "
            "the response format, and nothing else."
        )
        user = json.dumps(dict(arguments), ensure_ascii=False, sort_keys=True)
        return [ChatMessage(role="system", content=system), ChatMessage(role="user", content=user)]

    def response_format(self) -> ResponseFormatJSONSchema:
        """The job's ``response_format``: the result schema, strict."""
        return ResponseFormatJSONSchema(
            json_schema=JSONSchemaFormat(
                name=f"{self.name}_result",
                schema=dict(self.result_schema),
                strict=True,
                description=f"The result of the {self.name} tool.",
            )
        )


@cache
def composition_tool(name: str) -> CompositionTool | None:
    """The tool called ``name``, or ``None`` when localnet does not run it."""
    if name not in COMPOSITION_TOOLS:
        return None
    prompt = _read(f"sogni-protocol/prompts/{name}.json")
    arguments: dict[str, Any] = _read(f"sogni-protocol/schemas/{name}.schema.json")
    result: dict[str, Any] = _read(f"tool-results/{name}.json")
    check_schema(arguments)
    check_schema(result)
    return CompositionTool(
        name=name,
        description=prompt["baseDescription"],
        parameter_docs=dict(prompt.get("parameterDocs", {})),
        arguments_schema=arguments,
        result_schema=result,
    )
