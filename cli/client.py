"""Call a running mfo server's API with the operator's token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from gateway.api.auth import read_api_token, token_path


class CliError(Exception):
    """Raise with a one-line message the CLI prints before exiting 1."""


class ApiClient:
    def __init__(self, base_url: str, settings: Any) -> None:
        token = settings.api_token or read_api_token(settings.data_dir)
        if not token:
            raise CliError(
                f"no API token in {token_path(settings.data_dir)}: set MFO_API_TOKEN,"
                " or set MFO_DATA_DIR to the data folder of the running `mfo serve`"
                " (it writes the token there when it starts)"
            )
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base_url,
            headers={"authorization": f"Bearer {token}"},
            timeout=60,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot reach {self.base_url}: {exc}; is `mfo serve` running? (--url sets"
                " the address)"
            ) from None
        if response.status_code == 401:
            raise CliError("the server rejected the API token; check MFO_API_TOKEN")
        if not response.is_success:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise CliError(
                f"{method} {path} failed with {response.status_code}: {detail}"
            )
        return response.json()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        return self._call("GET", path, params=clean)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, json=body)

    def retry_deliveries(
        self, body: dict[str, Any], batch_size: int
    ) -> Iterator[dict[str, Any]]:
        """Retry deliveries one page at a time, yielding each page's result.

        Each page is a request of its own, so stopping between pages leaves
        every retried delivery queued and the rest untouched.
        """
        after = None
        while True:
            page = self.post(
                "/api/deliveries/retry", {**body, "limit": batch_size, "after": after}
            )
            yield page
            after = page.get("next_after")
            if not after:
                return

    def list_deliveries(
        self, params: dict[str, Any], limit: int
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        after = None
        while len(rows) < limit:
            page = self.get(
                "/api/deliveries",
                {**params, "after": after, "limit": min(1000, limit - len(rows))},
            )
            rows.extend(page["deliveries"])
            after = page.get("next_after")
            if not after:
                break
        return rows
