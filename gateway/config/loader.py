"""Load a config directory and compile it into a `GatewayConfig`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from gateway.config.checks import Checker, parse_size
from gateway.config.model import (
    DEFAULT_MAX_BODY_BYTES,
    EmitStep,
    GatewayConfig,
    PipelineConfig,
    ProviderConfig,
    SubscriptionConfig,
    match_event_type,
)
from gateway.config.pipelines import PipelineCompiler
from gateway.config.providers import ProviderCompiler
from gateway.config.schemas import SchemaRegistry
from gateway.config.source import LoadedFile, Location, YMap, load_yaml_file
from gateway.config.subscriptions import SubscriptionCompiler
from gateway.exceptions import ConfigError, ConfigProblem

PROVIDERS_FILE = "providers.yaml"
SUBSCRIPTIONS_FILE = "subscriptions.yaml"
# The gateway emits these about its own deliveries (see gateway/events.py).
OPERATIONAL_EVENT_TYPES = (
    "delivery.failed",
    "delivery.recovered",
    "subscription.disabled",
)
RESERVED_PATHS = frozenset(
    {"/api", "/admin", "/healthz", "/readyz", "/schema", "/ui", "/metrics"}
)


class _Compiler(ProviderCompiler, PipelineCompiler, SubscriptionCompiler):
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
                self.check.error(
                    Location(loaded.path, 1, 1), "file must hold a mapping"
                )
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

    def check_reserved_paths(
        self, providers: tuple[ProviderConfig, ...], loaded: LoadedFile
    ) -> None:
        """Keep provider routes off the paths of the API, health checks and docs."""
        if not providers and not loaded.problems:
            self.check.warn(
                Location(loaded.path, 1, 1),
                "no providers are declared, so the gateway accepts no webhooks",
            )
        for route in (r for p in providers for r in p.routes):
            segment = "/" + route.path.strip("/").split("/", 1)[0]
            if segment in RESERVED_PATHS:
                self.check.error(
                    route.location,
                    f"route {route.qualified_name} path {route.path!r} is under"
                    f" {segment}, which the gateway itself serves; choose another path,"
                    " such as /webhooks/...",
                )

    def check_pipeline_loops(self, pipelines: tuple[PipelineConfig, ...]) -> None:
        """Reject pipelines that start themselves again through their own events.

        A cycle through literal event types is an error. A cycle that needs a
        templated type is only a warning, because the template may never
        render the matching name.
        """
        edges: dict[str, list[tuple[str, str, bool]]] = {}
        for source in pipelines:
            for emitted in _emitted_types(source):
                templated = "{" in emitted
                for target in pipelines:
                    if any(_may_match(pattern, emitted) for pattern in target.on):
                        edges.setdefault(source.name, []).append(
                            (target.name, emitted, templated)
                        )
        by_name = {p.name: p for p in pipelines}
        for start in pipelines:
            path = _find_cycle(start.name, edges)
            if path is None:
                continue
            names = " -> ".join([start.name, *(step[0] for step in path)])
            via = ", ".join(repr(step[1]) for step in path)
            message = (
                f"pipeline {start.name!r} starts itself again ({names}, through the"
                f" emitted types {via}); each event would run the loop without end"
            )
            if any(step[2] for step in path):
                self.check.warn(
                    by_name[start.name].location,
                    message + " if the templated type renders a matching name",
                )
            else:
                self.check.error(by_name[start.name].location, message)

    def warn_unmatched_patterns(
        self,
        providers: tuple[ProviderConfig, ...],
        pipelines: tuple[PipelineConfig, ...],
        subscriptions: tuple[SubscriptionConfig, ...],
    ) -> None:
        """Warn about listeners whose event pattern matches no event type declared."""
        emitted = [
            rule.type.source for p in providers for r in p.routes for rule in r.events
        ]
        emitted += [t for pipeline in pipelines for t in _emitted_types(pipeline)]
        emitted += OPERATIONAL_EVENT_TYPES
        listeners = [(p.on, p.location, f"pipeline {p.name!r}") for p in pipelines]
        listeners += [
            (s.events, s.location, f"subscription {s.name!r}") for s in subscriptions
        ]
        for patterns, location, what in listeners:
            for pattern in patterns:
                if not any(_may_match(pattern, source) for source in emitted):
                    self.check.warn(
                        location,
                        f"{what} listens for {pattern!r}, which no route or pipeline emits",
                    )


def _find_cycle(
    start: str, edges: dict[str, list[tuple[str, str, bool]]]
) -> list[tuple[str, str, bool]] | None:
    """Return the edges of a path from `start` back to itself, if there is one."""
    stack: list[tuple[str, list[tuple[str, str, bool]]]] = [(start, [])]
    visited: set[str] = set()
    while stack:
        node, path = stack.pop()
        for edge in edges.get(node, []):
            if edge[0] == start:
                return [*path, edge]
            if edge[0] not in visited:
                visited.add(edge[0])
                stack.append((edge[0], [*path, edge]))
    return None


def _emitted_types(pipeline: PipelineConfig) -> list[str]:
    return [
        step.action.type.source
        for step in pipeline.steps
        if isinstance(step.action, EmitStep)
    ]


def _may_match(pattern: str, type_source: str) -> bool:
    """Tell whether a pattern can match what an event type template renders.

    A templated type is known only up to its first `{{` or `{%`, so it may
    match any pattern whose literal start agrees with that prefix.
    """
    cut = min(
        (i for i in (type_source.find("{{"), type_source.find("{%")) if i >= 0),
        default=-1,
    )
    if cut < 0:
        return match_event_type(pattern, type_source)
    prefix = type_source[:cut]
    literal = pattern.split("*", 1)[0]
    return prefix.startswith(literal) or literal.startswith(prefix)


def _version(config_dir: Path) -> str:
    """Hash every file a config can read, so any edit gives a new version."""
    digest = hashlib.sha256()
    for root in (config_dir, config_dir.parent / "schemas"):
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.name.startswith("."):
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            try:
                digest.update(path.read_bytes())
            except OSError:
                continue
    return digest.hexdigest()[:12]


def check_config(
    config_dir: Path, env: Mapping[str, str] | None = None
) -> tuple[GatewayConfig | None, list[ConfigProblem]]:
    """Compile a config directory; return the config (None on errors) and problems."""
    config_dir = Path(config_dir)
    compiler = _Compiler(config_dir, os.environ if env is None else env)
    if not config_dir.is_dir():
        problem = ConfigProblem(
            str(config_dir),
            1,
            1,
            "config directory not found; pass --config-dir with the folder that"
            " contains providers.yaml, or run mfo from the folder above config/",
        )
        return None, [problem]
    providers_file = compiler.load(PROVIDERS_FILE, required=True)
    assert providers_file is not None
    providers, pipelines, max_body = compiler.compile_providers(providers_file)
    subscriptions_file = compiler.load(SUBSCRIPTIONS_FILE, required=False)
    subscriptions, defaults = compiler.compile_subscriptions(subscriptions_file)
    if not any(problem.severity == "error" for problem in compiler.check.problems):
        # A route or pipeline that failed to compile emits nothing, so the
        # patterns that listen for it would be reported as unmatched too.
        compiler.warn_unmatched_patterns(providers, pipelines, subscriptions)
    compiler.check_pipeline_loops(pipelines)
    compiler.check_reserved_paths(providers, providers_file)
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


def load_config(
    config_dir: Path, env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Compile a config directory or raise `ConfigError` listing every problem."""
    config, problems = check_config(config_dir, env)
    if config is None:
        raise ConfigError([p for p in problems if p.severity == "error"])
    return config
