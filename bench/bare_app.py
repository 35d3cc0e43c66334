"""Serve a bare Litestar route that parses a JSON body and answers 202.

Usage: python bench/bare_app.py PORT

It is the throughput baseline for the gateway's ingress: the same framework
and the same uvicorn settings as `mfo serve`, with none of the gateway's
work (verification, schema, storage, queue).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import uvicorn
from litestar import Litestar, Request, Response, post


@post("/webhooks/unipile/notify", status_code=202)
async def receive(request: Request[Any, Any, Any]) -> Response[bytes]:
    payload = json.loads(await request.body())
    body = json.dumps({"email_id": payload.get("email_id")}).encode()
    return Response(body, status_code=202, media_type="application/json")


app = Litestar([receive])


if __name__ == "__main__":
    # The settings `mfo serve` passes to uvicorn.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )
