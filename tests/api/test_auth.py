"""Auth over real HTTP: bearer token (missing, wrong, right), the loopback-only rule without a
token, refusing to listen beyond loopback without a token, CORS off by default; and the other
guards of the HTTP edge: refusals before a body is read, body caps, sessions ending at logout,
media types that never come from a client's file name."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import pytest
from apitest_helpers import png_bytes

TOKEN = "tok-" + "x" * 40


def test_token_missing_wrong_and_right(queued_server) -> None:
    server = queued_server(api_token=TOKEN)
    with server.client(token=None) as anon:
        assert anon.get("/v1/health").status_code == 200, "liveness needs no token"
        for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/ready"), ("GET", "/metrics"),
                             ("GET", "/v1/jobs/j_x/events"), ("POST", "/v1/jobs")):
            resp = anon.request(method, path)
            assert resp.status_code == 401, path
            assert resp.headers["www-authenticate"] == "Bearer"
            assert resp.json()["code"] == "unauthorized"
        sent = anon.post("/v1/jobs", content=png_bytes(), headers={"Content-Type": "image/png"})
        assert sent.status_code == 401
        assert "missing bearer token" in sent.json()["detail"]
    for bad in ("wrong", TOKEN + "x", TOKEN[:-1]):
        with server.client(token=bad) as wrong:
            resp = wrong.get("/v1/jobs")
            assert resp.status_code == 401 and "wrong API token" in resp.json()["detail"]
    with server.client(token=None, headers={"Authorization": f"Basic {TOKEN}"}) as basic:
        assert basic.get("/v1/jobs").status_code == 401
    with server.client() as right:
        assert right.get("/v1/jobs").status_code == 200
        assert right.post("/v1/jobs", content=png_bytes(),
                          headers={"Content-Type": "image/png"}).status_code == 202
    with server.client() as right:
        assert len(right.get("/v1/jobs").json()["items"]) == 1, "refused uploads left no job"


def test_without_token_only_loopback_names_are_served(queued_server) -> None:
    server = queued_server()
    with server.client() as http:
        assert http.get("/v1/jobs").status_code == 200
        assert http.get("/v1/jobs", headers={"Host": "localhost:1234"}).status_code == 200
        rebound = http.get("/v1/jobs", headers={"Host": "attacker.example"})
        assert rebound.status_code == 403
        assert "AAT_API_TOKEN" in rebound.json()["detail"]


def test_check_bind_refuses_public_hosts_without_a_token() -> None:
    from service.api.auth import check_bind
    from service.core.errors import ConfigError
    from service.settings import Settings

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, Settings(api_token=None))
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        with pytest.raises(ConfigError) as err:
            check_bind(host, Settings(api_token=None))
        assert err.value.code == "insecure_bind"
        check_bind(host, Settings(api_token=TOKEN))


@pytest.mark.parametrize("command", ["up", "serve"])
def test_cli_refuses_to_listen_publicly_without_token(command: str, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AAT_")}
    env.update(AAT_DATA_DIR=str(tmp_path), AAT_BROKER_URL="redis://127.0.0.1:6379/0")
    proc = subprocess.run([sys.executable, "-m", "service.cli", command, "--host", "0.0.0.0",
                           "--port", "0"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3  # setup: service.cli.errors.SETUP
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error [insecure_bind]: refusing to listen on 0.0.0.0")
    assert "AAT_API_TOKEN" in proc.stderr
    assert not (tmp_path / "aat.db").exists(), "nothing was started"


def test_cors_is_off_by_default_and_opt_in(queued_server) -> None:
    origin = {"Origin": "http://editor.example", "Access-Control-Request-Method": "GET"}
    with queued_server().client() as http:
        assert "access-control-allow-origin" not in http.get("/v1/health", headers=origin).headers
    allowed = queued_server(cors_origins=["http://editor.example"])
    with allowed.client() as http:
        pre = http.options("/v1/jobs", headers=origin)
        assert pre.headers["access-control-allow-origin"] == "http://editor.example"


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bearer check goes through hmac.compare_digest (no early-exit `==` whose timing
    leaks how much of a guessed token is right)."""
    import hmac

    from starlette.requests import Request

    from service.api import auth
    from service.api.problems import ApiError
    from service.settings import Settings

    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)

    def request(token: str) -> Request:
        return Request({"type": "http", "method": "GET", "path": "/v1/jobs",
                        "client": ("10.0.0.5", 40000),
                        "headers": [(b"authorization", f"Bearer {token}".encode())]})

    settings = Settings(api_token=TOKEN)
    with pytest.raises(ApiError) as refused:
        auth.authorize(request(TOKEN[:-1] + "y"), settings)
    assert refused.value.http_status == 401 and refused.value.code == "unauthorized"
    auth.authorize(request(TOKEN), settings)  # accepted, from a non-loopback client
    assert seen == [((TOKEN[:-1] + "y").encode(), TOKEN.encode()), (TOKEN.encode(),) * 2]


# ---- cross-site requests, weak tokens, studio sessions ---------------------------------------


def _jobs(http) -> int:
    return len(http.get("/v1/jobs").json()["items"])


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://127.0.0.1:1"},  # another port on loopback is another origin
    {"Sec-Fetch-Site": "cross-site"},
])
def test_without_token_cross_site_writes_are_refused(queued_server, headers) -> None:
    """A page on another site cannot make the artist's browser submit, cancel or delete."""
    server = queued_server()
    with server.client() as http:
        resp = http.post("/v1/jobs", content=png_bytes(),
                         headers={"Content-Type": "image/png", **headers})
        assert resp.status_code == 403, resp.text
        assert resp.json()["code"] == "cross_origin"
        form = http.post("/v1/jobs", files={"file": ("x.png", png_bytes(), "image/png")},
                         data={"target": '{"repo": "game", "path": "a.png", '
                                         '"naming": "replace"}'}, headers=headers)
        assert form.status_code == 403
        assert _jobs(http) == 0, "a refused request created a job"
        assert http.get("/v1/jobs", headers=headers).status_code == 200, "reads stay allowed"


def test_same_origin_and_header_less_writes_still_work(queued_server) -> None:
    server = queued_server()
    own = server.url  # the page's own origin, as the browser sends it
    with server.client() as http:
        for headers in ({}, {"Origin": own, "Sec-Fetch-Site": "same-origin"},
                        {"Sec-Fetch-Site": "none"}):
            resp = http.post("/v1/jobs", content=png_bytes(seed=len(headers)),
                             headers={"Content-Type": "image/png", **headers})
            assert resp.status_code == 202, resp.text
    listed = queued_server(cors_origins=["http://editor.example"])
    with listed.client() as http:
        assert http.post("/v1/jobs", content=png_bytes(seed=9), headers={
            "Content-Type": "image/png", "Origin": "http://editor.example"}).status_code == 202


def test_weak_tokens_are_refused_for_public_binds() -> None:
    from service.api.auth import check_bind
    from service.core.errors import ConfigError
    from service.settings import Settings

    for weak in (" ", "x", "   x   ", "short-token", "a" * 20 + " " + "b" * 20, "\t" * 32):
        with pytest.raises(ConfigError) as err:
            check_bind("0.0.0.0", Settings(api_token=weak))
        assert err.value.code in ("weak_token", "insecure_bind"), weak
        check_bind("127.0.0.1", Settings(api_token=weak))  # loopback: the token is optional
    with pytest.raises(ConfigError) as blank:
        check_bind("0.0.0.0", Settings(api_token=""))
    assert blank.value.code == "insecure_bind"
    check_bind("0.0.0.0", Settings(api_token=TOKEN))


def test_cli_refuses_a_one_character_token_on_a_public_bind(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AAT_")}
    env.update(AAT_DATA_DIR=str(tmp_path), AAT_API_TOKEN="x")
    proc = subprocess.run([sys.executable, "-m", "service.cli", "up",
                           "--host", "0.0.0.0", "--port", "0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr  # setup: service.cli.errors.SETUP
    assert proc.stderr.strip().splitlines()[-1].startswith("error [weak_token]: refusing")


def test_login_gives_a_session_cookie_the_api_accepts(queued_server) -> None:
    server = queued_server(api_token=TOKEN)
    with server.client(token=None, follow_redirects=False) as anon:
        page = anon.get("/jobs")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fjobs"
        wrong = anon.post("/login", data={"token": "nope", "next": "/jobs"})
        assert wrong.status_code == 401 and "not this server" in wrong.text
        assert "aat_session" not in anon.cookies
        foreign = anon.post("/login", data={"token": TOKEN},
                            headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403
        ok = anon.post("/login", data={"token": TOKEN, "next": "//evil.example/x"})
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert anon.get("/v1/jobs").status_code == 200, "the cookie works like the bearer token"
        assert anon.get("/jobs").status_code == 200
        assert anon.post("/v1/jobs", content=png_bytes(), headers={
            "Content-Type": "image/png", "Origin": "http://evil.example"}).status_code == 403
        anon.cookies.set("aat_session", "9999999999." + "0" * 64)
        assert anon.get("/v1/jobs").status_code == 401, "a forged cookie is refused"


def test_sessions_expire_and_end_with_the_token() -> None:
    from service.api.auth import SESSION_TTL_S, new_session, session_valid
    from service.settings import Settings

    settings = Settings(api_token=TOKEN)
    cookie = new_session(settings, now=1000.0)
    assert session_valid(settings, cookie, now=1000.0 + SESSION_TTL_S - 1)
    assert not session_valid(settings, cookie, now=1000.0 + SESSION_TTL_S + 1)
    assert not session_valid(Settings(api_token=TOKEN + "2"), cookie, now=1000.0)
    assert not session_valid(Settings(api_token=None), cookie, now=1000.0)


def _reply_to_unsent_body(url: str, head: str) -> bytes:
    """The first bytes the server answers to ``head`` (request line and headers) announcing a
    10 GB body of which only a few bytes are sent; b"" when it waits for the body instead."""
    parsed = httpx.URL(url)
    with socket.create_connection((parsed.host, parsed.port), timeout=5) as sock:
        sock.sendall(head.encode() + b"Content-Length: 10000000000\r\n\r\n{\"tiles\": [")
        try:
            return sock.recv(200)
        except TimeoutError:
            return b""


@pytest.mark.parametrize("path", ["/v1/plan", "/v1/jobs/j_x/rerun", "/v1/models/imports",
                                  "/v1/jobs"])
def test_unauthorised_requests_are_refused_before_their_body_is_read(queued_server,
                                                                      path) -> None:
    """Without the token, or from another site's page, a request is answered at once: the
    server never buffers or parses a body for someone who may not use it."""
    server = queued_server(api_token=TOKEN)
    host = httpx.URL(server.url).netloc.decode()
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    reply = _reply_to_unsent_body(server.url, head)
    assert reply.startswith(b"HTTP/1.1 401"), reply or "the server waited for the body"
    cross = _reply_to_unsent_body(queued_server().url, head.replace(
        "\r\nContent-Type", "\r\nOrigin: http://evil.example\r\nContent-Type"))
    assert cross.startswith(b"HTTP/1.1 403"), cross or "the server waited for the body"


def test_the_api_document_and_its_page_need_the_token_too(queued_server) -> None:
    server = queued_server(api_token=TOKEN)
    with server.client(token=None, follow_redirects=False) as anon:
        assert anon.get("/openapi.json").status_code == 401
        docs = anon.get("/docs")
        assert docs.status_code == 303 and docs.headers["location"] == "/login?next=%2Fdocs"
        assert anon.get("/docs/oauth2-redirect").status_code in (303, 401, 404)
        anon.post("/login", data={"token": TOKEN})
        page = anon.get("/docs")
        assert page.status_code == 200 and "/openapi.json" in page.text
        assert page.headers["x-frame-options"] == "DENY"
    with server.client() as http:
        assert "/v1/jobs" in http.get("/openapi.json").json()["paths"]
    rebound = queued_server().client(headers={"Host": "attacker.example"})
    with rebound:
        assert rebound.get("/openapi.json").status_code == 403
        assert rebound.get("/docs").status_code == 403


def test_the_login_form_refuses_a_huge_body_before_reading_it(queued_server) -> None:
    """The one form anyone may post: a body far beyond a token is refused at once (413)
    instead of being read and parsed into memory; the form still works."""
    server = queued_server(api_token=TOKEN)
    host = httpx.URL(server.url).netloc.decode()
    reply = _reply_to_unsent_body(server.url, f"POST /login HTTP/1.1\r\nHost: {host}\r\n"
                                  "Content-Type: application/x-www-form-urlencoded\r\n")
    assert reply.startswith(b"HTTP/1.1 413"), reply or "the server waited for the body"
    with server.client(token=None, follow_redirects=False) as anon:
        padded = anon.post("/login", data={"token": TOKEN, "next": "/jobs", "pad": "x" * 200_000})
        assert padded.status_code == 413
        assert anon.post("/login", data={"token": TOKEN, "next": "/jobs"}).status_code == 303


@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/plan"), ("POST", "/v1/jobs/j_x/rerun"), ("PATCH", "/v1/jobs/j_x/tiles/0"),
    ("POST", "/v1/models/imports"), ("POST", "/v1/models/uploads")])
def test_json_bodies_are_capped_even_with_the_token(queued_server, method, path) -> None:
    """A JSON body past the JSON limit is refused (413) before it is read, from anyone."""
    server = queued_server(api_token=TOKEN)
    host = httpx.URL(server.url).netloc.decode()
    reply = _reply_to_unsent_body(server.url, (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\n"))
    assert reply.startswith(b"HTTP/1.1 413"), reply or "the server waited for the body"


def test_logging_out_ends_the_session_even_for_a_copy_of_its_cookie(queued_server) -> None:
    """After "Log out" the session is over on the server, not only forgotten by this
    browser: a copy of the cookie (another tab's, a stolen one) no longer works."""
    server = queued_server(api_token=TOKEN)
    with server.client(token=None, follow_redirects=False) as browser:
        assert browser.post("/login", data={"token": TOKEN}).status_code == 303
        copy = browser.cookies["aat_session"]
        assert browser.get("/v1/jobs").status_code == 200
        out = browser.post("/logout")
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert "aat_session" not in browser.cookies
    with server.client(token=None, follow_redirects=False) as thief:
        thief.cookies.set("aat_session", copy)
        assert thief.get("/v1/jobs").status_code == 401
        assert thief.get("/jobs").status_code == 303, "the pages send it to the login form"
        assert thief.post("/login", data={"token": TOKEN}).status_code == 303
        assert thief.get("/v1/jobs").status_code == 200, "a new login opens a new session"


def test_a_stored_input_is_served_as_the_image_it_is_whatever_its_name(queued_server) -> None:
    """The input's media type comes from its decoded format, never from the file name the
    client gave: a PNG named page.html comes back as image/png, as a download."""
    server = queued_server()
    with server.client() as http:
        job = http.post("/v1/jobs", params={"filename": "page.html"}, content=png_bytes(),
                        headers={"Content-Type": "image/png"}).json()
        got = http.get(f"/v1/jobs/{job['id']}/input")
        assert got.status_code == 200 and got.content == png_bytes()
        assert got.headers["content-type"] == "image/png"
        assert got.headers["content-disposition"].startswith("attachment")
