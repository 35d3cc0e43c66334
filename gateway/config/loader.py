"""Load a config directory and compile it into a `GatewayConfig`."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.config.checks import Checker, parse_duration, parse_size
from gateway.config.model import (
    DEFAULT_MAX_BODY_BYTES,
    DeliveryDefaults,
    EmitStep,
    EventRule,
    GatewayConfig,
    HttpStep,
    PipelineConfig,
    ProviderConfig,
    PythonStep,
    RetryPolicy,
    RouteConfig,
    StepConfig,
    SubscriptionConfig,
    VerifySpec,
    match_event_type,
)
from gateway.config.schemas import CompiledSchema, SchemaLoadError, SchemaRegistry
from gateway.config.source import LoadedFile, Location, YList, YMap, load_yaml_file
from gateway.config.templates import TreeTemplate
from gateway.exceptions import ConfigError, ConfigProblem

PROVIDERS_FILE = "providers.yaml"
SUBSCRIPTIONS_FILE = "subscriptions.yaml"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PATH = re.compile(r"^/[A-Za-z0-9_.~/-]*$")
_METHODS = ("post", "put", "patch")
_VERIFY_TYPES = ("none", "header_secret", "hmac")
_VERIFY_KEYS = {
    "none": ("type",),
    "header_secret": ("type", "header", "secret", "secrets"),
    "hmac": ("type", "header", "secret", "secrets", "algorithm", "encoding", "prefix"),
}
_STEP_KINDS = ("transform", "emit", "http", "python")


class _Compiler:
    def __init__(self, config_dir: Path, env: Mapping[str, str]) -> None:
        self.config_dir = config_dir
        self.base_dir = config_dir.parent
        self.env = env
        self.check = Checker()
        self.schemas = SchemaRegistry(self.base_dir)
        self.defaulted: dict[Location, tuple[str, ...]] = {}

    def display(self, path: Path) -> str:
        """Name a file relative to the working directory when it lies below it."""
        try:
            relative = os.path.relpath(path)
        except ValueError:
            return str(path)
        return str(path.absolute()) if relative.startswith("..") else relative

    def load(self, name: str, required: bool) -> LoadedFile | None:
        path = self.config_dir / name
        if not path.exists() and not required:
            return None
        loaded = load_yaml_file(path, self.display(path), self.env)
        self.check.problems.extend(loaded.problems)
        self.defaulted.update(loaded.defaulted)
        return loaded

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

    # providers.yaml

    def compile_providers(
        self, loaded: LoadedFile
    ) -> tuple[tuple[ProviderConfig, ...], tuple[PipelineConfig, ...], int]:
        root = loaded.root
        if root is None and not loaded.problems:
            root = YMap()
            root.location = Location(loaded.path, 1, 1)
            root.key_locations, root.value_locations = {}, {}
        if not isinstance(root, YMap):
            if not loaded.problems:
                self.check.error(Location(loaded.path, 1, 1), "file must hold a mapping")
            return (), (), DEFAULT_MAX_BODY_BYTES
        self.check.keys(root, loaded.path, ("providers", "pipelines", "settings"))
        max_body = DEFAULT_MAX_BODY_BYTES
        settings = root.get("settings")
        if settings is not None:
            node = self.check.mapping(settings, root.value_at("settings"), "settings")
            if node is not None:
                self.check.keys(node, "settings", ("max_body_size",))
                max_body = self.check.parsed(
                    node, "max_body_size", "settings", parse_size, max_body
                )
        providers = self._compile_provider_map(root, max_body)
        pipelines = self._compile_pipelines(root)
        return providers, pipelines, max_body

    def _compile_provider_map(self, root: YMap, max_body: int) -> tuple[ProviderConfig, ...]:
        if "providers" not in root:
            return ()
        node = self.check.mapping(root["providers"], root.value_at("providers"), "providers")
        if node is None:
            return ()
        providers = []
        for name, value in node.items():
            if not self._valid_name(name, node.key_at(name), "provider"):
                continue
            provider = self._compile_provider(name, value, node.value_at(name), max_body)
            if provider is not None:
                providers.append(provider)
        self._check_unique_paths(providers)
        return tuple(providers)

    def _valid_name(self, name: str, location: Location, what: str) -> bool:
        if _NAME.match(name):
            return True
        self.check.error(
            location,
            f"{what} name {name!r} is invalid; use letters, digits, '_', '-' and '.'",
        )
        return False

    def _compile_provider(
        self, name: str, value: Any, location: Location, max_body: int
    ) -> ProviderConfig | None:
        what = f"provider {name!r}"
        node = self.check.mapping(value, location, what)
        if node is None:
            return None
        self.check.keys(node, what, ("description", "routes"), required=("routes",))
        description = self.check.string(node, "description", what) or ""
        routes_node = None
        if "routes" in node:
            routes_node = self.check.mapping(node["routes"], node.value_at("routes"), what)
        routes = []
        for route_name, route_value in (routes_node or {}).items():
            assert routes_node is not None
            if not self._valid_name(route_name, routes_node.key_at(route_name), "route"):
                continue
            route = self._compile_route(
                name, route_name, route_value, routes_node.value_at(route_name), max_body
            )
            if route is not None:
                routes.append(route)
        return ProviderConfig(name, description, tuple(routes))

    def _compile_route(
        self, provider: str, name: str, value: Any, location: Location, max_body: int
    ) -> RouteConfig | None:
        what = f"route {provider}/{name}"
        node = self.check.mapping(value, location, what)
        if node is None:
            return None
        allowed = (
            "path",
            "method",
            "verify",
            "schema",
            "idempotency_key",
            "events",
            "max_body_size",
            "description",
        )
        self.check.keys(node, what, allowed, required=("path", "verify", "events"))
        path = self.check.string(node, "path", what)
        if path is not None and not _PATH.match(path):
            self.check.error(
                node.value_at("path"),
                f"{what}.path {path!r} must start with '/' and use only letters, digits"
                " and - _ . ~ /",
            )
        method = self.check.choice(node, "method", what, _METHODS, "post").upper()
        verify = self._compile_verify(node, what)
        schema = self._compile_schema(node, what)
        idempotency_key = self.check.text_template(node, "idempotency_key", what)
        events = self._compile_events(node, what)
        route_max = self.check.parsed(node, "max_body_size", what, parse_size, max_body)
        if path is None or verify is None:
            return None
        return RouteConfig(
            provider=provider,
            name=name,
            path=path,
            method=method,
            verify=verify,
            schema=schema,
            idempotency_key=idempotency_key,
            events=events,
            max_body_bytes=route_max,
            location=location,
        )

    def _compile_verify(self, route: YMap, what: str) -> VerifySpec | None:
        if "verify" not in route:
            return None
        where = f"{what}.verify"
        node = self.check.mapping(route["verify"], route.value_at("verify"), where)
        if node is None:
            return None
        kind = self.check.choice(node, "type", where, _VERIFY_TYPES, "")
        if "type" not in node:
            self.check.error(
                node.location,
                f"{where} is missing 'type'; use one of {', '.join(_VERIFY_TYPES)}"
                " (none accepts unsigned requests)",
            )
            return None
        if kind == "":
            return None
        self.check.keys(node, f"{where} ({kind})", _VERIFY_KEYS[kind])
        if kind == "none":
            return VerifySpec(type="none")
        header = self.check.string(node, "header", where)
        if header is None and "header" not in node:
            self.check.error(node.location, f"{where} is missing the required key 'header'")
        secrets = self._secrets(node, where)
        algorithm = self.check.choice(
            node, "algorithm", where, ("sha1", "sha256", "sha512"), "sha256"
        )
        encoding = self.check.choice(node, "encoding", where, ("hex", "base64"), "hex")
        prefix = node.get("prefix", "")
        if not isinstance(prefix, str):
            self.check.error(node.value_at("prefix"), f"{where}.prefix must be a string")
            prefix = ""
        return VerifySpec(
            type=kind,
            header=header,
            secrets=secrets,
            algorithm=algorithm,
            encoding=encoding,
            prefix=prefix,
            defaulted_variables=self.defaults_used(node, "secret", "secrets"),
        )

    def _secrets(self, node: YMap, where: str) -> tuple[str, ...]:
        secrets = list(self.check.string_list(node, "secrets", where))
        single = self.check.string(node, "secret", where)
        if single is not None:
            secrets.insert(0, single)
        if not secrets:
            self.check.error(
                node.location,
                f"{where} needs 'secret' (or a list in 'secrets'); an empty secret"
                " would accept anyone",
            )
        return tuple(secrets)

    def _compile_schema(self, route: YMap, what: str) -> CompiledSchema | None:
        path = self.check.string(route, "schema", what)
        if path is None:
            return None
        try:
            return self.schemas.load(path)
        except SchemaLoadError as exc:
            self.check.error(route.value_at("schema"), f"{what}.schema: {exc}")
            return None

    def _compile_events(self, route: YMap, what: str) -> tuple[EventRule, ...]:
        if "events" not in route:
            return ()
        value = route["events"]
        if not isinstance(value, YList) or not value:
            self.check.error(
                route.value_at("events"),
                f"{what}.events must be a non-empty list of {{type, when, data}}",
            )
            return ()
        rules = []
        for index, item in enumerate(value):
            where = f"{what}.events[{index}]"
            node = self.check.mapping(item, value.item_at(index), where)
            if node is None:
                continue
            self.check.keys(node, where, ("type", "when", "data"), required=("type",))
            type_template = self.check.text_template(node, "type", where)
            when = self.check.expression(node, "when", where)
            data = self.check.tree(node, "data", where)
            if type_template is not None:
                rules.append(EventRule(type_template, when, data, value.item_at(index)))
        return tuple(rules)

    def _check_unique_paths(self, providers: list[ProviderConfig]) -> None:
        seen: dict[tuple[str, str], RouteConfig] = {}
        for route in (r for p in providers for r in p.routes):
            key = (route.method, route.path.rstrip("/") or "/")
            first = seen.get(key)
            if first is not None:
                self.check.error(
                    route.location,
                    f"route {route.qualified_name} uses {route.method} {route.path},"
                    f" already used by route {first.qualified_name}"
                    f" (line {first.location.line}); give one of them another path",
                )
            else:
                seen[key] = route

    # pipelines

    def _compile_pipelines(self, root: YMap) -> tuple[PipelineConfig, ...]:
        if "pipelines" not in root:
            return ()
        node = self.check.mapping(root["pipelines"], root.value_at("pipelines"), "pipelines")
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
            self.check.error(node.value_at("steps"), f"{what}.steps must be a non-empty list")
            return None
        steps: list[StepConfig] = []
        for index, item in enumerate(steps_value or []):
            assert isinstance(steps_value, YList)
            step = self._compile_step(what, index, item, steps_value.item_at(index), steps)
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
            self.check.error(node.value_at("name"), f"{where}: step name {name!r} repeats")
        when = self.check.expression(node, "when", where)
        action = self._compile_action(kind, node, f"{where}.{kind}")
        if action is None:
            return None
        return StepConfig(name, kind, action, when, location)

    def _compile_action(
        self, kind: str, step: YMap, where: str
    ) -> TreeTemplate | EmitStep | HttpStep | PythonStep | None:
        if kind == "transform":
            return self.check.tree(step, "transform", where)
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
            self.check.error(node.location, f"{where} may have 'json' or 'body', not both")
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

    # subscriptions.yaml

    def compile_subscriptions(
        self, loaded: LoadedFile | None
    ) -> tuple[tuple[SubscriptionConfig, ...], DeliveryDefaults]:
        if loaded is None or loaded.root is None:
            return (), DeliveryDefaults()
        root = self.check.mapping(loaded.root, Location(loaded.path, 1, 1), loaded.path)
        if root is None:
            return (), DeliveryDefaults()
        self.check.keys(root, loaded.path, ("defaults", "subscriptions"))
        defaults = DeliveryDefaults()
        if "defaults" in root:
            node = self.check.mapping(root["defaults"], root.value_at("defaults"), "defaults")
            if node is not None:
                self.check.keys(node, "defaults", ("timeout", "retry"))
                defaults = DeliveryDefaults(
                    timeout=self._timeout(node, "defaults", 10.0),
                    retry=self._retry(node, "defaults", RetryPolicy()),
                )
        subscriptions = []
        node = None
        if "subscriptions" in root:
            node = self.check.mapping(
                root["subscriptions"], root.value_at("subscriptions"), "subscriptions"
            )
        for name, value in (node or {}).items():
            assert node is not None
            if not self._valid_name(name, node.key_at(name), "subscription"):
                continue
            sub = self._compile_subscription(name, value, node.value_at(name), defaults)
            if sub is not None:
                subscriptions.append(sub)
        return tuple(subscriptions), defaults

    def _timeout(self, node: YMap, what: str, default: float) -> float:
        timeout = self.check.parsed(node, "timeout", what, parse_duration, default)
        if not 0 < timeout <= 300:
            self.check.error(
                node.value_at("timeout"), f"{what}.timeout must be between 1ms and 5m"
            )
            return default
        return float(timeout)

    def _retry(self, node: YMap, what: str, default: RetryPolicy) -> RetryPolicy:
        if "retry" not in node:
            return default
        where = f"{what}.retry"
        retry = self.check.mapping(node["retry"], node.value_at("retry"), where)
        if retry is None:
            return default
        self.check.keys(retry, where, ("schedule", "jitter"))
        schedule = default.schedule
        if "schedule" in retry:
            items = retry["schedule"]
            if not isinstance(items, YList):
                self.check.error(
                    retry.value_at("schedule"),
                    f"{where}.schedule must be a list of durations, such as [5s, 5m]",
                )
            else:
                parsed = []
                for index, item in enumerate(items):
                    try:
                        parsed.append(parse_duration(item))
                    except ValueError as exc:
                        self.check.error(items.item_at(index), f"{where}.schedule: {exc}")
                schedule = tuple(parsed)
        jitter = self.check.number(retry, "jitter", where, default.jitter, 0.0, 1.0)
        return RetryPolicy(schedule, jitter)

    def _compile_subscription(
        self, name: str, value: Any, location: Location, defaults: DeliveryDefaults
    ) -> SubscriptionConfig | None:
        what = f"subscription {name!r}"
        node = self.check.mapping(value, location, what)
        if node is None:
            return None
        allowed = (
            "url",
            "events",
            "secret",
            "filter",
            "template",
            "headers",
            "timeout",
            "retry",
            "description",
        )
        self.check.keys(node, what, allowed, required=("url", "events"))
        url = self.check.url(node, "url", what)
        events = self.check.string_list(node, "events", what)
        secret = self.check.string(node, "secret", what)
        if secret is not None and not secret.startswith("whsec_"):
            self.check.error(
                node.value_at("secret"),
                f"{what}.secret must be a Standard Webhooks secret starting with"
                " 'whsec_'; leave it out to have one generated",
            )
        filter_expression = self.check.expression(node, "filter", what)
        self.check.tree(node, "template", what)
        headers = self._headers(node, what)
        if url is None or not events:
            return None
        return SubscriptionConfig(
            name=name,
            url=url,
            events=events,
            secret=secret,
            filter=filter_expression.source if filter_expression else None,
            template=_plain(node.get("template")),
            headers=headers,
            timeout=self._timeout(node, what, defaults.timeout),
            retry=self._retry(node, what, defaults.retry),
            description=self.check.string(node, "description", what) or "",
            location=location,
            defaulted_variables=self.defaults_used(node, "secret"),
        )

    def _headers(self, node: YMap, what: str) -> dict[str, str]:
        if "headers" not in node:
            return {}
        headers = self.check.mapping(node["headers"], node.value_at("headers"), what)
        result = {}
        for key, value in (headers or {}).items():
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                self.check.error(
                    headers.value_at(key), f"{what}.headers.{key} must be a string"
                )
                continue
            result[key] = str(value)
        return result

    def warn_unmatched_patterns(
        self,
        providers: tuple[ProviderConfig, ...],
        pipelines: tuple[PipelineConfig, ...],
        subscriptions: tuple[SubscriptionConfig, ...],
    ) -> None:
        """Warn about listeners whose event pattern matches no event type declared."""
        emitted = [rule.type.source for p in providers for r in p.routes for rule in r.events]
        emitted += [
            step.action.type.source
            for pipeline in pipelines
            for step in pipeline.steps
            if isinstance(step.action, EmitStep)
        ]
        if any("{" in source for source in emitted):
            return  # a templated type can produce any name
        listeners = [(p.on, p.location, f"pipeline {p.name!r}") for p in pipelines]
        listeners += [(s.events, s.location, f"subscription {s.name!r}") for s in subscriptions]
        for patterns, location, what in listeners:
            for pattern in patterns:
                if not any(match_event_type(pattern, t) for t in emitted):
                    self.check.warn(
                        location,
                        f"{what} listens for {pattern!r}, which no route or pipeline emits",
                    )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _version(config_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in (PROVIDERS_FILE, SUBSCRIPTIONS_FILE):
        path = config_dir / name
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def check_config(
    config_dir: Path, env: Mapping[str, str] | None = None
) -> tuple[GatewayConfig | None, list[ConfigProblem]]:
    """Compile a config directory; return the config (None on errors) and problems."""
    config_dir = Path(config_dir)
    compiler = _Compiler(config_dir, os.environ if env is None else env)
    if not config_dir.is_dir():
        problem = ConfigProblem(str(config_dir), 1, 1, "config directory not found")
        return None, [problem]
    providers_file = compiler.load(PROVIDERS_FILE, required=True)
    assert providers_file is not None
    providers, pipelines, max_body = compiler.compile_providers(providers_file)
    subscriptions_file = compiler.load(SUBSCRIPTIONS_FILE, required=False)
    subscriptions, defaults = compiler.compile_subscriptions(subscriptions_file)
    compiler.warn_unmatched_patterns(providers, pipelines, subscriptions)
    problems = compiler.check.problems
    if any(problem.severity == "error" for problem in problems):
        return None, problems
    config = GatewayConfig(
        config_dir=config_dir.resolve(),
        base_dir=compiler.base_dir.resolve(),
        version=_version(config_dir),
        providers=providers,
        pipelines=pipelines,
        subscriptions=subscriptions,
        defaults=defaults,
        max_body_bytes=max_body,
    )
    return config, problems


def load_config(config_dir: Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Compile a config directory or raise `ConfigError` listing every problem."""
    config, problems = check_config(config_dir, env)
    if config is None:
        raise ConfigError([p for p in problems if p.severity == "error"])
    return config
