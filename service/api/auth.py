"""Bearer-token auth and the loopback-only rule for servers without a token.

With ``AAT_API_TOKEN`` set, every route except ``GET /v1/health`` needs
``Authorization: Bearer <token>``, compared in constant time (:func:`hmac.compare_digest`).
Without a token the server must listen on loopback only (:func:`check_bind` refuses anything
else at start) and answers only loopback clients that address it by a loopback name, which
also shuts out DNS-rebinding pages in a browser.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request
from fastapi.security import HTTPBearer

from service.api.problems import ApiError
from service.core.errors import ConfigError
from service.settings import Settings

bearer_scheme = HTTPBearer(auto_error=False, description="AAT_API_TOKEN as a bearer token")

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1``)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings) -> None:
    """Refuse to listen beyond loopback without a token (raises :class:`ConfigError`)."""
    if is_loopback(host) or _token(settings):
        return
    raise ConfigError(
        f"refusing to listen on {host} without a token: anyone on the network could submit "
        "jobs; set AAT_API_TOKEN (e.g. `export AAT_API_TOKEN=$(openssl rand -hex 32)`) or "
        "listen on 127.0.0.1",
        code="insecure_bind",
    )


def _token(settings: Settings) -> bytes | None:
    if settings.api_token is None:
        return None
    value = settings.api_token.get_secret_value()
    return value.encode() if value else None


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header.split("]")[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def authorize(request: Request, settings: Settings) -> None:
    """Raise a 401/403 :class:`ApiError` unless the request may use the API."""
    token = _token(settings)
    if token is None:
        client = request.client.host if request.client else ""
        host = _host_name(request.headers.get("host", ""))
        if not is_loopback(client) or (host and not is_loopback(host)):
            raise ApiError(403, "forbidden",
                           "this server has no AAT_API_TOKEN and answers only loopback "
                           "requests to 127.0.0.1 or localhost; set a token to serve others")
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "unauthorized",
                       "missing bearer token; send 'Authorization: Bearer <AAT_API_TOKEN>'")
    if not hmac.compare_digest(given.strip().encode(), token):
        raise ApiError(401, "unauthorized",
                       "wrong API token; use the value of AAT_API_TOKEN on the server")
