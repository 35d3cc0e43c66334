"""Compile a route's `verify:` section into a `VerifySpec`.

`verify:` is one scheme (a mapping with a `type`) or a list of schemes that
must all pass, such as a signature plus a source address allowlist. The
schemes and their keys:

- `none`: accept every request.
- `header_secret`: `header` must equal one of `secret`/`secrets`.
- `bearer`: `Authorization: Bearer <secret>`.
- `api_key`: the secret in `header` or in the query parameter `query`.
- `basic_auth`: secrets written `user:password`; `realm` names the challenge.
- `hmac`: an HMAC (`algorithm`, `encoding`, `prefix`) in `header` over the
  body, or over `signed_content`, a template such as
  `"{{ timestamp }}.{{ body }}"`. With `timestamp_header`, `timestamp_unit`
  (s or ms) and `tolerance`, stale and future requests are rejected.
- `standard_webhooks`: `whsec_` secrets (v1, HMAC-SHA256) and `whpk_`
  public keys (v1a, ed25519); `signing_key` (`whsk_`) lets `mfo send` sign
  v1a requests.
- `stripe`, `slack`, `shopify`: each provider's documented HMAC scheme.
- `twilio`: HMAC over `public_url` (or the URL received) and the form.
- `ip_allowlist`: `allow` lists CIDR ranges; `proxy_header` is read only
  when the peer is in `trusted_proxies`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Any

from gateway.config.checks import parse_duration
from gateway.config.model import DEFAULT_TIMESTAMP_TOLERANCE, VerifySpec
from gateway.config.sections import SectionCompiler
from gateway.config.source import Location, YList, YMap

_SECRETS = ("secret", "secrets")
_TIMESTAMPED = (*_SECRETS, "tolerance")
_VERIFY_KEYS: dict[str, tuple[str, ...]] = {
    "none": (),
    "header_secret": ("header", *_SECRETS),
    "bearer": _SECRETS,
    "api_key": ("header", "query", *_SECRETS),
    "basic_auth": ("realm", *_SECRETS),
    "hmac": (
        "header",
        *_TIMESTAMPED,
        "algorithm",
        "encoding",
        "prefix",
        "signed_content",
        "timestamp_header",
        "timestamp_unit",
    ),
    "standard_webhooks": (
        *_TIMESTAMPED,
        "public_key",
        "public_keys",
        "signing_key",
    ),
    "stripe": _TIMESTAMPED,
    "slack": _TIMESTAMPED,
    "shopify": _SECRETS,
    "twilio": (*_SECRETS, "public_url", "algorithm"),
    "ip_allowlist": ("allow", "proxy_header", "trusted_proxies"),
}
_VERIFY_TYPES = tuple(_VERIFY_KEYS)
_SECRET_KEYS = (*_SECRETS, "public_key", "public_keys", "signing_key")
# RFC 9110 section 5.1: a field name is a token.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

STANDARD_SECRET_PREFIX = "whsec_"
STANDARD_PUBLIC_KEY_PREFIX = "whpk_"
STANDARD_SIGNING_KEY_PREFIX = "whsk_"
# The Standard Webhooks specification requires secrets of 24 to 64 bytes.
_STANDARD_SECRET_MIN_BYTES = 24


def decode_standard_key(text: str, prefix: str) -> bytes:
    """Decode a Standard Webhooks secret or key, given with or without its prefix.

    Raise ValueError when the rest is not base64 or decodes to nothing.
    """
    if text.startswith(prefix):
        text = text[len(prefix) :]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"is not base64 after the {prefix!r} prefix; copy it whole from the"
            " provider"
        ) from None
    if not key:
        raise ValueError("is empty")
    return key


class VerifyCompiler(SectionCompiler):
    def _compile_verify(self, route: YMap, what: str) -> VerifySpec | None:
        if "verify" not in route:
            return None
        where = f"{what}.verify"
        value = route["verify"]
        if isinstance(value, YList):
            return self._compile_verify_list(value, route.value_at("verify"), where)
        node = self.check.mapping(value, route.value_at("verify"), where)
        if node is None:
            return None
        return self._compile_scheme(node, where)

    def _compile_verify_list(
        self, node: YList, location: Location, where: str
    ) -> VerifySpec | None:
        if not node:
            self.check.error(
                location, f"{where} must list at least one scheme, or use type: none"
            )
            return None
        parts = []
        for index, item in enumerate(node):
            part_where = f"{where}[{index}]"
            mapping = self.check.mapping(item, node.item_at(index), part_where)
            part = self._compile_scheme(mapping, part_where) if mapping else None
            if part is not None:
                parts.append(part)
        if len(parts) != len(node):
            return None
        defaulted = tuple(name for part in parts for name in part.defaulted_variables)
        return VerifySpec(type="all", parts=tuple(parts), defaulted_variables=defaulted)

    def _compile_scheme(self, node: YMap, where: str) -> VerifySpec | None:
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
        self.check.keys(node, f"{where} ({kind})", ("type", *_VERIFY_KEYS[kind]))
        spec = self._compile_scheme_fields(kind, node, where)
        if spec is None:
            return None
        defaulted = self.defaults_used(node, *_SECRET_KEYS)
        return VerifySpec(**{**spec, "type": kind, "defaulted_variables": defaulted})

    def _compile_scheme_fields(
        self, kind: str, node: YMap, where: str
    ) -> dict[str, Any] | None:
        """Return the VerifySpec fields of one scheme, or None after an error."""
        if kind == "none":
            return {}
        if kind == "ip_allowlist":
            return self._compile_allowlist(node, where)
        if kind == "standard_webhooks":
            return self._compile_standard_webhooks(node, where)
        fields: dict[str, Any] = {"secrets": self._secrets(node, where)}
        if kind in ("header_secret", "hmac"):
            fields["header"] = self._required_header(node, "header", where)
        if kind == "api_key":
            fields.update(self._compile_api_key_place(node, where))
        if kind == "basic_auth":
            fields["realm"] = self.check.string(node, "realm", where, "mfo")
            self._check_basic_secrets(node, where, fields["secrets"])
        if kind in ("hmac", "stripe", "slack"):
            fields["tolerance"] = self._tolerance(node, where)
        if kind == "hmac":
            fields.update(self._compile_hmac(node, where))
        if kind == "twilio":
            fields["public_url"] = self.check.url(node, "public_url", where)
            fields["algorithm"] = self.check.choice(
                node, "algorithm", where, ("sha1", "sha256"), "sha1"
            )
        return fields

    def _compile_hmac(self, node: YMap, where: str) -> dict[str, Any]:
        prefix = node.get("prefix", "")
        if not isinstance(prefix, str):
            self.check.error(
                node.value_at("prefix"), f"{where}.prefix must be a string"
            )
            prefix = ""
        return {
            "algorithm": self.check.choice(
                node, "algorithm", where, ("sha1", "sha256", "sha512"), "sha256"
            ),
            "encoding": self.check.choice(
                node, "encoding", where, ("hex", "base64"), "hex"
            ),
            "prefix": prefix,
            "signed_content": self.check.text_template(node, "signed_content", where),
            "timestamp_header": self._optional_header(node, "timestamp_header", where),
            "timestamp_unit": self.check.choice(
                node, "timestamp_unit", where, ("s", "ms"), "s"
            ),
        }

    def _compile_standard_webhooks(
        self, node: YMap, where: str
    ) -> dict[str, Any] | None:
        secrets = self._string_values(node, "secret", "secrets", where)
        public_keys = self._string_values(node, "public_key", "public_keys", where)
        if not secrets and not public_keys:
            self.check.error(
                node.location,
                f"{where} needs 'secret' (whsec_...) or 'public_key' (whpk_...);"
                " without one it would accept anyone",
            )
            return None
        for key in ("secret", "secrets"):
            self._check_standard_keys(node, key, where, STANDARD_SECRET_PREFIX, None)
        for key in ("public_key", "public_keys"):
            self._check_standard_keys(node, key, where, STANDARD_PUBLIC_KEY_PREFIX, 32)
        signing_key = self.check.string(node, "signing_key", where)
        if signing_key is not None:
            self._check_standard_keys(
                node, "signing_key", where, STANDARD_SIGNING_KEY_PREFIX, 32, 64
            )
        return {
            "secrets": secrets,
            "public_keys": public_keys,
            "signing_key": signing_key,
            "tolerance": self._tolerance(node, where),
        }

    def _check_standard_keys(
        self, node: YMap, key: str, where: str, prefix: str, *sizes: int | None
    ) -> None:
        if key not in node:
            return
        value = node[key]
        items = list(enumerate(value)) if isinstance(value, YList) else [(-1, value)]
        for index, text in items:
            if not isinstance(text, str):
                continue
            location = value.item_at(index) if index >= 0 else node.value_at(key)
            label = f"{where}.{key}" + (f"[{index}]" if index >= 0 else "")
            try:
                decoded = decode_standard_key(text, prefix)
            except ValueError as exc:
                self.check.error(location, f"{label} {exc}")
                continue
            if sizes != (None,) and len(decoded) not in sizes:
                expected = " or ".join(str(size) for size in sizes)
                self.check.error(
                    location,
                    f"{label} decodes to {len(decoded)} bytes; an ed25519 key has"
                    f" {expected}",
                )
            elif sizes == (None,) and len(decoded) < _STANDARD_SECRET_MIN_BYTES:
                self.check.warn(
                    location,
                    f"{label} has {len(decoded)} bytes; the Standard Webhooks"
                    f" specification asks for at least {_STANDARD_SECRET_MIN_BYTES}",
                )

    def _compile_allowlist(self, node: YMap, where: str) -> dict[str, Any] | None:
        if "allow" not in node:
            self.check.error(
                node.location,
                f"{where} is missing the required key 'allow' (a list of CIDR ranges)",
            )
            return None
        allow = self._networks(node, "allow", where)
        proxies = self._networks(node, "trusted_proxies", where)
        proxy_header = self._optional_header(node, "proxy_header", where)
        if proxy_header is not None and "trusted_proxies" not in node:
            self.check.error(
                node.value_at("proxy_header"),
                f"{where}.proxy_header needs 'trusted_proxies', the CIDR ranges of"
                " the proxies allowed to set it; without them any client could"
                " claim any address",
            )
        return {
            "allow": allow,
            "proxy_header": proxy_header,
            "trusted_proxies": proxies,
        }

    def _networks(self, node: YMap, key: str, where: str) -> tuple[str, ...]:
        networks = []
        value = node.get(key)
        for index, text in enumerate(self.check.string_list(node, key, where)):
            location = (
                value.item_at(index) if isinstance(value, YList) else node.value_at(key)
            )
            try:
                networks.append(str(ipaddress.ip_network(text.strip(), strict=False)))
            except ValueError:
                self.check.error(
                    location,
                    f"{where}.{key} has {text!r}, which is not an IP address or CIDR"
                    " range such as 192.0.2.0/24",
                )
        return tuple(networks)

    def _compile_api_key_place(self, node: YMap, where: str) -> dict[str, Any]:
        header = self._optional_header(node, "header", where)
        query = self.check.string(node, "query", where)
        if (header is None) == (query is None):
            self.check.error(
                node.location,
                f"{where} needs exactly one of 'header' and 'query', the place the"
                " provider sends its key",
            )
        return {"header": header, "query": query}

    def _check_basic_secrets(
        self, node: YMap, where: str, secrets: tuple[str, ...]
    ) -> None:
        for secret in secrets:
            if ":" not in secret:
                key = "secret" if "secret" in node else "secrets"
                self.check.error(
                    node.value_at(key),
                    f"{where}.{key}: each Basic credential is written user:password",
                )
                return

    def _tolerance(self, node: YMap, where: str) -> float:
        tolerance: float = self.check.parsed(
            node, "tolerance", where, parse_duration, DEFAULT_TIMESTAMP_TOLERANCE
        )
        if tolerance <= 0:
            self.check.error(
                node.value_at("tolerance"),
                f"{where}.tolerance must be longer than zero, such as 5m",
            )
            return DEFAULT_TIMESTAMP_TOLERANCE
        return tolerance

    def _required_header(self, node: YMap, key: str, where: str) -> str | None:
        if key not in node:
            self.check.error(
                node.location, f"{where} is missing the required key {key!r}"
            )
            return None
        return self._optional_header(node, key, where)

    def _optional_header(self, node: YMap, key: str, where: str) -> str | None:
        name = self.check.string(node, key, where)
        if name is not None and not _HEADER_NAME.match(name):
            self.check.error(
                node.value_at(key),
                f"{where}.{key} {name!r} is not a valid HTTP header name",
            )
            return None
        return name

    def _secrets(self, node: YMap, where: str) -> tuple[str, ...]:
        secrets = self._string_values(node, "secret", "secrets", where)
        if not secrets:
            self.check.error(
                node.location,
                f"{where} needs 'secret' (or a list in 'secrets'); an empty secret"
                " would accept anyone",
            )
        return secrets

    def _string_values(
        self, node: YMap, single_key: str, list_key: str, where: str
    ) -> tuple[str, ...]:
        """Read a value that may be given once or as a list, the single one first."""
        values = list(self.check.string_list(node, list_key, where))
        single = self.check.string(node, single_key, where)
        if single is not None:
            values.insert(0, single)
        return tuple(values)
