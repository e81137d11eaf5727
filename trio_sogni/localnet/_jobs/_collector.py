"""The one place a job's chunks are merged into an assistant message.

Hosted completions (``/v1/chat/completions``) and durable runs both run a job internally and
need its whole output: the text, the tool calls (whose deltas arrive spread over chunks and are
merged by ``index``) and the finish reason. :class:`ChunkCollector` does that merge for both.
"""

from __future__ import annotations

from typing import Any

from ...protocol import ChatCompletionChunk, ServerMessage

__all__ = ["ChunkCollector"]


class ChunkCollector:
    """Accumulates the chunks of one job.

    * text: every chunk's ``content`` in order (:attr:`content`, :attr:`text`);
    * tool calls: one entry per ``index``, ``{"id", "type": "function", "function": {"name",
      "arguments"}}``; a delta's non-empty ``id`` and ``name`` replace the entry's, its
      ``arguments`` are appended (:meth:`tool_calls`, ordered by index);
    * :attr:`finish_reason`: the last non-empty finish reason seen, or ``None``.
    """

    def __init__(self) -> None:
        self.content: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None

    def add(self, chunk: ChatCompletionChunk) -> None:
        """Merge one chunk."""
        if chunk.content:
            self.content.append(chunk.content)
        for delta in chunk.tool_calls or ():
            entry = self._calls.setdefault(
                delta.index,
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if delta.id:
                entry["id"] = delta.id
            if delta.function is not None:
                if delta.function.name:
                    entry["function"]["name"] = delta.function.name
                entry["function"]["arguments"] += delta.function.arguments or ""
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason

    async def on_message(self, message: ServerMessage) -> None:
        """An ``on_message`` callback for :meth:`JobManager.run_internal`: merges chunks and
        ignores every other message."""
        if isinstance(message, ChatCompletionChunk):
            self.add(message)

    @property
    def text(self) -> str:
        """The text so far."""
        return "".join(self.content)

    def tool_calls(self) -> list[dict[str, Any]]:
        """The tool calls so far, ordered by index (the entries themselves, not copies)."""
        return [call for _, call in sorted(self._calls.items())]

    def message(self) -> dict[str, Any]:
        """The OpenAI-style assistant message: ``content`` is ``None`` only when there is no
        text but there are tool calls; ``tool_calls`` is present only when there are some."""
        text = self.text
        out: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not self._calls else None,
        }
        if self._calls:
            out["tool_calls"] = self.tool_calls()
        return out
