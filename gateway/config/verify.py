"""Compile a route's `verify:` section into a `VerifySpec`."""

from __future__ import annotations

from gateway.config.model import VerifySpec
from gateway.config.sections import SectionCompiler
from gateway.config.source import YMap

_VERIFY_TYPES = ("none", "header_secret", "hmac")
_VERIFY_KEYS = {
    "none": ("type",),
    "header_secret": ("type", "header", "secret", "secrets"),
    "hmac": ("type", "header", "secret", "secrets", "algorithm", "encoding", "prefix"),
}


class VerifyCompiler(SectionCompiler):
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
            self.check.error(
                node.location, f"{where} is missing the required key 'header'"
            )
        secrets = self._secrets(node, where)
        algorithm = self.check.choice(
            node, "algorithm", where, ("sha1", "sha256", "sha512"), "sha256"
        )
        encoding = self.check.choice(node, "encoding", where, ("hex", "base64"), "hex")
        prefix = node.get("prefix", "")
        if not isinstance(prefix, str):
            self.check.error(
                node.value_at("prefix"), f"{where}.prefix must be a string"
            )
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
