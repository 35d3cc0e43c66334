"""Respond to the requests providers send to prove an endpoint is theirs.

A handshake is declared per route, and its response goes out before
anything is stored. Examples:

- Slack's `url_verification` (a signed POST whose `challenge` is echoed);
- GET challenges such as Meta's, where `hub.challenge` is echoed only after
  `hub.verify_token` matches a configured secret;
- Microsoft Graph's `validationToken`, echoed as plain text;
- challenge-response with an HMAC, as Zoom's `endpoint.url_validation`
  asks for `HMAC-SHA256(secret, plainToken)`.

Each one is a `when` condition plus a response template, so a new platform
needs only YAML. Templates see `payload`, `headers`, `query` and `method`,
and the response may call `hmac(text, algorithm="sha256", encoding="hex")`,
keyed with the handshake's first secret.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Callable
from typing import Any

from gateway.config.model import HandshakeConfig, RouteConfig
from gateway.config.templates import RenderError
from gateway.exceptions import Forbidden, IngressError, UnmappablePayload
from gateway.ingress.request import WebhookRequest
from gateway.ingress.responses import (
    RenderedResponse,
    render_response,
    template_context,
)
from gateway.ingress.schemes import SignatureVerifier
from gateway.ingress.schemes.base import matches_any
from gateway.ingress.schemes.hmac import ALGORITHMS

logger = logging.getLogger(__name__)

PayloadLoader = Callable[[], Any]


def answer_handshake(
    route: RouteConfig,
    verifier: SignatureVerifier,
    request: WebhookRequest,
    load_payload: PayloadLoader,
) -> tuple[HandshakeConfig, RenderedResponse] | None:
    """Return the first handshake that matches the request and its response, or None.

    A handshake with `verify: true` checks the route's scheme before its
    condition, so an unsigned request never learns whether it would match.
    A body that cannot be parsed is seen as `payload` None here; the normal
    path reports the parse error after verification.
    """
    candidates = [h for h in route.handshakes if h.method == request.method]
    if not candidates:
        return None
    payload = _payload_or_none(load_payload)
    verified = False
    for handshake in candidates:
        if handshake.verify and not verified:
            verifier.verify_request(request)
            verified = True
        context = template_context(route, request, payload)
        if not _matches(handshake, context, route):
            continue
        _check_token(handshake, context)
        context["hmac"] = _hmac_function(handshake.secrets)
        try:
            response = render_response(handshake.response, context, 200)
        except RenderError as exc:
            raise UnmappablePayload(
                f"handshake {handshake.name!r} response failed: {exc}"
            ) from None
        # Challenges echo text the client chose, so browsers must not sniff it as HTML.
        response.headers.setdefault("x-content-type-options", "nosniff")
        return handshake, response
    return None


def _payload_or_none(load_payload: PayloadLoader) -> Any:
    try:
        return load_payload()
    except IngressError:
        return None


def _matches(
    handshake: HandshakeConfig, context: dict[str, Any], route: RouteConfig
) -> bool:
    try:
        return handshake.when.test(context)
    except RenderError as exc:
        logger.debug(
            "handshake %s of %s did not match: %s",
            handshake.name,
            route.qualified_name,
            exc,
        )
        return False


def _check_token(handshake: HandshakeConfig, context: dict[str, Any]) -> None:
    if handshake.token is None:
        return
    try:
        given = handshake.token.render(context)
    except RenderError:
        given = ""
    expected = [secret.encode() for secret in handshake.secrets]
    if not given or not matches_any(expected, [given.encode("utf-8", "replace")]):
        raise Forbidden(
            f"handshake {handshake.name!r}: the verify token does not match"
        )


def _hmac_function(secrets: tuple[str, ...]) -> Callable[..., str]:
    def compute(text: Any, algorithm: str = "sha256", encoding: str = "hex") -> str:
        if not secrets:
            raise ValueError("hmac() needs the handshake's 'secret'")
        digest = ALGORITHMS.get(str(algorithm).lower())
        if digest is None:
            raise ValueError(f"hmac() algorithm must be one of {', '.join(ALGORITHMS)}")
        mac = hmac.new(secrets[0].encode(), str(text).encode(), digest).digest()
        return base64.b64encode(mac).decode() if encoding == "base64" else mac.hex()

    return compute
