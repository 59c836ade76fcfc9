"""Who may use the API: bearer token or studio session, loopback-only without a token, and
the Origin rule for state-changing requests.

With ``AAT_API_TOKEN`` set, every route except ``GET /v1/health`` needs
``Authorization: Bearer <token>`` (compared in constant time, :func:`hmac.compare_digest`) or
the studio's session cookie (:data:`SESSION_COOKIE`, issued by the login form in exchange for
the token: ``expiry.nonce.HMAC-SHA256(token, expiry, nonce)``, httpOnly, SameSite=Strict;
logging out ends the session on the server (:func:`end_session`), changing the token ends
every session). Without a token the server must listen on loopback only
(:func:`check_bind` refuses anything else at start) and answers only loopback clients that
address it by a loopback name, which also shuts out DNS-rebinding pages in a browser.

A browser sends a cross-site form POST without a preflight, so in both modes a state-changing
request (any method but GET/HEAD/OPTIONS) is refused when it says ``Sec-Fetch-Site:
cross-site`` or carries an ``Origin`` other than the server's own (``Host``) or one listed in
``AAT_CORS_ORIGINS``. Clients that send neither header (curl, scripts, the CLI) are unaffected.

Both rules are applied by :class:`AuthGate` to every API path (:func:`gated`) before the
request's body is read: FastAPI reads and parses a JSON or form body before a route's
dependencies run, so a guard that is only a dependency would let anyone make the server buffer
and validate a body of any size. The routers' :func:`~service.api.deps.require_auth`
dependency stays, for the OpenAPI document's security scheme.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.problems import ApiError, error_response
from service.core.atomic import atomic_write
from service.core.errors import ConfigError
from service.settings import Settings

bearer_scheme = HTTPBearer(auto_error=False, description="AAT_API_TOKEN as a bearer token")

SESSION_COOKIE = "aat_session"
SESSION_TTL_S = 7 * 24 * 3600
MIN_TOKEN_CHARS = 16
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
    """Refuse to listen beyond loopback without a strong token (raises :class:`ConfigError`)."""
    if is_loopback(host):
        return
    raw = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    if not raw:
        raise ConfigError(
            f"refusing to listen on {host} without a token: anyone on the network could submit "
            "jobs; set AAT_API_TOKEN (e.g. `export AAT_API_TOKEN=$(openssl rand -hex 32)`) or "
            "listen on 127.0.0.1",
            code="insecure_bind",
        )
    if len(raw) < MIN_TOKEN_CHARS or any(c.isspace() for c in raw):
        raise ConfigError(
            f"refusing to listen on {host} with a weak AAT_API_TOKEN: it needs at least "
            f"{MIN_TOKEN_CHARS} characters and no whitespace (e.g. `export "
            "AAT_API_TOKEN=$(openssl rand -hex 32)`)",
            code="weak_token",
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


# ---- sessions (the studio's login) -----------------------------------------------------------


def _signature(token: bytes, expires: int, nonce: str) -> str:
    return hmac.new(token, f"aat-session:{expires}:{nonce}".encode(), hashlib.sha256).hexdigest()


def token_matches(settings: Settings, given: str) -> bool:
    """Whether ``given`` is the server's token (constant time; False without a token)."""
    token = _token(settings)
    return token is not None and hmac.compare_digest(given.strip().encode(), token)


def new_session(settings: Settings, now: float | None = None) -> str:
    """A session cookie value for a user who has just shown the token:
    ``expiry.nonce.signature`` (the nonce makes every login's session its own)."""
    token = _token(settings)
    if token is None:
        raise ConfigError("sessions need AAT_API_TOKEN", code="config_invalid")
    expires = int(now if now is not None else time.time()) + SESSION_TTL_S
    nonce = secrets.token_hex(16)
    return f"{expires}.{nonce}.{_signature(token, expires, nonce)}"


def session_valid(settings: Settings, value: str, now: float | None = None) -> bool:
    """True for an unexpired cookie made by :func:`new_session` with the current token that
    has not been ended by :func:`end_session`."""
    token = _token(settings)
    stamp, nonce, sig = (value.split(".") + ["", ""])[:3]
    if token is None or not stamp.isdigit() or len(stamp) > 12 or len(nonce) != 32:
        return False
    expires = int(stamp)
    if expires < (now if now is not None else time.time()):
        return False
    if not hmac.compare_digest(sig.encode(), _signature(token, expires, nonce).encode()):
        return False
    return not _ended_marker(settings, nonce).exists()


def _ended_marker(settings: Settings, nonce: str) -> Path:
    return settings.data_dir / "sessions-ended" / hashlib.sha256(nonce.encode()).hexdigest()


def end_session(settings: Settings, value: str, now: float | None = None) -> None:
    """Log out: the session ``value`` stops working on this server, for every copy of its
    cookie. A marker file per ended session (``<data_dir>/sessions-ended/``, holding its
    expiry) is kept until the session would have expired anyway."""
    if not session_valid(settings, value, now):
        return
    stamp, nonce, _ = value.split(".")
    folder = settings.data_dir / "sessions-ended"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(_ended_marker(settings, nonce), stamp.encode())
    moment = now if now is not None else time.time()
    for marker in folder.iterdir():  # forget the ends of sessions that have expired since
        try:
            expired = int(marker.read_text() or "0") < moment
        except (OSError, ValueError):
            continue
        if expired:
            marker.unlink(missing_ok=True)


# ---- the checks ------------------------------------------------------------------------------


def check_origin(request: Request, settings: Settings) -> None:
    """Refuse a state-changing request that a browser says came from another site (403)."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    allowed = set(settings.cors_origins)
    if origin is not None:
        if origin in allowed:
            return
        own = request.headers.get("host", "")
        if origin == "null" or not own or urlsplit(origin).netloc.lower() != own.lower():
            raise ApiError(403, "cross_origin",
                           f"refusing a {request.method} from the web page at {origin}: only "
                           "this server's own pages (or AAT_CORS_ORIGINS) may change things")
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise ApiError(403, "cross_origin",
                       f"refusing a cross-site {request.method}: only this server's own pages "
                       "(or AAT_CORS_ORIGINS) may change things")


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
        check_origin(request, settings)
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        if not token_matches(settings, given):
            raise ApiError(401, "unauthorized",
                           "wrong API token; use the value of AAT_API_TOKEN on the server")
    elif not session_valid(settings, request.cookies.get(SESSION_COOKIE) or ""):
        raise ApiError(401, "unauthorized",
                       "missing bearer token; send 'Authorization: Bearer <AAT_API_TOKEN>'")
    check_origin(request, settings)


# ---- the gate --------------------------------------------------------------------------------

_OPEN_PATHS = frozenset({"/v1/health"})
AUTHORIZED = "aat_authorized"  # request state set by the gate once it let a request through
_GATED_PATHS = frozenset({"/metrics", "/openapi.json"})


def gated(path: str) -> bool:
    """Whether :class:`AuthGate` checks requests for ``path``: the API (``/v1/...``) but
    liveness, its OpenAPI document and the metrics. Studio pages check for themselves (a browser without a session
    is sent to the login form)."""
    return path not in _OPEN_PATHS and (path.startswith("/v1/") or path in _GATED_PATHS)


class AuthGate:
    """ASGI middleware: :func:`authorize` each :func:`gated` request before the app reads its
    body; a refusal is the usual problem+json 401/403."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and gated(scope.get("path", "")):
            request = Request(scope)
            try:
                authorize(request, request.app.state.settings)
            except ApiError as exc:
                await error_response(exc)(scope, receive, send)
                return
            scope.setdefault("state", {})[AUTHORIZED] = True  # require_auth need not ask again
        await self.app(scope, receive, send)
