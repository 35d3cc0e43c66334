"""Compile subscriptions.yaml: delivery defaults and subscriptions."""

from __future__ import annotations

from typing import Any

from gateway.config.checks import parse_duration
from gateway.config.model import DeliveryDefaults, RetryPolicy, SubscriptionConfig
from gateway.config.sections import SectionCompiler
from gateway.config.source import LoadedFile, Location, YList, YMap


class SubscriptionCompiler(SectionCompiler):
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
            node = self.check.mapping(
                root["defaults"], root.value_at("defaults"), "defaults"
            )
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
                        self.check.error(
                            items.item_at(index), f"{where}.schedule: {exc}"
                        )
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


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
