"""The one error type for bad user input."""

from __future__ import annotations


class ConfigError(Exception):
    """Bad input, named precisely: where it came from, which key, what value, which rule.

    Specs raise it from ``__post_init__`` with the field name as ``key``; the loader catches it and
    adds the source file and the full dotted key. The CLI prints ``str(err)`` and exits with status 2.
    """

    def __init__(self, rule: str, *, key: str = "", value: object = None, source: str = "",
                 has_value: bool | None = None):
        self.rule, self.key, self.value, self.source = rule, key, value, source
        self.has_value = (value is not None) if has_value is None else has_value
        super().__init__(str(self))

    def located(self, source: str, prefix: str = "") -> ConfigError:
        """The same error, with the source and the enclosing key path filled in."""
        key = f"{prefix}.{self.key}" if prefix and self.key else (prefix or self.key)
        return ConfigError(self.rule, key=key, value=self.value, source=self.source or source,
                           has_value=self.has_value)

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        what = self.key if self.key.isprintable() else repr(self.key)
        if self.has_value:
            what = f"{what} = {self.value!r}" if what else repr(self.value)
        return f"{where}{what}: {self.rule}" if what else f"{where}{self.rule}"


def check(ok: bool, key: str, value: object, rule: str) -> None:
    """Raise ConfigError(rule) for ``key`` unless ``ok``. For user input, where ``assert`` is wrong."""
    if not ok:
        raise ConfigError(rule, key=key, value=value, has_value=True)
