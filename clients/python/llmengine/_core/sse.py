"""Server-sent events, decoded without I/O: bytes go in as they arrive, event payloads come out.

Chunks may split anywhere — inside a UTF-8 character, a line, or a ``\\r\\n`` pair — so the decoder keeps what it
cannot finish yet. Lines that are not ``data:`` fields (comments such as ``: ping``, ``event:``, ``id:``,
``retry:``) are skipped; the data lines of one event are joined with newlines and handed out at the blank line
that ends it, or at the end of the stream if the server left that line out.
"""

from __future__ import annotations

import codecs
import re

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class SSEDecoder:
    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial_line = ""
        self._data_lines: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event completed by ``chunk``, in order."""
        return self._consume(self._utf8.decode(chunk), final=False)

    def flush(self) -> list[str]:
        """Call once at end of stream: whatever event was still open counts as complete."""
        events = self._consume(self._utf8.decode(b"", final=True), final=True)
        if self._data_lines:
            events.append(self._dispatch())
        return events

    def _consume(self, text: str, *, final: bool) -> list[str]:
        text = self._partial_line + text
        # A trailing "\r" may be the first half of "\r\n": wait for the next chunk before ending the line.
        held_back = ""
        if text.endswith("\r") and not final:
            text, held_back = text[:-1], "\r"
        *lines, rest = _LINE_BREAK.split(text)
        if final and rest:
            lines.append(rest)
            rest = ""
        self._partial_line = rest + held_back
        events: list[str] = []
        for line in lines:
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        return events

    def _process_line(self, line: str) -> str | None:
        if not line:
            return self._dispatch() if self._data_lines else None
        if line.startswith("data:"):
            value = line[len("data:") :]
            self._data_lines.append(value[1:] if value.startswith(" ") else value)
        return None

    def _dispatch(self) -> str:
        data = "\n".join(self._data_lines)
        self._data_lines = []
        return data
