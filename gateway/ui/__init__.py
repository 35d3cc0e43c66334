"""The dashboard at /ui: server-rendered pages over the gateway's database.

Operators sign in with the API token; see `gateway.ui.session` for how the
session cookie and CSRF tokens are made.
"""

from __future__ import annotations

from litestar.router import Router

from gateway.ui import actions, auth, pages
from gateway.ui.session import SessionKeys


def build_ui_router(token: str) -> Router:
    """Build the /ui router, whose pages need a session signed by `token`."""
    return Router(
        path="/ui",
        route_handlers=[
            auth.login_page,
            auth.sign_in,
            auth.sign_out,
            pages.overview,
            pages.counters_fragment,
            pages.events_page,
            pages.event_page,
            pages.deliveries_page,
            pages.delivery_page,
            pages.subscriptions_page,
            pages.runs_page,
            pages.run_page,
            pages.static_file,
            actions.retry_delivery,
            actions.retry_deliveries,
            actions.change_subscription,
        ],
        before_request=auth.build_guard(SessionKeys.from_token(token)),
        exception_handlers={pages.BadFilter: pages.bad_filter},
        include_in_schema=False,
    )
