"""The state that every section compiler shares while a config directory compiles."""

from __future__ import annotations

import re

from gateway.config.checks import Checker
from gateway.config.schemas import SchemaRegistry
from gateway.config.source import Location, YList, YMap

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SectionCompiler:
    """Hold the problems found so far and the places where env defaults were used."""

    check: Checker
    schemas: SchemaRegistry
    defaulted: dict[Location, tuple[str, ...]]

    def defaults_used(self, node: YMap, *keys: str) -> tuple[str, ...]:
        names: list[str] = []
        for key in keys:
            if key not in node:
                continue
            names.extend(self.defaulted.get(node.value_at(key), ()))
            value = node[key]
            if isinstance(value, YList):
                for index in range(len(value)):
                    names.extend(self.defaulted.get(value.item_at(index), ()))
        return tuple(names)

    def _valid_name(self, name: str, location: Location, what: str) -> bool:
        if _NAME.match(name):
            return True
        self.check.error(
            location,
            f"{what} name {name!r} is invalid; use letters, digits, '_', '-' and '.'",
        )
        return False
