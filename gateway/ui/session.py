"""Sign-in sessions and CSRF tokens for the dashboard.

Signing in checks the API token once. The cookie then holds an expiry and
an HMAC of it keyed by the token, never the token itself, so a stolen
cookie does not open the API, and changing `MFO_API_TOKEN` ends every
session. Each form carries a CSRF token derived from the session cookie,
and the cookie is SameSite=Strict, so another site can neither read the
token nor make the browser send the cookie with a cross-site POST.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

COOKIE_NAME = "mfo_ui_session"
SESSION_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class SessionKeys:
    """Keys derived from the API token, one per use."""

    token: bytes
    session: bytes
    csrf: bytes

    @classmethod
    def from_token(cls, token: str) -> SessionKeys:
        raw = token.encode("utf-8", "surrogateescape")
        return cls(
            token=raw,
            session=hashlib.sha256(b"mfo ui session\0" + raw).digest(),
            csrf=hashlib.sha256(b"mfo ui csrf\0" + raw).digest(),
        )

    def token_matches(self, given: str) -> bool:
        return hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), self.token
        )

    def new_session(self, now: float | None = None) -> str:
        """Return a cookie value that is valid for SESSION_SECONDS."""
        expires = int((now or time.time()) + SESSION_SECONDS)
        return f"{expires}.{self._sign(str(expires))}"

    def session_valid(self, value: str | None, now: float | None = None) -> bool:
        if not value:
            return False
        expires, _, signature = value.partition(".")
        if not expires.isdigit() or len(expires) > 12:
            return False
        if not hmac.compare_digest(signature, self._sign(expires)):
            return False
        return int(expires) > (now or time.time())

    def csrf_token(self, session: str) -> str:
        return hmac.new(self.csrf, session.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, session: str | None, given: str | None) -> bool:
        if not session or not given:
            return False
        return hmac.compare_digest(self.csrf_token(session), given)

    def _sign(self, message: str) -> str:
        return hmac.new(self.session, message.encode(), hashlib.sha256).hexdigest()
