"""Typed reads of a JSON object's fields, each failure one SchemaError line: ``<file>: field '<path>': problem``.

The profile schema (``pptune.profile.schema``) reads every field through it, so that a malformed file names the
file and the field instead of raising deep in the cost model.
"""

from __future__ import annotations

import math
from typing import Any

from pptune.errors import SchemaError


class FieldReader:
    """Reads typed fields from a dict, raising SchemaError with '<file>: <field path>: problem'."""

    def __init__(self, data: Any, origin: str, where: str) -> None:
        if not isinstance(data, dict):
            raise SchemaError(f"{origin}: {where or 'top level'}: expected an object, got {type(data).__name__}")
        self.data, self.origin, self.where = data, origin, where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, problem: str) -> SchemaError:
        return SchemaError(f"{self.origin}: field '{self._name(key)}': {problem}")

    def get(self, key: str, types: type | tuple[type, ...], *, required: bool = True, default: Any = None) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.fail(key, "missing")
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.fail(key, f"expected {_tname(types)}, got {value!r}")
        if not isinstance(value, types):
            raise self.fail(key, f"expected {_tname(types)}, got {type(value).__name__} {value!r}")
        return value

    def number(self, key: str, *, required: bool = True, default: float | None = None, positive: bool = False,
               maximum: float | None = None) -> Any:
        value = self.get(key, (int, float), required=required, default=default)
        if value is None:
            return value
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise self.fail(key, f"must be {'positive' if positive else 'non-negative'} and finite, got {value!r}")
        if maximum is not None and value > maximum:
            raise self.fail(key, f"{value!r} is above the plausible bound {maximum:g} (see pptune/profile/schema.py)")
        return value

    def integer(self, key: str, *, required: bool = True, default: int | None = None, positive: bool = False,
                maximum: int | float | None = None) -> Any:
        value = self.get(key, int, required=required, default=default)
        if value is not None and (value < 0 or (positive and value == 0)):
            raise self.fail(key, f"must be {'positive' if positive else 'non-negative'}, got {value!r}")
        if value is not None and maximum is not None and value > maximum:
            raise self.fail(key, f"{value!r} is above the plausible bound {maximum:,} (see pptune/profile/schema.py "
                                 "and pptune/limits.py)")
        return value

    def choice(self, key: str, options: tuple[str, ...], **kw: Any) -> Any:
        value = self.get(key, str, **kw)
        if value is not None and value not in options:
            raise self.fail(key, f"must be one of {list(options)}, got {value!r}")
        return value

    def child(self, key: str, index: int | None = None) -> FieldReader:
        name = f"{key}[{index}]" if index is not None else key
        data = self.data[key][index] if index is not None else self.data[key]
        return FieldReader(data, self.origin, self._name(name))


def _tname(types: type | tuple[type, ...]) -> str:
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in ts)
