"""How a rank fails, shared by the worker that fails and the launcher that reports it.

Injected faults for reliability tests: ``rank=1,step=50,kind=crash|hang|slow[,factor=3]``. crash: the
rank exits at once with CRASH_EXIT_CODE when it reaches ``step``; hang: it sleeps forever; slow: from
``step`` on each of its forward/backward passes lasts ``factor`` times as long. The launcher parses,
the worker (``real/worker.py``) injects.

A rank whose loss or parameters stop being finite exits with DIVERGED_EXIT_CODE after writing status
"diverged" into its heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

FAULT_KINDS = ("crash", "hang", "slow")
CRASH_EXIT_CODE = 13
DIVERGED_EXIT_CODE = 14


@dataclass(frozen=True)
class FaultSpec:
    rank: int
    step: int
    kind: str
    factor: float = 3.0

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        fields: dict[str, str] = {}
        for part in (text or "").split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError("expected rank=R,step=S,kind=crash|hang|slow[,factor=F]",
                                  key="--inject-fault", value=text, source="command line")
            fields[key.strip()] = value.strip()
        unknown = sorted(set(fields) - {"rank", "step", "kind", "factor"})
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r}; expected rank, step, kind, factor",
                              key="--inject-fault", value=text, source="command line")
        try:
            spec = cls(rank=int(fields["rank"]), step=int(fields["step"]), kind=fields["kind"],
                       factor=float(fields.get("factor", 3.0)))
        except KeyError as missing:
            raise ConfigError(f"missing {missing.args[0]}=", key="--inject-fault", value=text,
                              source="command line") from None
        except ValueError:
            raise ConfigError("rank and step must be integers, factor a number", key="--inject-fault",
                              value=text, source="command line") from None
        if spec.kind not in FAULT_KINDS:
            raise ConfigError(f"kind must be one of {', '.join(FAULT_KINDS)}", key="--inject-fault",
                              value=text, source="command line")
        if spec.rank < 0 or spec.step < 0:
            raise ConfigError("rank and step must be >= 0", key="--inject-fault", value=text,
                              source="command line")
        if spec.kind == "slow" and spec.factor <= 1:
            raise ConfigError("factor must be > 1", key="--inject-fault", value=text, source="command line")
        return spec

    def to_text(self) -> str:
        text = f"rank={self.rank},step={self.step},kind={self.kind}"
        return text + (f",factor={self.factor:g}" if self.kind == "slow" else "")
