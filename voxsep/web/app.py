"""The web app of `voxsep serve` (Starlette + uvicorn, the ``[web]`` extra): one page, a small JSON API.

Routes::

    GET    /                        the page (static/index.html; static/app.js and static/style.css)
    GET    /api/info                model, talker range, limits, whether a denoiser is loaded
    POST   /api/jobs?name=N&speakers=K&enhance=1   body: the file's bytes -> a queued job (201)
    GET    /api/jobs/<id>           state, progress, queue position, result (count, probabilities, talkers)
    DELETE /api/jobs/<id>           delete the upload and results now
    POST   /api/jobs/<id>/rerun?speakers=K&enhance=1   separate the same upload again (force a count)
    GET    /files/<id>/<name>       s1.wav .. sK.wav, s1.png .. sK.png, mix.png; ?download=NAME saves it

The body of an upload is the file itself (no multipart form): it is streamed into the job's folder
and cut off at the size limit. POSTs and DELETEs must carry ``X-Requested-With: voxsep`` (a page
on another site cannot send it without a CORS preflight this app never grants), and only requests
whose ``Host`` is the loopback name the server listens on are answered (no DNS rebinding), unless
the server was started on another address. Static files are a fixed set read from the package;
result files are looked up by :meth:`voxsep.web.jobs.SeparationService.result_file`, which refuses
anything but a well-formed job id and result name inside the work folder.
"""
from __future__ import annotations

import re
import socket
from importlib import resources
from typing import Iterable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from frontend.errors import VoxsepError
from voxsep.web.jobs import SeparationService, WebError

STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
MEDIA_TYPES = {".wav": "audio/wav", ".png": "image/png"}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
DOWNLOAD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
CSRF_HEADER = ("x-requested-with", "voxsep")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
     b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
]


def load_static() -> dict[str, bytes]:
    """The page's files, read once from the package (``voxsep/web/static``)."""
    folder = resources.files("voxsep.web") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


def allowed_hosts_for(host: str) -> tuple[str, ...] | None:
    """Host names the app answers when listening on ``host``: loopback names for a loopback
    address, any (``None``) for another address the user chose."""
    if host in LOOPBACK_NAMES or host.startswith("127."):
        return LOOPBACK_NAMES + ((host,) if host not in LOOPBACK_NAMES else ())
    return None


def _request_host(value: str) -> str:
    if value.startswith("["):  # [::1]:8000
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class _Guard:
    """ASGI middleware: refuse unexpected Host headers, add security headers to every response."""

    def __init__(self, app, allowed_hosts: Iterable[str] | None):
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.allowed is not None:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if _request_host(host).lower() not in self.allowed:
                response = Response("unexpected Host header", status_code=400, media_type="text/plain")
                return await response(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"cache-control": "no-store"})


def _speakers(request: Request) -> int | None:
    value = request.query_params.get("speakers", "").strip()
    if value in ("", "auto"):
        return None
    if not re.fullmatch(r"[0-9]{1,3}", value):
        raise WebError(f"the number of talkers must be a whole number, got {value[:20]!r}")
    return int(value)


def _enhance(request: Request) -> bool:
    return request.query_params.get("enhance", "0") in ("1", "true", "on")


class Forbidden(WebError):
    status = 403


def _check_origin(request: Request) -> None:
    if request.headers.get(CSRF_HEADER[0], "").lower() != CSRF_HEADER[1]:
        raise Forbidden(f"missing header '{CSRF_HEADER[0]}: {CSRF_HEADER[1]}'")


def create_app(service: SeparationService, allowed_hosts: Iterable[str] | None = LOOPBACK_NAMES):
    """The ASGI app serving ``service``; ``allowed_hosts=None`` answers any ``Host`` header."""
    static = load_static()

    async def page(request: Request) -> Response:
        return Response(static["index.html"], media_type=STATIC_FILES["index.html"],
                        headers={"cache-control": "no-cache"})

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES or name == "index.html":
            return _error("no such file", 404)
        return Response(static[name], media_type=STATIC_FILES[name], headers={"cache-control": "no-cache"})

    async def info(request: Request) -> Response:
        return JSONResponse(service.info(), headers={"cache-control": "no-store"})

    async def create_job(request: Request) -> Response:
        try:
            _check_origin(request)
            speakers, enhance = _speakers(request), _enhance(request)
            job = await run_in_threadpool(service.create_job, request.query_params.get("name"))
        except WebError as err:
            return _error(str(err), err.status)
        limit = service.limits.max_upload_bytes
        try:
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise service.too_large(job)
            size = 0
            with open(job.input_path, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise service.too_large(job)
                    f.write(chunk)
            await run_in_threadpool(service.submit, job, speakers, enhance)
        except WebError as err:
            service.discard(job)
            return _error(str(err), err.status)
        except ClientDisconnect:
            service.discard(job)
            return _error("upload interrupted", 400)
        except BaseException:
            service.discard(job)
            raise
        return JSONResponse(service.describe(job), status_code=201, headers={"cache-control": "no-store"})

    async def job_status(request: Request) -> Response:
        try:
            job = service.get(request.path_params["job_id"])
            if request.method == "DELETE":
                _check_origin(request)
                service.delete(job.id)
                return JSONResponse({"deleted": job.id}, headers={"cache-control": "no-store"})
            return JSONResponse(service.describe(job), headers={"cache-control": "no-store"})
        except WebError as err:
            return _error(str(err), err.status)

    async def rerun(request: Request) -> Response:
        try:
            _check_origin(request)
            job = await run_in_threadpool(service.rerun, request.path_params["job_id"], _speakers(request),
                                          _enhance(request))
        except WebError as err:
            return _error(str(err), err.status)
        return JSONResponse(service.describe(job), status_code=201, headers={"cache-control": "no-store"})

    async def result_file(request: Request) -> Response:
        parts = request.path_params["rest"].split("/")
        try:
            if len(parts) != 2:
                raise WebError("no such file")
            path = service.result_file(parts[0], parts[1])
        except WebError:
            return _error("no such file", 404)
        headers = {"cache-control": "private, max-age=3600"}
        download = request.query_params.get("download")
        if download is not None:
            name = download if DOWNLOAD_NAME.fullmatch(download) else path.name
            headers["content-disposition"] = f'attachment; filename="{name}"'
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers)

    routes = [
        Route("/", page),
        Route("/static/{name}", static_file),
        Route("/api/info", info),
        Route("/api/jobs", create_job, methods=["POST"]),
        Route("/api/jobs/{job_id}", job_status, methods=["GET", "DELETE"]),
        Route("/api/jobs/{job_id}/rerun", rerun, methods=["POST"]),
        Route("/files/{rest:path}", result_file),
    ]
    app = Starlette(routes=routes)
    return _Guard(app, allowed_hosts)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``port=0``: a free port); one-line error if taken.

    It listens at once, so connections made before the server loop runs wait in the backlog.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise VoxsepError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port "
                          "or --host") from None
    sock.listen(2048)
    return sock


def make_server(app, log_level: str = "warning"):
    """A uvicorn server for ``app`` (run it with ``server.run(sockets=[bind(host, port)])``)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off",
                            server_header=False, timeout_graceful_shutdown=3)
    return uvicorn.Server(config)


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT/`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/"
