"""HTTP from steps: ``cerebelum.http.get/post/put/delete/request``.

Inside the engine a request goes through the standard
``wasi:http/outgoing-handler``: it is sent only if its host is on the
tenant's allow-list, and it is journaled with its whole response, so when
the step replays after a crash the recorded response comes back and the
request is not sent again. Locally (plain CPython) it is sent with
``urllib``.

::

    from cerebelum import http, step

    @step
    async def create_droplet(context, inputs):
        token = context.secret("do-token")
        r = http.post("https://api.example.com/v2/droplets",
                      json={"name": inputs["name"]},
                      headers={"authorization": f"Bearer {token}"})
        r.raise_for_status()
        return r.json()
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Any, Mapping

from ._runtime import current
from .errors import HttpError


@dataclass
class Response:
    """A response with its whole body."""

    status: int
    #: Header names in lower case; the first value of each.
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise HttpError(f"the response body is not JSON: {e}", "invalid-output") from None

    def raise_for_status(self) -> "Response":
        """This response, or :class:`HttpError` (kind ``http-status``) for 4xx/5xx."""
        if self.status >= 400:
            raise HttpError(f"the server answered {self.status}: {self.text[:200]}",
                            "http-status")
        return self


def request(method: str, url: str, *, headers: Mapping[str, str] | None = None,
            json: Any = None, data: bytes | str | None = None) -> Response:
    """Sends ``method url`` from the running step; returns the response.

    ``json`` sends a JSON body (with ``content-type: application/json``),
    ``data`` raw bytes or text. Raises :class:`HttpError`: kind
    ``http-denied`` when the host is not on the tenant's allow-list,
    ``http-response-too-large`` past the tenant's response limit, ``http``
    for network errors.
    """
    ctx = current()
    if not url.startswith(("http://", "https://")):
        raise HttpError(f"{url!r} is not an http:// or https:// URL", "invalid-input")
    pairs = [(k.lower(), str(v)) for k, v in (headers or {}).items()]
    if json is not None and data is not None:
        raise HttpError("give either json= or data=, not both", "invalid-input")
    body = b""
    if json is not None:
        body = _json.dumps(json).encode()
        if not any(k == "content-type" for k, _ in pairs):
            pairs.append(("content-type", "application/json"))
    elif data is not None:
        body = data.encode() if isinstance(data, str) else bytes(data)
    status, got, raw = ctx._runtime.http(method.upper(), url, pairs, body)
    merged: dict[str, str] = {}
    for name, value in got:
        merged.setdefault(name.lower(), value)
    return Response(status, merged, raw)


def get(url: str, **kwargs) -> Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs) -> Response:
    return request("POST", url, **kwargs)


def put(url: str, **kwargs) -> Response:
    return request("PUT", url, **kwargs)


def delete(url: str, **kwargs) -> Response:
    return request("DELETE", url, **kwargs)
