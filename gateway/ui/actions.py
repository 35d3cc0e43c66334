"""The dashboard's buttons: retry deliveries, pause, resume and re-key subscriptions.

Each button calls the JSON API inside this process, with the API token, so
the dashboard and the API check and do exactly the same things. The API's
4xx messages are shown on the page.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from litestar import Request, Response, post
from litestar.response import Redirect

from gateway.ui.auth import keys_of
from gateway.ui.render import render

logger = logging.getLogger(__name__)

# A bulk retry sends pages of this many deliveries, and stops after the
# limits below; pressing the button again goes on with what is left.
RETRY_PAGE = 500
RETRY_MAX_PAGES = 100
RETRY_MAX_SECONDS = 60.0
_MAX_ID_LENGTH = 200
_RETRY_FILTERS = ("status", "subscription", "event_type", "since", "until")


async def call_api(
    request: Request[Any, Any, Any], method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """Send a request to this app's API and return its status and JSON body."""
    token = keys_of(request).token.decode("utf-8", "surrogateescape")
    transport = httpx.ASGITransport(app=request.app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport, base_url="http://mfo-dashboard", timeout=RETRY_MAX_SECONDS
    ) as client:
        response = await client.request(
            method, path, json=body, headers={"authorization": f"Bearer {token}"}
        )
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, {"detail": response.text[:500]}


def _problem(body: Any) -> str:
    if isinstance(body, dict):
        detail = str(body.get("detail") or "the request failed")
        errors = body.get("errors") or []
        extra = "; ".join(
            f"{e.get('field', '')}: {e.get('message', '')}"
            for e in errors
            if isinstance(e, dict)
        )
        return f"{detail} ({extra})" if extra else detail
    return "the request failed"


def _back(path: str, notice: str, query: dict[str, str] | None = None) -> Redirect:
    params = {**(query or {}), "notice": notice}
    return Redirect(f"{path}?{urlencode(params)}", status_code=303)


@post("/deliveries/{delivery_id:str}/retry", status_code=303)
async def retry_delivery(
    request: Request[Any, Any, Any], delivery_id: str
) -> Response[Any]:
    """Send one finished delivery again."""
    if "\x00" in delivery_id or len(delivery_id) > _MAX_ID_LENGTH:
        return render(request, "error.html", 404, message="delivery not found")
    status, body = await call_api(
        request, "POST", f"/api/deliveries/{quote(delivery_id, safe='')}/retry"
    )
    notice = "Retry queued." if status == 202 else f"Not retried: {_problem(body)}"
    return _back(f"/ui/deliveries/{quote(delivery_id, safe='')}", notice)


@post("/deliveries/retry", status_code=303)
async def retry_deliveries(request: Request[Any, Any, Any]) -> Response[Any]:
    """Send again every delivery that the submitted filter matches, page by page."""
    form = await request.form()
    filters = {
        name: value
        for name in _RETRY_FILTERS
        if isinstance(value := form.get(name), str) and value.strip()
    }
    if filters.get("status") not in ("failed", "succeeded"):
        return render(
            request,
            "error.html",
            400,
            message="A bulk retry needs the status filter set to failed or succeeded.",
        )
    retried, after, deadline = 0, None, time.monotonic() + RETRY_MAX_SECONDS
    for _ in range(RETRY_MAX_PAGES):
        body = {**filters, "limit": RETRY_PAGE, "after": after}
        status, result = await call_api(request, "POST", "/api/deliveries/retry", body)
        if status != 200:
            return _back(
                "/ui/deliveries", f"Retry stopped: {_problem(result)}", filters
            )
        retried += int(result.get("retried", 0))
        after = result.get("next_after")
        if after is None or time.monotonic() > deadline:
            break
    logger.info("dashboard bulk retry of %s queued %d deliveries", filters, retried)
    more = " More match: press the button again." if after is not None else ""
    # The retried deliveries are pending now, so the page shows that status.
    shown = {**filters, "status": "pending"}
    return _back("/ui/deliveries", f"{retried} deliveries queued again.{more}", shown)


@post("/subscriptions/{sub_id:str}/{action:str}", status_code=303)
async def change_subscription(
    request: Request[Any, Any, Any], sub_id: str, action: str
) -> Response[Any]:
    """Pause, resume or rotate the secret of a subscription."""
    if action not in ("pause", "resume", "rotate-secret"):
        return render(request, "error.html", 404, message=f"no action {action!r}")
    if "\x00" in sub_id or len(sub_id) > _MAX_ID_LENGTH:
        return render(request, "error.html", 404, message="subscription not found")
    path = f"/api/notifications/subscriptions/{quote(sub_id, safe='')}/{action}"
    body_sent: dict[str, Any] | None = {} if action == "rotate-secret" else None
    status, body = await call_api(request, "POST", path, body_sent)
    if status != 200:
        return _back("/ui/subscriptions", f"Not done: {_problem(body)}")
    if action == "rotate-secret":
        # The new secret is shown once, on this page only, for the receiver's owner.
        return render(request, "rotated.html", subscription=body)
    done = "paused" if action == "pause" else "resumed"
    name = body.get("name") or body.get("id")
    return _back("/ui/subscriptions", f"Subscription {name} {done}.")
