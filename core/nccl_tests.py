"""Read the plain text output of NVIDIA's nccl-tests (``all_reduce_perf``, ``reduce_scatter_perf``,
``all_gather_perf``): the header (one ``#  Rank r Group g Pid p on HOST device d [bus] NAME`` line per rank),
the result rows (size, count, type, redop, root, then time, algbw, busbw and #wrong out-of-place and again
in-place) and the ``# Avg bus bandwidth`` line.

Versions differ: older ones print no ``Group`` and no ``root`` column and call ``#wrong`` ``error`` (a
max-error float, or ``N/A`` without validation); newer ones print ``# nccl-tests version`` and
``# Collective test starting: NAME`` lines. Launchers add noise (library warnings, NCCL INFO lines
interleaved with the rows, Open MPI's ``--tag-output`` prefix ``[1,0]<stdout>:``). A file may hold several
runs, each starting at its ``# nThread`` line.

Definitions (nccl-tests ``doc/PERFORMANCE.md``): algbw = size / time; busbw = algbw · 2(n-1)/n for
all-reduce and algbw · (n-1)/n for reduce-scatter and all-gather, whose ``size`` is the whole buffer of
n pieces. No torch: the CLI reads these before any heavy import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .io import read_input

COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather")

_RANK = re.compile(r"^#\s*Rank\s+(\d+)\s+(?:Group\s+\d+\s+)?Pid\s+\d+\s+on\s+(\S+)\s+device\s+(\d+)\s+"
                   r"\[[^\]]*\]\s*(.*?)\s*$")
_STARTING = re.compile(r"^#\s*Collective test starting:\s*(\w+?)(?:_perf\w*)?\s*$")
_AVG = re.compile(r"^#\s*Avg bus bandwidth\s*:\s*([0-9.eE+-]+)")
_UNITS = {"(us)": 1e-6, "(ms)": 1e-3}
_TAG = re.compile(r"^\[\d+,\d+\]<std(?:out|err)>:")


@dataclass(frozen=True)
class Rank:
    rank: int
    host: str
    device: int
    name: str


@dataclass(frozen=True)
class Row:
    """One message size: out-of-place and in-place time in seconds and bus bandwidth in GB/s."""

    size_bytes: int
    dtype: str
    redop: str
    time_s: float
    busbw_gbytes_s: float
    in_place_time_s: float


@dataclass(frozen=True)
class Run:
    """One test in a file: the ranks its header lists and its rows."""

    collective: str
    ranks: tuple[Rank, ...]
    rows: tuple[Row, ...]
    avg_busbw_gbytes_s: float | None

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.host for r in self.ranks))

    @property
    def nodes(self) -> int:
        return len(self.hosts)

    @property
    def gpus_per_node(self) -> int:
        return len(self.ranks) // self.nodes

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.name for r in self.ranks))


def read(path: str | Path) -> list[Run]:
    """Every run in the file; ConfigError (naming the file and what is missing) when it is not nccl-tests
    output, holds no rows, or its header contradicts itself."""
    text = read_input(path, what="nccl-tests output").decode(errors="replace")  # regular, at most 16 MiB
    try:
        return parse(text)
    except ConfigError as err:
        raise ConfigError(err.rule, source=str(path)) from None


def parse(text: str) -> list[Run]:
    chunks = _split(text.splitlines())
    if not chunks:
        has_table = any(_is_table_header(line.lstrip("#").split()) for line in text.splitlines())
        what = "its header is missing" if has_table else "not nccl-tests output"
        raise ConfigError(f"{what}: no '# nThread ... nGpus' line and no '#  Rank N ... on HOST device D' lines "
                          "(which GPUs ran)")
    return [_run(lines) for lines in chunks]


def _split(lines: list[str]) -> list[list[str]]:
    """Lines of each run: from one ``# nThread`` line (with the ``Collective test starting`` line just
    before it) to the next."""
    lines = [_TAG.sub("", line).strip() for line in lines]
    starts = [i for i, line in enumerate(lines) if re.match(r"^#\s*nThread\s+\d+", line)]
    starts = [i - 1 if i > 0 and _STARTING.match(lines[i - 1]) else i for i in starts]
    if not starts:
        return []
    return [lines[a:b] for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]


def _run(lines: list[str]) -> Run:
    ranks = _ranks(lines)
    columns, scale, at = _columns(lines)
    rows = tuple(row for line in lines[at:] if (row := _row(line, columns, scale)) is not None)
    if not rows:
        raise ConfigError("no result rows (size, count, type, ..., time, algbw, busbw) under the table header")
    avg = next((float(m.group(1)) for line in lines if (m := _AVG.match(line))), None)
    return Run(_collective(lines, rows, len(ranks)), ranks, rows, avg)


def _ranks(lines: list[str]) -> tuple[Rank, ...]:
    ranks = [Rank(int(m.group(1)), m.group(2), int(m.group(3)), m.group(4))
             for line in lines if (m := _RANK.match(line))]
    if not ranks:
        raise ConfigError("no '#  Rank N ... on HOST device D' lines: the header does not say which GPUs ran")
    numbers = sorted(r.rank for r in ranks)
    if numbers != list(range(len(ranks))):
        twice = sorted({n for n in numbers if numbers.count(n) > 1})
        what = f"rank {twice[0]} is listed twice" if twice else f"ranks {numbers} are not 0..{len(ranks) - 1}"
        raise ConfigError(f"inconsistent header: {what} (several separate runs printed together?)")
    per_host = {h: sum(r.host == h for r in ranks) for h in dict.fromkeys(r.host for r in ranks)}
    if len(set(per_host.values())) > 1:
        raise ConfigError(f"inconsistent header: nodes hold different numbers of GPUs ({per_host})")
    return tuple(sorted(ranks, key=lambda r: r.rank))


def _columns(lines: list[str]) -> tuple[list[str], float, int]:
    """Column names of the out-of-place half, the time unit, and the line after the table header."""
    for i, line in enumerate(lines):
        words = line.lstrip("#").split()
        if _is_table_header(words):
            names = [("wrong" if w in ("#wrong", "error") else w) for w in words]
            units = lines[i + 1] if i + 1 < len(lines) else ""
            scale = next((v for k, v in _UNITS.items() if k in units), 1e-6)
            return names, scale, i + 1
    raise ConfigError("no table header ('#  size  count  type ... time  algbw  busbw')")


def _is_table_header(words: list[str]) -> bool:
    return words[:2] == ["size", "count"] and "time" in words


def _row(line: str, columns: list[str], scale: float) -> Row | None:
    """A result row, or None for any other line (log noise between rows)."""
    words = line.split()
    if len(words) != len(columns) or not words[0].isdigit():
        return None
    first: dict[str, str] = {}
    for name, word in zip(columns, words, strict=True):
        first.setdefault(name, word)  # the out-of-place half; the in-place time is the last "time" column
    in_place = words[len(columns) - columns[::-1].index("time") - 1]
    try:
        return Row(int(first["size"]), first.get("type", ""), first.get("redop", ""), float(first["time"]) * scale,
                   float(first["busbw"]), float(in_place) * scale)
    except (KeyError, ValueError):
        return None


def _collective(lines: list[str], rows: tuple[Row, ...], ranks: int) -> str:
    """The ``Collective test starting`` line, else the busbw/algbw ratio of the largest row (2(n-1)/n for
    all-reduce, (n-1)/n for the others) and the redop (``none`` for all-gather)."""
    for line in lines:
        if m := _STARTING.match(line):
            name = m.group(1)
            if name not in COLLECTIVES:
                raise ConfigError(f"{name}_perf is not read; give all_reduce_perf, reduce_scatter_perf or "
                                  "all_gather_perf output")
            return name
    big = max(rows, key=lambda r: r.busbw_gbytes_s)
    algbw = big.size_bytes / big.time_s / 1e9
    if ranks < 2 or big.busbw_gbytes_s < 0.1:  # busbw is printed to 0.01 GB/s: too coarse below 0.1
        raise ConfigError("cannot tell which collective ran: no '# Collective test starting' line and no row "
                          "with a bus bandwidth of 0.1 GB/s or more")
    ratio = big.busbw_gbytes_s / algbw * ranks / (ranks - 1)  # 2 for all-reduce, 1 for the others
    if ratio > 1.5:
        return "all_reduce"
    return "all_gather" if big.redop == "none" else "reduce_scatter"
