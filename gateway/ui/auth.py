"""Sign in and out of the dashboard, and guard every other page.

`guard_request` runs before each dashboard handler: it lets the sign-in page
and static files through, redirects a browser without a valid session to
the sign-in page, and rejects a POST whose CSRF token or Origin is wrong.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any
from urllib.parse import quote, urlsplit

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect

from gateway.ui.render import render
from gateway.ui.session import COOKIE_NAME, CSRF_FIELD, SESSION_SECONDS, SessionKeys

logger = logging.getLogger(__name__)

PUBLIC_PATHS = ("/ui/login", "/ui/static/")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def keys_of(request: Request[Any, Any, Any]) -> SessionKeys:
    keys: SessionKeys = request.scope["mfo_ui_keys"]  # type: ignore[typeddict-item]
    return keys


def _same_origin(request: Request[Any, Any, Any]) -> bool:
    """Tell whether a POST came from a page of this host, when the browser says."""
    origin = request.headers.get("origin")
    if origin is None:
        # Without Origin, as from curl, the CSRF token alone decides.
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _safe_next(value: str | None) -> str:
    """Keep a post-sign-in target only when it is a dashboard path on this site."""
    if value and value.startswith("/ui") and not value.startswith("//"):
        return value
    return "/ui"


def build_guard(keys: SessionKeys) -> Any:
    """Build the before-request hook that every dashboard handler runs first."""

    async def guard_request(request: Request[Any, Any, Any]) -> Response[Any] | None:
        request.scope["mfo_ui_keys"] = keys  # type: ignore[typeddict-unknown-key]
        path = request.url.path
        if path.startswith(PUBLIC_PATHS):
            return None
        session = request.cookies.get(COOKIE_NAME)
        if not keys.session_valid(session):
            if request.method in UNSAFE_METHODS:
                return render(
                    request, "login.html", 401, error="Sign in again to continue."
                )
            target = path + (f"?{request.url.query}" if request.url.query else "")
            return Redirect(f"/ui/login?next={quote(target, safe='')}")
        assert session is not None
        request.scope["mfo_csrf"] = keys.csrf_token(session)  # type: ignore[typeddict-unknown-key]
        if request.method in UNSAFE_METHODS:
            form = await request.form()
            if not _same_origin(request) or not keys.csrf_valid(
                session, form.get(CSRF_FIELD)
            ):
                logger.warning(
                    "dashboard: rejected a POST to %s without a valid CSRF token", path
                )
                return render(
                    request,
                    "error.html",
                    403,
                    message="The form was stale or came from another site; reload the"
                    " page and try again.",
                )
        return None

    return guard_request


def _plain_http_warning(request: Request[Any, Any, Any]) -> str | None:
    """Warn when the browser will drop the Secure cookie: plain HTTP off loopback."""
    if request.url.scheme == "https":
        return None
    host = (request.url.hostname or "").strip("[]")
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (
        "This page came over plain HTTP, so the browser will not keep the"
        " sign-in cookie, which is Secure. Open the dashboard over HTTPS."
    )


@get("/login")
async def login_page(
    request: Request[Any, Any, Any], next: str | None = None
) -> Response[str]:
    """Show the sign-in form."""
    return render(
        request,
        "login.html",
        next=_safe_next(next),
        warning=_plain_http_warning(request),
    )


@post("/login", status_code=303)
async def sign_in(request: Request[Any, Any, Any]) -> Response[Any]:
    """Check the API token and start a session."""
    form = await request.form()
    token = form.get("token")
    target = _safe_next(form.get("next"))
    keys = keys_of(request)
    if (
        not _same_origin(request)
        or not isinstance(token, str)
        or not keys.token_matches(token)
    ):
        logger.warning(
            "dashboard sign-in rejected from %s",
            request.client.host if request.client else "an unknown address",
        )
        return render(
            request,
            "login.html",
            401,
            next=target,
            error="That is not the API token of this gateway.",
            warning=_plain_http_warning(request),
        )
    cookie = Cookie(
        key=COOKIE_NAME,
        value=keys.new_session(),
        path="/ui",
        max_age=SESSION_SECONDS,
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return Redirect(target, status_code=303, cookies=[cookie])


@post("/logout", status_code=303)
async def sign_out() -> Response[Any]:
    """End the session by dropping its cookie."""
    cookie = Cookie(
        key=COOKIE_NAME,
        value="",
        path="/ui",
        max_age=0,
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return Redirect("/ui/login", status_code=303, cookies=[cookie])
