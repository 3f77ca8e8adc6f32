"""The live browser: a Starlette app over one catalog (and optionally its model).

Pages render synchronously in Starlette's thread pool (Jinja and the memoised views are
thread-safe), so many page requests are served at once while a steering job or a strength sweep
streams (both through one worker-thread-to-SSE path, under the model's lock). Every error
a user can cause becomes a page with a one-line message and status 400/404; anything else is
logged with its traceback and shown as a one-line 500 page, never a stack trace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bagofdims.errors import BagOfDimsError, InvalidArgument, NotFound, OutOfRange
from bagofdims.serve.pages import STATIC, Links, Pages
from bagofdims.serve.steering import MAX_PROMPT_CHARS, parse_request, run_job, run_sweep

log = logging.getLogger(__name__)

LIVE = Links(static=False)


def _status(err: BaseException) -> int:
    return 404 if isinstance(err, (NotFound, OutOfRange)) else 400


def create_app(views, model=None, tokenizer=None) -> Starlette:
    """The app for :class:`~bagofdims.serve.views.CatalogViews` ``views``; with ``model`` (and its
    ``tokenizer``) the reader and steering pages work."""
    pages = Pages(views, live_model=model is not None)
    cat = views.cat
    model_lock = threading.Lock()  # one generation at a time on this model

    def page(render) -> HTMLResponse:
        try:
            return HTMLResponse(render())
        except BagOfDimsError as err:
            return HTMLResponse(pages.error(LIVE, str(err), _status(err)), status_code=_status(err))

    def index(request: Request):
        return page(lambda: pages.index(LIVE))

    def feature(request: Request):
        return page(lambda: pages.feature(_int(request.path_params["i"], "feature number"), LIVE))

    def dim(request: Request):
        return page(lambda: pages.dim(request.path_params["site"],
                                      _int(request.path_params["dim"], "dim"), LIVE))

    def reader(request: Request):
        q = request.query_params
        text, site = q.get("text", ""), q.get("site") or cat.sites[len(cat.sites) // 2]
        ctx = {"text": text, "site": site, "max_chars": MAX_PROMPT_CHARS}
        status = 200
        if text and model is not None:
            try:
                if len(text) > MAX_PROMPT_CHARS:
                    raise InvalidArgument(f"The text has {len(text)} characters; the limit is "
                                          f"{MAX_PROMPT_CHARS}. Shorten it.")
                if site not in cat.sites:
                    raise NotFound(f"Site '{site}' is not in this catalog; pick one of "
                                   f"{', '.join(cat.sites)}.")
                with model_lock:  # no steering hooks may be active while reading
                    ctx["rows"] = cat.read(text, model=model, site=site)
            except BagOfDimsError as err:
                ctx["error"], status = str(err), 400
        return HTMLResponse(pages.reader(LIVE, **ctx), status_code=status)

    def steer(request: Request):
        form = dict(request.query_params)
        ctx = {"form": form, "max_chars": MAX_PROMPT_CHARS}
        status = 200
        if form and model is not None:
            try:
                req = parse_request(cat, form)
                path = "/steer/sweep?" if req.action == "sweep" else "/steer/stream?"
                ctx["sweep" if req.action == "sweep" else "stream"] = path + str(request.query_params)
            except BagOfDimsError as err:
                ctx["error"], status = str(err), 400
        return HTMLResponse(pages.steer(LIVE, **ctx), status_code=status)

    async def stream(request: Request):
        return job_stream(request, run_job)

    async def sweep(request: Request):
        return job_stream(request, run_sweep, action="sweep")

    def job_stream(request: Request, target, action: str = "generate") -> StreamingResponse:
        """Run ``target`` in a worker thread and send its events to the page as they come."""
        if model is None:
            return _sse_once("fail", {"message": "This server has no model; restart it with --model."})
        try:
            req = parse_request(cat, {**request.query_params, "action": action})
        except BagOfDimsError as err:
            return _sse_once("fail", {"message": str(err)})
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()
        worker = threading.Thread(target=target, args=(model, tokenizer, req, model_lock, events,
                                                       cancel), daemon=True, name=action)
        worker.start()

        async def body():  # async, so a closed page cancels it at once (and stops the job)
            try:
                while True:
                    try:
                        name, data = events.get_nowait()
                    except queue.Empty:
                        if not worker.is_alive() and events.empty():
                            return
                        await asyncio.sleep(0.005)
                        continue
                    yield _sse(name, data)
                    if name in ("done", "fail"):
                        return
            finally:  # the page went away (or the job ended): stop generating
                cancel.set()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    async def not_found(request: Request, exc: HTTPException):
        status = getattr(exc, "status_code", 500)
        message = ("No such page; start from the feature index." if status == 404 else
                   str(getattr(exc, "detail", "")) or "The request could not be served.")
        return HTMLResponse(pages.error(LIVE, message, status), status_code=status)

    async def server_error(request: Request, exc: Exception):
        log.exception("error serving %s", request.url.path, exc_info=exc)
        return HTMLResponse(pages.error(LIVE, "The server failed to build this page (the details "
                                        "are in its log).", 500), status_code=500)

    routes = [
        Route("/", index), Route("/feature/{i}", feature), Route("/dim/{site}/{dim}", dim),
        Route("/reader", reader), Route("/steer", steer), Route("/steer/stream", stream),
        Route("/steer/sweep", sweep),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    if views.reports_dir is not None:
        routes.append(Mount("/reports", StaticFiles(directory=str(views.reports_dir)), name="reports"))
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found,
                                                       Exception: server_error})
    app.state.model_lock = model_lock  # held while a steering job or a reading runs
    return app


def _int(raw: str, what: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"'{raw}' is not a {what}; use a whole number.") from None


def _sse(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _sse_once(name: str, data: dict) -> StreamingResponse:
    return StreamingResponse(iter([_sse(name, data)]), media_type="text/event-stream")


class running:
    """``with running(app) as url:`` serves ``app`` on a free loopback port in a thread."""

    def __init__(self, app, host: str = "127.0.0.1"):
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="serve")

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (see its log)")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> bool:
        self.server.should_exit = True
        self.thread.join(10)
        return False
