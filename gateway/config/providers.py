"""Compile providers.yaml's `providers:` section into routes."""

from __future__ import annotations

import re
from typing import Any

from gateway.config.checks import parse_size
from gateway.config.model import (
    DEFAULT_MAX_JSON_DEPTH,
    DecodeConfig,
    EventRule,
    HandshakeConfig,
    ProviderConfig,
    ResponseConfig,
    RouteConfig,
)
from gateway.config.schemas import CompiledSchema, SchemaLoadError
from gateway.config.source import Location, YList, YMap
from gateway.config.templates import TextTemplate, TreeTemplate
from gateway.config.verify import VerifyCompiler

_PATH = re.compile(r"^/[A-Za-z0-9_.~/-]*$")
_METHODS = ("post", "put", "patch")
_HANDSHAKE_METHODS = ("get", "post", "put", "patch")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# The server computes these from the body it sends, so a template must not set them.
_RESERVED_RESPONSE_HEADERS = ("content-length", "transfer-encoding", "connection")
# Python's json module raises RecursionError near 1000 levels (recursion limit 1000).
_MAX_JSON_DEPTH_LIMIT = 512


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
            "handshakes",
            "response",
            "decode",
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
        handshakes = self._compile_handshakes(node, what, method)
        response = self._compile_response(node, "response", what)
        decode = self._compile_decode(node, what)
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
            handshakes=handshakes,
            response=response,
            decode=decode,
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
            for method in route.methods:
                key = (method, route.path.rstrip("/") or "/")
                first = seen.get(key)
                if first is None:
                    seen[key] = route
                    continue
                self.check.error(
                    route.location,
                    f"route {route.qualified_name} uses {method} {route.path},"
                    f" already used by route {first.qualified_name}"
                    f" (line {first.location.line}); give one of them another path",
                )

    def _compile_decode(self, route: YMap, what: str) -> DecodeConfig:
        if "decode" not in route:
            return DecodeConfig()
        where = f"{what}.decode"
        node = self.check.mapping(route["decode"], route.value_at("decode"), where)
        if node is None:
            return DecodeConfig()
        allowed = ("form_json_fields", "max_json_depth", "max_decompressed_size")
        self.check.keys(node, where, allowed)
        depth = self.check.number(
            node,
            "max_json_depth",
            where,
            DEFAULT_MAX_JSON_DEPTH,
            1,
            _MAX_JSON_DEPTH_LIMIT,
        )
        if depth != int(depth):
            self.check.error(
                node.value_at("max_json_depth"), f"{where}.max_json_depth must be whole"
            )
        decompressed = self.check.parsed(
            node, "max_decompressed_size", where, parse_size, None
        )
        return DecodeConfig(
            form_json_fields=self.check.string_list(node, "form_json_fields", where),
            max_json_depth=int(depth),
            max_decompressed_bytes=decompressed,
        )

    def _compile_handshakes(
        self, route: YMap, what: str, route_method: str
    ) -> tuple[HandshakeConfig, ...]:
        if "handshakes" not in route:
            return ()
        node = self.check.mapping(
            route["handshakes"], route.value_at("handshakes"), f"{what}.handshakes"
        )
        handshakes = []
        for name, value in (node or {}).items():
            assert node is not None
            if not self._valid_name(name, node.key_at(name), "handshake"):
                continue
            handshake = self._compile_handshake(
                name, value, node.value_at(name), what, route_method
            )
            if handshake is not None:
                handshakes.append(handshake)
        return tuple(handshakes)

    def _compile_handshake(
        self, name: str, value: Any, location: Location, what: str, route_method: str
    ) -> HandshakeConfig | None:
        where = f"{what}.handshakes.{name}"
        node = self.check.mapping(value, location, where)
        if node is None:
            return None
        allowed = ("method", "when", "verify", "token", "secret", "secrets", "response")
        self.check.keys(node, where, allowed, required=("when", "response"))
        method = self.check.choice(
            node, "method", where, _HANDSHAKE_METHODS, route_method.lower()
        ).upper()
        when = self.check.expression(node, "when", where)
        verify = node.get("verify", True)
        if not isinstance(verify, bool):
            self.check.error(
                node.value_at("verify"),
                f"{where}.verify must be true (check the route's verify first)"
                " or false",
            )
        token = self.check.text_template(node, "token", where)
        secrets = self._string_values(node, "secret", "secrets", where)
        if "token" in node and not secrets:
            self.check.error(
                node.value_at("token"),
                f"{where}.token needs 'secret' (or 'secrets'), the value the token"
                " must equal",
            )
        response = self._compile_response(node, "response", where)
        if when is None or response is None:
            return None
        return HandshakeConfig(
            name=name,
            method=method,
            when=when,
            verify=verify is True,
            token=token,
            secrets=secrets,
            response=response,
            location=location,
            defaulted_variables=self.defaults_used(node, "secret", "secrets"),
        )

    def _compile_response(
        self, parent: YMap, key: str, what: str
    ) -> ResponseConfig | None:
        if key not in parent:
            return None
        where = f"{what}.{key}"
        node = self.check.mapping(parent[key], parent.value_at(key), where)
        if node is None:
            return None
        self.check.keys(node, where, ("status", "headers", "body"))
        body: TextTemplate | TreeTemplate | None = None
        if isinstance(node.get("body"), YMap | YList):
            body = self.check.tree(node, "body", where)
        elif node.get("body") == "":
            body = None
        elif "body" in node:
            body = self.check.text_template(node, "body", where)
        return ResponseConfig(
            status=self._response_status(node, where),
            headers=self._response_headers(node, where),
            body=body,
            location=node.location,
        )

    def _response_status(self, node: YMap, where: str) -> int | TextTemplate | None:
        if "status" not in node:
            return None
        value = node["status"]
        if isinstance(value, str) and "{" in value:
            return self.check.text_template(node, "status", where)
        if isinstance(value, int) and not isinstance(value, bool):
            if 200 <= value <= 599:
                return value
        self.check.error(
            node.value_at("status"),
            f"{where}.status is {value!r}; expected a status code from 200 to 599"
            " or a template that renders one",
        )
        return None

    def _response_headers(
        self, node: YMap, where: str
    ) -> tuple[tuple[str, TextTemplate], ...]:
        if "headers" not in node:
            return ()
        headers = self.check.mapping(
            node["headers"], node.value_at("headers"), f"{where}.headers"
        )
        compiled = []
        for name in headers or {}:
            assert headers is not None
            if not _HEADER_NAME.match(name):
                self.check.error(
                    headers.key_at(name),
                    f"{where}.headers: {name!r} is not a valid HTTP header name",
                )
                continue
            if name.lower() in _RESERVED_RESPONSE_HEADERS:
                self.check.error(
                    headers.key_at(name),
                    f"{where}.headers: {name!r} is set by the server and cannot be"
                    " templated",
                )
                continue
            template = self.check.text_template(headers, name, f"{where}.headers")
            if template is not None:
                compiled.append((name.lower(), template))
        return tuple(compiled)
