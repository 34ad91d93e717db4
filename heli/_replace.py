"""The ``replace()`` every frozen IR dataclass shares (graph IR and kernel IR)."""

from __future__ import annotations

import dataclasses
from typing import Any


class Replaceable:
    """Mixin for frozen dataclasses: ``replace(**changes)`` returns a copy and
    rejects field names that do not exist (a typo must not pass silently)."""

    def replace(self, **changes: Any):
        known = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(
                f"{type(self).__name__}.replace() got unknown field(s) {unknown!r}; "
                f"the fields are {sorted(known)!r}."
            )
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
