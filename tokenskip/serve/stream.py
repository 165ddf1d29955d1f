"""What a stream does per piece of text, kept cheap: collect it on the event loop, write it as an SSE event.

:class:`Pieces` gathers the text increments of a request's choices. The vLLM engine produces them on the
event loop itself, where they are appended at once; only text from other threads (the hf worker, a method
on a request thread) crosses over with ``call_soon_threadsafe``. The stream wakes once for whatever has
arrived, not once per piece.

:class:`ChunkWriter` writes the content chunks from a template: the chunk's JSON (from the pydantic
:class:`~tokenskip.serve.protocol.StreamChunk`, once per choice index) around the JSON string of the text,
byte-identical to dumping a model per token. Other chunks (role, finish, usage) are rare and use the models.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

from tokenskip.serve.protocol import ChatChunkChoice, CompletionChoice, Delta, StreamChunk

_MARK = "tokenskip-text-7f3a9c"


def sse(chunk: Any) -> str:
    body = (
        chunk.model_dump_json()
        if hasattr(chunk, "model_dump_json")
        else json.dumps(chunk, ensure_ascii=False)
    )
    return f"data: {body}\n\n"


class Pieces:
    """``(choice index, text)`` pieces of one stream, in the order they were produced."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.get_ident()  # the event loop's thread (made on the loop)
        self.items: list[tuple[int, str]] = []
        self.ready = asyncio.Event()

    def sink(self, i: int) -> Callable[[str], None]:
        """The ``on_text`` of choice ``i`` (any thread)."""

        def put(text: str) -> None:
            if threading.get_ident() == self.thread:
                self.items.append((i, text))
                self.ready.set()
            else:
                self.loop.call_soon_threadsafe(self._put, i, text)

        return put

    def _put(self, i: int, text: str) -> None:
        self.items.append((i, text))
        self.ready.set()

    def wake(self, _: Any = None) -> None:
        """Wake :meth:`wait` (a done callback of the choices' tasks)."""
        self.ready.set()

    async def wait(self) -> None:
        """Until a piece arrives or :meth:`wake` is called (at once if that happened since the last wait)."""
        await self.ready.wait()
        self.ready.clear()

    def take(self) -> list[tuple[int, str]]:
        items, self.items = self.items, []
        return items


class ChunkWriter:
    """The SSE events of one stream (``endpoint``: ``chat`` or ``completion``)."""

    def __init__(self, endpoint: str, rid: str, created: int, model_name: str) -> None:
        self.endpoint, self.rid, self.created, self.model_name = endpoint, rid, created, model_name
        self.object = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
        self._templates: dict[int, tuple[str, str] | None] = {}

    def event(self, choices: list[Any], **fields: Any) -> str:
        chunk = StreamChunk(
            id=self.rid, object=self.object, created=self.created, model=self.model_name, choices=choices,
            **fields,
        )  # fmt: skip
        return sse(chunk)

    def role(self) -> str:
        """A chat stream's first event: the assistant role, empty content."""
        return self.event([ChatChunkChoice(index=0, delta=Delta(role="assistant", content=""))])

    def chunk(self, i: int, text: str, finish: str | None = None, info: dict | None = None) -> str:
        """A chunk built from the models: text, or (with ``finish``) the choice's end and its info."""
        choice: Any
        if self.endpoint == "chat":
            delta = Delta(content=text) if finish is None else Delta()
            choice = ChatChunkChoice(index=i, delta=delta, finish_reason=finish)
        else:
            choice = CompletionChoice(index=i, text=text, finish_reason=finish)
        return self.event([choice], tokenskip=info)

    def text(self, i: int, text: str) -> str:
        """The content chunk of ``text`` for choice ``i``: ``chunk(i, text)``, written from a template."""
        if i not in self._templates:
            parts = self.chunk(i, _MARK).split(json.dumps(_MARK))
            self._templates[i] = (parts[0], parts[1]) if len(parts) == 2 else None
        template = self._templates[i]
        if template is None:  # the marker also in the id or model name: no template
            return self.chunk(i, text)
        return template[0] + json.dumps(text, ensure_ascii=False) + template[1]
