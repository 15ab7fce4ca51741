"""A small, defensive Server-Sent Events reader for OpenAI-style streams.

Yields one `(event, data)` pair per event: `event` is the `event:` field ("message" when absent)
and `data` is its `data:` lines joined by newlines. Comments (`:` lines, used as keep-alives),
`id:` and `retry:` fields are ignored; an event still being built when the stream ends is
dispatched (servers that forget the final blank line). It does not parse JSON or recognise
`[DONE]`: that is the caller's protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

__all__ = ["iter_sse"]


async def iter_sse(lines: AsyncIterable[str]) -> AsyncIterator[tuple[str, str]]:
    event, data = "", []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:
        yield event or "message", "\n".join(data)
