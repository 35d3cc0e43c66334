"""Load YAML files into plain values that remember where each node came from.

Mappings load as `YMap` and sequences as `YList`; both keep the line and
column of every key and item so that a mistake found later can be reported as
`FILE:LINE:COLUMN`. `${VAR}` and `${VAR:-default}` are replaced from the
environment in every scalar before its type is resolved, so `port: ${PORT}`
still loads as an integer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.exceptions import ConfigProblem


class _ConfigLoader(yaml.SafeLoader):
    """A safe loader where only true and false are booleans, as in YAML 1.2.

    YAML 1.1 reads `on`, `off`, `yes` and `no` as booleans, which would turn
    a pipeline's `on:` key into `True`.
    """


_ConfigLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)

_VARIABLE = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}\n]*))?\}"
)
_ESCAPED = "$${"
# `${...}` is hidden behind same-width placeholders while YAML parses, because
# `{` inside a flow mapping such as `{secret: ${X}}` would end the mapping.
_PLACEHOLDER = re.compile("\u2983(\\d+)\u2984")


def _protect_variables(text: str) -> tuple[str, list[str]]:
    originals: list[str] = []

    def hide(match: re.Match[str]) -> str:
        originals.append(match.group(0))
        index = str(len(originals) - 1)
        return "\u2983" + index.rjust(len(match.group(0)) - 2, "0") + "\u2984"

    return _VARIABLE.sub(hide, text), originals


@dataclass(frozen=True)
class Location:
    """A position in a config file, with 1-based line and column.

    `block` is true for a `|` or `>` block scalar, whose text starts on the
    line after its location.
    """

    file: str
    line: int
    column: int
    block: bool = False

    def text_line(self, line_in_text: int) -> Location:
        """Locate line `line_in_text` (1-based) of a multi-line scalar value."""
        first = self.line + 1 if self.block else self.line
        column = self.column if line_in_text == 1 and not self.block else 1
        return Location(self.file, first + line_in_text - 1, column)

    def problem(self, message: str, severity: str = "error") -> ConfigProblem:
        return ConfigProblem(self.file, self.line, self.column, message, severity)


class YMap(dict[str, Any]):
    """A YAML mapping with the location of itself, its keys and its values."""

    location: Location
    key_locations: dict[str, Location]
    value_locations: dict[str, Location]

    def key_at(self, key: str) -> Location:
        return self.key_locations.get(key, self.location)

    def value_at(self, key: str) -> Location:
        return self.value_locations.get(key, self.location)


class YList(list[Any]):
    """A YAML sequence with the location of itself and of each item."""

    location: Location
    item_locations: list[Location]

    def item_at(self, index: int) -> Location:
        if 0 <= index < len(self.item_locations):
            return self.item_locations[index]
        return self.location


@dataclass
class LoadedFile:
    """One YAML file: its root value, its problems and where env defaults were used."""

    path: str
    root: Any
    problems: list[ConfigProblem] = field(default_factory=list)
    defaulted: dict[Location, tuple[str, ...]] = field(default_factory=dict)


class _Interpolator:
    def __init__(self, env: Mapping[str, str], file: str, originals: list[str]) -> None:
        self.env = env
        self.file = file
        self.originals = originals
        self.problems: list[ConfigProblem] = []
        self.defaulted: dict[Location, tuple[str, ...]] = {}

    def substitute(self, text: str, location: Location) -> str:
        if "\u2983" in text:
            text = _PLACEHOLDER.sub(lambda m: self.originals[int(m.group(1))], text)
        if "${" not in text:
            return text

        def replace(match: re.Match[str]) -> str:
            name, default = match.group("name"), match.group("default")
            value = self.env.get(name)
            if value is not None:
                return value
            if default is not None:
                names = self.defaulted.get(location, ())
                self.defaulted[location] = (*names, name)
                return default
            self.problems.append(
                location.problem(
                    f"environment variable {name!r} is not set and has no default;"
                    f" set it or write ${{{name}:-default}}"
                )
            )
            # Keep the reference so that later checks do not report an empty value.
            return match.group(0)

        parts = text.split(_ESCAPED)
        for part in parts:
            broken = _VARIABLE.sub("", part).find("${")
            if broken >= 0:
                fragment = _VARIABLE.sub("", part)[broken : broken + 30]
                self.problems.append(
                    location.problem(
                        f"invalid variable reference {fragment!r}: write ${{NAME}}"
                        " or ${NAME:-default} with a closing brace, or $${ for a"
                        " literal ${"
                    )
                )
        return "${".join(_VARIABLE.sub(replace, part) for part in parts)


def _yaml_hint(problem: str) -> str:
    """Suggest the usual fix for a YAML syntax error."""
    if "\\t" in problem or "tab" in problem:
        return "indent with spaces, because YAML does not allow tabs"
    if "mapping values are not allowed" in problem:
        return "quote a value that contains ': ', or put the key on its own line"
    if "block end" in problem or "indentation" in problem:
        return "check that keys of one mapping start in the same column"
    return "check the indentation and quoting around this position"


def load_yaml_file(
    path: Path, display: str, env: Mapping[str, str] | None = None
) -> LoadedFile:
    """Load one YAML file, collecting syntax and interpolation problems."""
    environment = os.environ if env is None else env
    loaded = LoadedFile(display, None)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        loaded.problems.append(ConfigProblem(display, 1, 1, "file not found"))
        return loaded
    except (OSError, UnicodeDecodeError) as exc:
        loaded.problems.append(ConfigProblem(display, 1, 1, f"cannot read file: {exc}"))
        return loaded

    text, originals = _protect_variables(text)
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"invalid YAML: {exc.problem or exc}"
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        message += "; " + _yaml_hint(str(exc.problem or exc))
        loaded.problems.append(ConfigProblem(display, line, column, message))
        return loaded
    except yaml.YAMLError as exc:
        loaded.problems.append(ConfigProblem(display, 1, 1, f"invalid YAML: {exc}"))
        return loaded
    finally:
        loader.dispose()

    interpolator = _Interpolator(environment, display, originals)
    builder = _Builder(loader, display, interpolator, loaded.problems)
    try:
        loaded.root = builder.build(node) if node is not None else None
    except _TooManyNodes as exc:
        loaded.problems.append(
            exc.location.problem(
                f"the file expands to more than {MAX_NODES} values, most likely through"
                " YAML aliases (*name); write the values out"
            )
        )
        return loaded
    loaded.problems.extend(interpolator.problems)
    loaded.defaulted = interpolator.defaulted
    return loaded


# Aliases let a small file expand into billions of nodes (a "billion laughs"
# document); no real config comes near this many.
MAX_NODES = 200_000


class _TooManyNodes(Exception):
    def __init__(self, location: Location) -> None:
        self.location = location


class _Builder:
    def __init__(
        self,
        loader: _ConfigLoader,
        file: str,
        interpolator: _Interpolator,
        problems: list[ConfigProblem],
    ) -> None:
        self.loader = loader
        self.file = file
        self.interpolator = interpolator
        self.problems = problems
        self.built = 0

    def locate(self, node: yaml.Node) -> Location:
        mark = node.start_mark
        block = isinstance(node, yaml.ScalarNode) and node.style in ("|", ">")
        return Location(self.file, mark.line + 1, mark.column + 1, block)

    def build(self, node: yaml.Node) -> Any:
        self.built += 1
        if self.built > MAX_NODES:
            raise _TooManyNodes(self.locate(node))
        if isinstance(node, yaml.MappingNode):
            return self._build_mapping(node)
        if isinstance(node, yaml.SequenceNode):
            result = YList(self.build(item) for item in node.value)
            result.location = self.locate(node)
            result.item_locations = [self.locate(item) for item in node.value]
            return result
        return self._build_scalar(node)

    def _build_mapping(self, node: yaml.MappingNode) -> YMap:
        result = YMap()
        result.location = self.locate(node)
        result.key_locations = {}
        result.value_locations = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problems.append(
                    self.locate(key_node).problem(
                        "YAML merge keys (<<) are not supported"
                    )
                )
                continue
            key = self._build_scalar(key_node)
            if not isinstance(key, str | int | float | bool) or key is None:
                self.problems.append(
                    self.locate(key_node).problem("keys must be strings")
                )
                continue
            key = str(key)
            if key in result:
                self.problems.append(
                    self.locate(key_node).problem(
                        f"duplicate key {key!r} (first at line"
                        f" {result.key_locations[key].line})"
                    )
                )
                continue
            result[key] = self.build(value_node)
            result.key_locations[key] = self.locate(key_node)
            result.value_locations[key] = self.locate(value_node)
        return result

    def _build_scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return self.build(node)
        location = self.locate(node)
        value = self.interpolator.substitute(node.value, location)
        if value != node.value and node.style is None:
            tag = self.loader.resolve(yaml.ScalarNode, value, (True, False))
            node = yaml.ScalarNode(
                tag, value, node.start_mark, node.end_mark, node.style
            )
        elif value != node.value:
            node = yaml.ScalarNode(
                node.tag, value, node.start_mark, node.end_mark, node.style
            )
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problems.append(location.problem(f"invalid value: {exc}"))
            return None
