"""Compile Jinja templates and expressions in one sandboxed environment.

Every `when:` condition is an expression, every event type, idempotency key
and URL is a text template, and every `data:`, `json:` or outgoing `template:`
is a tree: YAML mappings and lists whose string leaves are templates. A leaf
that is exactly one `{{ ... }}` keeps the native value of its expression, so
`count: "{{ payload.count }}"` stays a number and `data: "{{ payload }}"`
copies an object whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


def _to_json(value: Any) -> str:
    return json.dumps(value, default=_jsonable, ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Undefined):
        return None
    return str(value)


def _create_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=ChainableUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["tojson"] = _to_json
    env.filters["json"] = _to_json
    return env


ENVIRONMENT = _create_environment()


class TemplateCompileError(ValueError):
    """Raise when a template or expression does not compile."""

    def __init__(self, source: str, error: TemplateError) -> None:
        line = getattr(error, "lineno", None)
        where = f" (template line {line})" if line else ""
        super().__init__(f"{error.message or error}{where}")
        self.source = source
        self.template_line = line


class RenderError(ValueError):
    """Raise when a template fails while rendering against a context."""


def _native(value: Any) -> Any:
    if isinstance(value, Undefined):
        return None
    return value


@dataclass(frozen=True, eq=False)
class Expression:
    """A compiled Jinja expression such as `payload.event == 'mail_sent'`."""

    source: str
    _compiled: Any

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        try:
            return _native(self._compiled(**context))
        except TemplateError as exc:
            raise RenderError(f"expression {self.source!r} failed: {exc}") from exc
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            raise RenderError(f"expression {self.source!r} failed: {exc}") from exc

    def test(self, context: Mapping[str, Any]) -> bool:
        return bool(self.evaluate(context))


@dataclass(frozen=True, eq=False)
class TextTemplate:
    """A compiled Jinja template that renders to a string."""

    source: str
    _compiled: Any

    def render(self, context: Mapping[str, Any]) -> str:
        try:
            return str(self._compiled.render(**context))
        except TemplateError as exc:
            raise RenderError(f"template {self.source!r} failed: {exc}") from exc
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            raise RenderError(f"template {self.source!r} failed: {exc}") from exc


@dataclass(frozen=True, eq=False)
class TreeTemplate:
    """A YAML tree whose string leaves are templates, rendered to JSON values."""

    source: Any
    _compiled: Any

    def render(self, context: Mapping[str, Any]) -> Any:
        return _render_node(self._compiled, context)


def compile_expression(source: str) -> Expression:
    """Compile a `when:` or `filter:` expression."""
    try:
        compiled = ENVIRONMENT.compile_expression(source, undefined_to_none=False)
    except TemplateError as exc:
        raise TemplateCompileError(source, exc) from exc
    return Expression(source, compiled)


def compile_text(source: str) -> TextTemplate:
    """Compile a template that renders to text."""
    try:
        compiled = ENVIRONMENT.from_string(source)
    except TemplateError as exc:
        raise TemplateCompileError(source, exc) from exc
    return TextTemplate(source, compiled)


def compile_tree(source: Any) -> TreeTemplate:
    """Compile every string leaf of a mapping, list or scalar."""
    return TreeTemplate(source, _compile_node(source))


def _compile_node(node: Any) -> Any:
    if isinstance(node, str):
        match = _SINGLE_EXPRESSION.match(node)
        if match and "{{" not in match.group("expr") and "{%" not in node:
            return compile_expression(match.group("expr").strip())
        if "{{" in node or "{%" in node or "{#" in node:
            return compile_text(node)
        return node
    if isinstance(node, Mapping):
        return {str(key): _compile_node(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_compile_node(item) for item in node]
    return node


def _render_node(node: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(node, Expression):
        return _plain(node.evaluate(context))
    if isinstance(node, TextTemplate):
        return node.render(context)
    if isinstance(node, dict):
        return {key: _render_node(value, context) for key, value in node.items()}
    if isinstance(node, list):
        return [_render_node(item, context) for item in node]
    return node


def _plain(value: Any) -> Any:
    """Turn an expression's result into a JSON value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Undefined):
        return None
    return str(value)
