"""The HTTP layer of the annotation app: logins, sessions, case images, and the Gradio page.

Why not Gradio's built-in `auth=`: its login runs the password check on the event loop (one
scrypt stalls every reader), has no back-off, keeps sessions in process memory under a cookie
name that changes at every start (a restart logs everyone out) and never revokes them. Here a
small FastAPI app owns `/login`, `/logout` and `/rs/image/{token}` and mounts the Gradio Blocks
at `/` with `auth_dependency` = our session lookup, so every Gradio route (page config, API
calls, files) sees the same identity, or a 401:

* `POST /login` answers 429 with `Retry-After` while the account or the client is backed off
  (`throttle`), runs the scrypt check in a worker thread with at most `max_hash_checks` at a
  time (more waiting than `max_pending` → 429 at once), logs every failure, and on success
  stores a session (`sessions`) and sets an HttpOnly, SameSite=Lax cookie;
* every request looks its session up in the study store and checks the account's credential
  version, so a changed password, role or removed account logs that person out at once, and a
  restart logs nobody out;
* `GET /rs/image/{token}` serves a PNG only to the logged-in reader the token was issued to.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from annotation_ui.accounts import Accounts
from annotation_ui.images import ImageTokens, PngCache
from annotation_ui.sessions import COOKIE, Sessions
from annotation_ui.throttle import LoginThrottle
from steering.errors import RadsteerError

log = logging.getLogger("radsteer.annotation")

MAX_NAME, MAX_PASSWORD = 100, 1024
LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>radsteer · log in</title>
<style>body{font-family:system-ui,sans-serif;display:flex;justify-content:center;margin-top:12vh;background:#f7f7f8}
form{background:#fff;padding:28px 32px;border-radius:10px;box-shadow:0 1px 6px #0002;width:320px}
label{display:block;margin:12px 0 4px}input{width:100%;padding:8px;box-sizing:border-box;font-size:1em}
button{margin-top:18px;width:100%;padding:9px;font-size:1em;background:#2563eb;color:#fff;border:0;border-radius:6px}
#rs-login-error{color:#b91c1c;min-height:1.2em;margin-top:10px}</style></head><body>
<form id="rs-login" method="post" action="login"><h2 style="margin-top:0">__TITLE__</h2><p>__MESSAGE__</p>
<label for="username">User name</label><input id="username" name="username" type="text" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Login</button><div id="rs-login-error" role="alert"></div></form>
<script>
document.getElementById('rs-login').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const out = document.getElementById('rs-login-error');
  out.textContent = '';
  const r = await fetch('login', {method: 'POST', body: new URLSearchParams(new FormData(ev.target)),
                                  credentials: 'same-origin'});
  if (r.ok) { window.location.href = './'; return; }
  let msg = 'Login failed.';
  try { msg = (await r.json()).detail || msg; } catch (e) {}
  out.textContent = msg;
});
</script></body></html>"""


class AnnotationServer:
    """One FastAPI app: our login/session/image routes, then the Gradio Blocks at `/`."""

    def __init__(self, blocks: Any, accounts: Accounts | None, sessions: Sessions | None, *,
                 local_user: str, title: str, auth_message: str, css: str, head: str,
                 throttle: LoginThrottle | None = None, max_hash_checks: int = 1, max_pending: int = 32) -> None:
        import gradio as gr

        self.accounts, self.sessions, self.local_user = accounts, sessions, local_user
        self.throttle = throttle or LoginThrottle()
        self.images = ImageTokens()
        self.pngs = PngCache()
        self.max_pending = max_pending
        self._hash_limiter = anyio.CapacityLimiter(max_hash_checks)
        self._pending = 0
        self._title, self._auth_message = title, auth_message
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        self._routes(app)
        app.add_middleware(_LoginRedirect, server=self)
        app.add_middleware(_ApiSessionHash, local=sessions is None)
        self.app = gr.mount_gradio_app(
            app, blocks, path="/", auth_dependency=self.user_of, show_error=True, ssr_mode=False,
            mcp_server=False, pwa=False, max_file_size="1kb", enable_monitoring=False, footer_links=[],
            css=css, head=head,
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ---- identity -------------------------------------------------------------------------

    def user_of(self, request: Request) -> str | None:
        """The logged-in reader of a request (Gradio calls this for every route it serves)."""
        if self.sessions is None:
            return self.local_user
        return self.sessions.user(request.cookies.get(COOKIE))

    # ---- routes ---------------------------------------------------------------------------

    def _routes(self, app: FastAPI) -> None:
        @app.get("/login", include_in_schema=False)
        def login_page() -> HTMLResponse:
            page = LOGIN_PAGE.replace("__TITLE__", html.escape(self._title)).replace(
                "__MESSAGE__", html.escape(self._auth_message))
            return HTMLResponse(page, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

        @app.post("/login", include_in_schema=False)
        async def login(request: Request) -> Response:
            return await self._login(request)

        @app.get("/logout", include_in_schema=False)
        def logout(request: Request) -> Response:
            if self.sessions is not None:
                self.sessions.end(request.cookies.get(COOKIE))
            resp = RedirectResponse("login", status_code=303)
            resp.delete_cookie(COOKIE, path="/")
            return resp

        @app.get("/rs/image/{token}", include_in_schema=False)
        def image(token: str, request: Request) -> Response:
            user = self.user_of(request)
            if user is None:
                return JSONResponse({"detail": "Not authenticated"}, status_code=401)
            path = self.images.lookup(token, user) if len(token) <= 64 else None
            if path is None:
                return JSONResponse({"detail": "Not found"}, status_code=404)
            try:
                data, media_type = self.pngs.get(path)
            except (RadsteerError, OSError) as exc:
                log.warning("case image for %r cannot be shown: %s", user, exc)
                return JSONResponse({"detail": str(exc)}, status_code=422)
            return Response(data, media_type=media_type, headers={
                "Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})

    async def _login(self, request: Request) -> Response:
        if self.accounts is None or self.sessions is None:
            return JSONResponse({"detail": "This server has no logins (single local user)."}, status_code=404)
        form = await request.form()
        name = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        client = request.client.host if request.client else "unknown"
        if not name or len(name) > MAX_NAME or len(password) > MAX_PASSWORD:
            return JSONResponse({"detail": "Incorrect credentials."}, status_code=400)
        wait = self.throttle.retry_after(name, client)
        if wait:
            log.warning("login for %r from %s refused: backed off for %d s more", name, client, wait)
            return _too_many(f"Too many failed logins; try again in {wait} s.", wait)
        if self._pending >= self.max_pending:
            return _too_many("The server is busy checking other logins; try again in a second.", 1)
        self._pending += 1
        try:
            account = await anyio.to_thread.run_sync(self.accounts.check, name, password,
                                                     limiter=self._hash_limiter)
        finally:
            self._pending -= 1
        if account is None:
            n = self.throttle.failed(name, client)
            log.warning("failed login for %r from %s (%d in a row from this client)", name, client, n)
            return JSONResponse({"detail": "Incorrect credentials."}, status_code=400)
        self.throttle.succeeded(name, client)
        token = await anyio.to_thread.run_sync(self.sessions.start, account.name, account.credential)
        log.info("login: %r from %s", account.name, client)
        if "text/html" in request.headers.get("accept", "") and "application/json" not in request.headers.get(
                "accept", ""):
            resp: Response = RedirectResponse("./", status_code=303)
        else:
            resp = JSONResponse({"success": True})
        resp.set_cookie(COOKIE, token, max_age=int(self.sessions.ttl.total_seconds()), path="/", httponly=True,
                        samesite="lax", secure=request.url.scheme == "https")
        return resp

    # ---- serving --------------------------------------------------------------------------

    def serve(self, host: str, port: int, *, block: bool = True, quiet: bool = False) -> str:
        _warm_gradio()
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning" if quiet else "info",
                                access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        if block:
            server.run()
            return url
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._server = server
        self._thread = threading.Thread(target=server.run, daemon=True, name="radsteer-annotate")
        self._thread.start()
        t0 = time.monotonic()
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() - t0 > 30:
                raise RadsteerError(f"the annotation server did not start on {host}:{port} (port in use?)")
            time.sleep(0.01)
        return url

    def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = None


def _warm_gradio() -> None:
    """Gradio imports matplotlib inside the first API call, on the event loop (~1 s on 2 cores, and
    every reader waits for it); do it before the server listens."""
    try:
        from gradio.utils import MatplotlibBackendMananger

        with MatplotlibBackendMananger():
            pass
    except (ImportError, AttributeError):  # another Gradio, or no matplotlib: nothing to warm
        pass


class _LoginRedirect:
    """The page itself (`GET /`) without a session: the login form instead of Gradio's 401.

    Plain ASGI (not Starlette's BaseHTTPMiddleware): every other request passes straight through."""

    def __init__(self, app: Any, server: AnnotationServer) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if (scope["type"] == "http" and scope["path"] == "/" and scope["method"] in ("GET", "HEAD")
                and self.server.sessions is not None):
            request = Request(scope)
            if await anyio.to_thread.run_sync(self.server.user_of, request) is None:
                await RedirectResponse("login", status_code=303)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _ApiSessionHash:
    """An API call (`POST /gradio_api/run/<name>`) that names no Gradio session gets one derived
    from its login cookie.

    Why: for a call without `session_hash` Gradio builds a fresh session state — the config of
    every component of the page, ~10 ms of CPU — on the event loop, so concurrent readers calling
    the API queue behind each other (benchmarks/annotation.py: most of a call's server time). The
    page names its own session; scripts (httpx, curl) usually do not. The derived name is a hash of
    the cookie (the token never appears), so each login gets one Gradio session, as a browser tab
    does; identity still comes only from the cookie (`AnnotationServer.user_of`), and the app keeps
    no per-session state in Gradio. Requests without a cookie are passed on unchanged (they are
    refused before any state is built); so are bodies that are not a small JSON object."""

    PREFIXES = ("/gradio_api/run/", "/gradio_api/api/")
    MAX_BODY = 256 * 1024

    def __init__(self, app: Any, local: bool) -> None:
        self.app, self.local = app, local

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(self.PREFIXES):
            await self.app(scope, receive, send)
            return
        token = Request(scope).cookies.get(COOKIE)
        if not token and not self.local:
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app sees that
                await self.app(scope, _replay(b"".join(chunks), False, receive), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if more and size > self.MAX_BODY:  # not ours to rewrite: passed on as it comes
                await self.app(scope, _replay(b"".join(chunks), True, receive), send)
                return
        body = b"".join(chunks)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict) and not data.get("session_hash"):
            name = "local" if not token else hashlib.sha256(b"radsteer-gradio-session\0" + token.encode()).hexdigest()
            data["session_hash"] = f"rs-{name[:32]}"
            body = json.dumps(data).encode()
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        await self.app(scope, _replay(body, False, receive), send)


def _replay(body: bytes, more: bool, receive: Callable) -> Callable:
    """An ASGI `receive` that first hands out `body` (the part already read), then defers to the
    client's own `receive` (the rest of the body, if `more`, and the disconnect)."""
    first = [{"type": "http.request", "body": body, "more_body": more}]

    async def replay() -> dict:
        return first.pop() if first else await receive()

    return replay


def _too_many(message: str, seconds: int) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=429, headers={"Retry-After": str(int(seconds))})

