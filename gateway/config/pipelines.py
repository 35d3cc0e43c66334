"""Compile providers.yaml's `pipelines:` section."""

from __future__ import annotations

import re
from typing import Any

from gateway.config.checks import parse_duration
from gateway.config.model import (
    EmitStep,
    HttpStep,
    PipelineConfig,
    PythonStep,
    StepConfig,
)
from gateway.config.sections import SectionCompiler
from gateway.config.source import Location, YList, YMap
from gateway.config.templates import TreeTemplate

_STEP_KINDS = ("transform", "emit", "http", "python")


class PipelineCompiler(SectionCompiler):
    def _compile_pipelines(self, root: YMap) -> tuple[PipelineConfig, ...]:
        if "pipelines" not in root:
            return ()
        node = self.check.mapping(
            root["pipelines"], root.value_at("pipelines"), "pipelines"
        )
        pipelines = []
        for name, value in (node or {}).items():
            assert node is not None
            if not self._valid_name(name, node.key_at(name), "pipeline"):
                continue
            pipeline = self._compile_pipeline(name, value, node.value_at(name))
            if pipeline is not None:
                pipelines.append(pipeline)
        return tuple(pipelines)

    def _compile_pipeline(
        self, name: str, value: Any, location: Location
    ) -> PipelineConfig | None:
        what = f"pipeline {name!r}"
        node = self.check.mapping(value, location, what)
        if node is None:
            return None
        self.check.keys(
            node, what, ("on", "when", "steps", "description"), required=("on", "steps")
        )
        on = self.check.string_list(node, "on", what)
        when = self.check.expression(node, "when", what)
        steps_value = node.get("steps")
        if "steps" in node and (not isinstance(steps_value, YList) or not steps_value):
            self.check.error(
                node.value_at("steps"), f"{what}.steps must be a non-empty list"
            )
            return None
        steps: list[StepConfig] = []
        for index, item in enumerate(steps_value or []):
            assert isinstance(steps_value, YList)
            step = self._compile_step(
                what, index, item, steps_value.item_at(index), steps
            )
            if step is not None:
                steps.append(step)
        return PipelineConfig(name, on, when, tuple(steps), location)

    def _compile_step(
        self,
        pipeline: str,
        index: int,
        value: Any,
        location: Location,
        earlier: list[StepConfig],
    ) -> StepConfig | None:
        where = f"{pipeline}.steps[{index}]"
        node = self.check.mapping(value, location, where)
        if node is None:
            return None
        self.check.keys(node, where, ("name", "when", *_STEP_KINDS))
        kinds = [kind for kind in _STEP_KINDS if kind in node]
        if len(kinds) != 1:
            self.check.error(
                location,
                f"{where} must have exactly one of {', '.join(_STEP_KINDS)}"
                f" (found {', '.join(kinds) or 'none'})",
            )
            return None
        kind = kinds[0]
        name = self.check.string(node, "name", where) or f"{kind}_{index}"
        if any(step.name == name for step in earlier):
            self.check.error(
                node.value_at("name"), f"{where}: step name {name!r} repeats"
            )
        when = self.check.expression(node, "when", where)
        action = self._compile_action(kind, node, f"{where}.{kind}")
        if action is None:
            return None
        return StepConfig(name, kind, action, when, location)

    def _compile_action(
        self, kind: str, step: YMap, where: str
    ) -> TreeTemplate | EmitStep | HttpStep | PythonStep | None:
        if kind == "transform":
            return self.check.tree(step, "transform", where.removesuffix(".transform"))
        if kind == "python":
            return self._compile_python(step, where)
        node = self.check.mapping(step[kind], step.value_at(kind), where)
        if node is None:
            return None
        if kind == "emit":
            self.check.keys(node, where, ("type", "data"), required=("type",))
            event_type = self.check.text_template(node, "type", where)
            data = self.check.tree(node, "data", where)
            return EmitStep(event_type, data) if event_type else None
        self.check.keys(
            node,
            where,
            ("method", "url", "headers", "json", "body", "timeout"),
            required=("url",),
        )
        method = self.check.choice(
            node, "method", where, ("get", "post", "put", "patch", "delete"), "post"
        )
        url = self.check.text_template(node, "url", where)
        if "json" in node and "body" in node:
            self.check.error(
                node.location, f"{where} may have 'json' or 'body', not both"
            )
        timeout = self.check.parsed(node, "timeout", where, parse_duration, 10.0)
        if url is None:
            return None
        return HttpStep(
            method=method.upper(),
            url=url,
            headers=self.check.tree(node, "headers", where),
            json=self.check.tree(node, "json", where),
            body=self.check.text_template(node, "body", where),
            timeout=timeout,
        )

    def _compile_python(self, step: YMap, where: str) -> PythonStep | None:
        value = step["python"]
        if isinstance(value, str):
            target, args = value, None
        else:
            node = self.check.mapping(value, step.value_at("python"), where)
            if node is None:
                return None
            self.check.keys(node, where, ("function", "args"), required=("function",))
            target = self.check.string(node, "function", where) or ""
            args = self.check.tree(node, "args", where)
        if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", target):
            self.check.error(
                step.value_at("python"),
                f"{where} is {target!r}; expected 'package.module:function'",
            )
            return None
        return PythonStep(target, args)
