"""Compile providers.yaml's `providers:` section into routes."""

from __future__ import annotations

import re
from typing import Any

from gateway.config.checks import parse_size
from gateway.config.model import EventRule, ProviderConfig, RouteConfig
from gateway.config.schemas import CompiledSchema, SchemaLoadError
from gateway.config.source import Location, YList, YMap
from gateway.config.verify import VerifyCompiler

_PATH = re.compile(r"^/[A-Za-z0-9_.~/-]*$")
_METHODS = ("post", "put", "patch")


class ProviderCompiler(VerifyCompiler):
    def _compile_provider_map(
        self, root: YMap, max_body: int
    ) -> tuple[ProviderConfig, ...]:
        if "providers" not in root:
            return ()
        node = self.check.mapping(
            root["providers"], root.value_at("providers"), "providers"
        )
        if node is None:
            return ()
        providers = []
        for name, value in node.items():
            if not self._valid_name(name, node.key_at(name), "provider"):
                continue
            provider = self._compile_provider(
                name, value, node.value_at(name), max_body
            )
            if provider is not None:
                providers.append(provider)
        self._check_unique_paths(providers)
        return tuple(providers)

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
            routes_node = self.check.mapping(
                node["routes"], node.value_at("routes"), what
            )
        routes = []
        for route_name, route_value in (routes_node or {}).items():
            assert routes_node is not None
            if not self._valid_name(
                route_name, routes_node.key_at(route_name), "route"
            ):
                continue
            route = self._compile_route(
                name,
                route_name,
                route_value,
                routes_node.value_at(route_name),
                max_body,
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
