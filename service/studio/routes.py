"""The studio's routes: pages, the login form, static files and the security headers.

Pages are ``/`` (new job), ``/animate`` (a sprite into a spritesheet), ``/jobs`` (queue and
history), ``/jobs/{id}`` (job view: the tile grid of an upscale job, the frame strip and
player of an animate job), ``/loras`` and ``/system``; each is a template whose ES module
reads and changes everything through ``/v1/...``. ``/docs`` is the API's interactive
documentation (Swagger UI), gated like the pages. With ``AAT_API_TOKEN`` set, a page request
without a valid session goes to ``/login``, whose form exchanges the token for the session cookie the API accepts alongside
bearer tokens (:mod:`service.api.auth`). Every response except the interactive API docs gets a
Content-Security-Policy without inline scripts or styles, and framing is denied everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.auth import (
    SESSION_COOKIE,
    SESSION_TTL_S,
    authorize,
    check_origin,
    end_session,
    new_session,
    token_matches,
)
from service.api.health import package_version
from service.api.problems import ApiError
from service.core.errors import AatError
from service.settings import Settings
from service.studio.form import animate_fields, form_fields

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
_NO_CSP = ("/docs",)  # Swagger UI loads its own scripts; it is still not frameable

router = APIRouter(include_in_schema=False)
#: The login form is the one body anyone may send: a token and a path, a few kB urlencoded;
#: more is refused (413) before it is read.
LOGIN_MAX_BYTES = 32 * 1024


class SecurityHeaders:
    """ASGI middleware: CSP (except the API docs), frame denial, nosniff, same-origin referrer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with_csp = not str(scope.get("path", "")).startswith(_NO_CSP)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-frame-options", b"DENY"),
                            (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"same-origin")]
                if with_csp:
                    headers.append((b"content-security-policy", CSP.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI) -> None:
    """Mount the studio on ``app``: pages, static files and the security headers."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="studio-static")
    app.add_middleware(SecurityHeaders)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _token_set(settings: Settings) -> bool:
    return bool(settings.api_token and settings.api_token.get_secret_value())


def _refused(request: Request) -> Response | None:
    """None for an authorised user; the way to the login form for anyone else (with a
    token); raises 403 problem+json for non-loopback clients (without one)."""
    try:
        authorize(request, _settings(request))
    except ApiError as exc:
        if exc.http_status != 401:
            raise
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)
    return None


def _page(request: Request, name: str, title: str, **context: Any) -> Response:
    """The page ``name`` for an authorised user (see :func:`_refused` for anyone else)."""
    settings = _settings(request)
    refused = _refused(request)
    if refused is not None:
        return refused
    return templates.TemplateResponse(request=request, name=f"{name}.html", context={
        "page": name, "title": title, "v": package_version(),
        "token_set": _token_set(settings), **context})


@router.get("/", response_class=HTMLResponse)
def new_job_page(request: Request) -> Response:
    return _page(request, "new", "New job", fields=form_fields())


@router.get("/animate", response_class=HTMLResponse)
def animate_page(request: Request) -> Response:
    return _page(request, "animate", "Animate", fields=animate_fields())


@router.get("/jobs", response_class=HTMLResponse)
def queue_page(request: Request) -> Response:
    return _page(request, "queue", "Queue")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str) -> Response:
    job_id = job_id[:64]
    refused = _refused(request)
    if refused is not None:
        return refused
    # Which view fits the job: an animate job's frames, or an upscale job's tiles (also for
    # an unknown id: that view shows the API's 404 in its error box).
    try:
        animate = request.app.state.jobs.get(job_id).kind == "animate"
    except AatError:  # no such job: the page's own API call shows the 404
        animate = False
    return _page(request, "animjob" if animate else "job", "Job " + job_id, job_id=job_id)


@router.get("/docs", response_class=HTMLResponse)
def api_docs_page(request: Request) -> Response:
    """The interactive API documentation (Swagger UI over ``/openapi.json``), for users who
    may use the API."""
    refused = _refused(request)
    if refused is not None:
        return refused
    return get_swagger_ui_html(openapi_url="/openapi.json", title="AI Assets Toolbox API")


@router.get("/loras", response_class=HTMLResponse)
def loras_page(request: Request) -> Response:
    return _page(request, "loras", "LoRAs")


@router.get("/system", response_class=HTMLResponse)
def system_page(request: Request) -> Response:
    return _page(request, "system", "System")


def _safe_next(value: str | None) -> str:
    """Only a path on this server (never ``//host`` or a full URL) may follow a login."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _login_form(request: Request, next_url: str, error: str = "", status: int = 200
                ) -> Response:
    return templates.TemplateResponse(request=request, name="login.html", status_code=status,
                                      context={"page": "login", "title": "Log in",
                                               "v": package_version(), "next": next_url,
                                               "error": error, "token_set": False})


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    if not _token_set(_settings(request)):
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_form(request, _safe_next(next))


@router.post("/login", response_class=HTMLResponse, max_body_size=LOGIN_MAX_BYTES)
def login(request: Request, token: Annotated[str, Form(max_length=4096)] = "",
          next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
    settings = _settings(request)
    check_origin(request, settings)
    if not _token_set(settings):
        return RedirectResponse(_safe_next(next), status_code=303)
    if not token_matches(settings, token):
        return _login_form(request, _safe_next(next), "That is not this server's API token "
                           "(AAT_API_TOKEN).", status=401)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, new_session(settings), max_age=SESSION_TTL_S,
                        httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    check_origin(request, _settings(request))
    end_session(_settings(request), request.cookies.get(SESSION_COOKIE) or "")
    response = RedirectResponse("/login" if _token_set(_settings(request)) else "/",
                                status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
