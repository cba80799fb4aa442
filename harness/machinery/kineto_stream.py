"""Stream the events of a PyTorch profiler (Kineto) trace without loading the whole file.

A Kineto trace is one JSON object: a few small keys (``deviceProperties``, ``distributedInfo``, ...) and
``traceEvents``, a list that holds almost all of its bytes. ``json.load`` of a 100 MB trace builds every
event as a dict at once (several GB); here the top-level object is walked key by key and the events are
decoded one at a time with ``json.JSONDecoder.raw_decode`` (the C scanner) from a sliding text buffer, so
memory stays at the buffer plus what the caller keeps. ``benchmarks/bench_trace.py`` measures it.

HolisticTraceAnalysis (PyPI ``HolisticTraceAnalysis``) was considered: version 0.5.0 resolves beside torch
2.13, but ``pip install --dry-run`` lists about 70 packages it would add (jupyterlab, plotly, pydot, ...),
it loads every trace whole into pandas, and what is needed here is a handful of event kinds.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from ...core.errors import ConfigError

CHUNK_CHARS = 1 << 20
_WS = " \t\r\n"


class _Buffer:
    """A window on the file's text: ``text[pos:]`` is what is not consumed yet."""

    def __init__(self, path: Path):
        self.path = path
        opener = gzip.open if path.suffix == ".gz" else open
        self.file = opener(path, "rt", encoding="utf-8")
        self.text, self.pos, self.eof = "", 0, False

    def fill(self) -> bool:
        """Read one more chunk; False at the end of the file."""
        if self.eof:
            return False
        try:
            chunk = self.file.read(CHUNK_CHARS)
        except (OSError, EOFError, UnicodeDecodeError) as err:  # a cut gzip stream, binary junk
            raise self.error(f"cannot be read ({err.__class__.__name__}: {err})") from None
        self.text = self.text[self.pos:] + chunk
        self.pos = 0
        self.eof = not chunk
        return bool(chunk)

    def skip_ws(self) -> str:
        """The next non-blank character (not consumed); '' at the end of the file."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.fill():
                return ""

    def expect(self, chars: str, what: str) -> str:
        c = self.skip_ws()
        if not c:
            raise self.error("is truncated: the JSON ends early")
        if c not in chars:
            raise self.error(f"is not valid JSON: expected {what}, found {c!r}")
        self.pos += 1
        return c

    def value(self, decoder: json.JSONDecoder) -> object:
        """Decode one JSON value, reading more text while it is cut by the buffer's end."""
        self.skip_ws()
        while True:
            try:
                obj, end = decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as err:
                if self.fill():
                    continue
                cut = err.pos >= len(self.text) - 1 or err.msg.startswith("Unterminated")
                raise self.error("is truncated: the JSON ends early" if cut
                                 else f"is not valid JSON ({err.msg})") from None
            if end == len(self.text) and not self.eof and not isinstance(obj, dict | list | str):
                self.fill()  # a number cut at the buffer's end: decode it again whole
                continue
            self.pos = end
            return obj

    def error(self, rule: str) -> ConfigError:
        return ConfigError(rule, source=str(self.path))

    def close(self) -> None:
        self.file.close()


def read(path: Path, on_event: Callable[[dict], None]) -> dict:
    """Call ``on_event`` with every event of ``traceEvents`` in file order; return the other top-level keys.

    Raises ConfigError (naming the file) when the file is not JSON, not an object, truncated, or has no
    ``traceEvents`` list."""
    buf = _Buffer(Path(path))
    decoder = json.JSONDecoder()
    meta: dict = {}
    seen_events = False
    try:
        first = buf.skip_ws()
        if first != "{":
            raise buf.error("is not a profiler trace: not a JSON object" if first else "is empty")
        buf.pos += 1
        while True:
            if buf.skip_ws() == "}":
                buf.pos += 1
                break
            key = buf.value(decoder)
            buf.expect(":", "':'")
            if key == "traceEvents":
                for event in _events(buf, decoder):
                    on_event(event)
                seen_events = True
            else:
                meta[key] = buf.value(decoder)
            if buf.expect(",}", "',' or '}'") == "}":
                break
    finally:
        buf.close()
    if not seen_events:
        raise ConfigError("is not a profiler trace: it has no traceEvents list", source=str(path))
    return meta


def _events(buf: _Buffer, decoder: json.JSONDecoder) -> Iterator[dict]:
    buf.expect("[", "'[' after traceEvents")
    if buf.skip_ws() == "]":
        buf.pos += 1
        return
    while True:
        event = buf.value(decoder)
        if isinstance(event, dict):
            yield event
        if buf.expect(",]", "',' or ']' between events") == "]":
            return
