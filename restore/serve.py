"""``restore serve``: one loaded model behind HTTP (FastAPI + uvicorn), concurrent requests batched.

- ``POST /restore`` with ``{"text": "..."}`` answers ``{"restored": "...", "faithful": ...,
  "tokens": [...], "spans": [...], "chunks": [...], "engine": "..."}`` (one
  :meth:`restore.api.Restoration.as_dict` and the engine); with ``{"texts": ["...", ...]}``
  every field but ``engine`` is a list, one item per text, in order.
- ``GET /health``: ``{"status": "ok", "model", "engine", "requests", "texts", "batches", "in_flight",
  "busy_seconds"}`` (counts since the start; ``busy_seconds``: time spent restoring batches).
- ``GET /``: a page where a person pastes stemmed text and reads the restoration, inserted words
  shown apart from restored ones and each word's input token on hover (``restore/static/``).

Batching (:class:`Batcher`, as text-generation servers do): requests go into one queue in front
of one :class:`restore.api.Pipeline`; a worker waits a short window (``window_ms``) from the first
waiting request for more to join it, up to a budget of source words (``batch_words``), and
restores the batch in one thread (one batch at a time; the Restorer batches its chunks by the
token budget), then answers each request with its own results. Errors are one-line JSON
``{"error": "..."}``: 400 (malformed JSON, not ``text`` or ``texts`` of strings), 413 (a body
over ``max_request_bytes``, a text over ``max_text_chars``), 500 (the model failed; only the
requests whose batch failed alone get it). The server binds 127.0.0.1 unless told otherwise;
SIGTERM (or Ctrl-C) stops accepting, finishes the requests in flight, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from restore.errors import RestoreError

if TYPE_CHECKING:
    from restore.api import Pipeline

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
WINDOW_MS = 10.0  # how long the worker waits for more requests to join the first one waiting
# Source words per batch: about 64 chunks of 16 words, a full sub-batch for each of CTranslate2's
# workers on 2 cores (tokens/s is flat from there on, and a batch's first request waits for all of it).
BATCH_WORDS = 1024
MAX_REQUEST_BYTES = 1 << 20
MAX_TEXT_CHARS = 100_000


class RequestError(Exception):
    """A request the server refuses: its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Job:
    texts: list[str]
    words: int
    future: asyncio.Future = field(repr=False)


class Batcher:
    """One queue in front of one Pipeline; :meth:`restore` answers with one result dict per text."""

    def __init__(self, pipeline: Pipeline, *, window_ms: float = WINDOW_MS, batch_words: int = BATCH_WORDS) -> None:
        self.pipeline = pipeline
        self.window = window_ms / 1000
        self.batch_words = batch_words
        self.requests = self.texts = self.batches = self.in_flight = 0
        self.busy_seconds = 0.0  # time spent restoring batches
        self.batch_sizes: list[int] = []  # requests per batch, in order (health and tests)
        self._waiting: deque[_Job] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-serve")

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._thread.shutdown(wait=True)

    async def restore(self, texts: list[str]) -> list[dict]:
        """Queue ``texts`` (one request) and wait for their results."""
        job = _Job(texts, sum(len(text.split()) for text in texts), asyncio.get_running_loop().create_future())
        self.requests += 1
        self.texts += len(texts)
        self.in_flight += 1
        try:
            self._waiting.append(job)
            self._arrived.set()
            return await job.future
        finally:
            self.in_flight -= 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                await self._next_arrival(None)
            # A window for more to join (the clients just answered send their next requests now).
            deadline = loop.time() + self.window
            while self._words_waiting() < self.batch_words and await self._next_arrival(deadline - loop.time()):
                pass
            jobs = [self._waiting.popleft()]
            words = jobs[0].words
            while self._waiting and words + self._waiting[0].words <= self.batch_words:
                words += self._waiting[0].words
                jobs.append(self._waiting.popleft())
            await self._restore(jobs)

    async def _next_arrival(self, timeout: float | None) -> bool:
        """Wait until a request arrives (or ``timeout`` seconds pass: False)."""
        if timeout is not None and timeout <= 0:
            return False
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def _words_waiting(self) -> int:
        return sum(job.words for job in self._waiting)

    async def _restore(self, jobs: list[_Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        self.batches += 1
        self.batch_sizes.append(len(jobs))
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._thread, self._restore_texts, texts)
        except Exception as error:  # noqa: BLE001 - answered as 500, the server goes on
            self.busy_seconds += time.perf_counter() - started
            if len(jobs) > 1:  # answer the others: each request alone, so only a failing one fails
                for job in jobs:
                    await self._restore([job])
                return
            if not jobs[0].future.done():
                jobs[0].future.set_exception(error)
            return
        self.busy_seconds += time.perf_counter() - started
        start = 0
        for job in jobs:
            if not job.future.done():  # a client that went away
                job.future.set_result(results[start : start + len(job.texts)])
            start += len(job.texts)

    def _restore_texts(self, texts: list[str]) -> list[dict]:
        return [restoration.as_dict() for restoration in self.pipeline(texts)]


def create_app(
    pipeline: Pipeline,
    *,
    window_ms: float = WINDOW_MS,
    batch_words: int = BATCH_WORDS,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_text_chars: int = MAX_TEXT_CHARS,
    announce: str | None = None,
) -> FastAPI:
    """The ASGI app serving ``pipeline`` (see the module docstring); ``announce``: a line printed
    on stderr once the app has started (and a summary line when it stops)."""
    batcher = Batcher(pipeline, window_ms=window_ms, batch_words=batch_words)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        if announce:
            print(announce, file=sys.stderr, flush=True)
        try:
            yield
        finally:
            await batcher.stop()
            if announce:
                from restore.textio import plural

                print(f"restore serve: stopped after {plural(batcher.requests, 'request')} ({plural(batcher.texts, 'text')}, "
                      f"{plural(batcher.batches, 'batch', 'batches')})", file=sys.stderr, flush=True)  # fmt: skip

    app = FastAPI(title="restore", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher

    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:  # 404, 405: one line too
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse((resources.files("restore") / "static" / "index.html").read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok", "model": str(pipeline.path), "engine": pipeline.engine, "requests": batcher.requests,
            "texts": batcher.texts, "batches": batcher.batches, "in_flight": batcher.in_flight,
            "busy_seconds": round(batcher.busy_seconds, 3),
        }  # fmt: skip

    @app.post("/restore")
    async def restore(request: Request) -> JSONResponse:
        body = await _read_body(request, max_request_bytes)
        single, texts = parse_request(body, max_text_chars)
        try:
            results = await batcher.restore(texts) if texts else []
        except Exception as error:  # noqa: BLE001 - one line, the server goes on
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            kind = "" if isinstance(error, RestoreError) else f"{type(error).__name__}: "
            return JSONResponse({"error": f"restoring failed: {kind}{message}"}, status_code=500)
        if single:
            return JSONResponse({**results[0], "engine": pipeline.engine})
        fields = ("restored", "faithful", "tokens", "spans", "chunks")
        return JSONResponse({**{name: [result[name] for result in results] for name in fields}, "engine": pipeline.engine})

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise RequestError(413, f"request body of {int(length):,} bytes is over the limit of {limit:,}")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise RequestError(413, f"request body is over the limit of {limit:,} bytes")
    return bytes(body)


def parse_request(body: bytes, max_text_chars: int) -> tuple[bool, list[str]]:
    """``(single, texts)`` of a ``/restore`` body, or a :class:`RequestError` (400, 413).

    >>> parse_request(b'{"text": "born 1879 ."}', 100), parse_request(b'{"texts": ["a", "b c"]}', 100)
    ((True, ['born 1879 .']), (False, ['a', 'b c']))
    >>> parse_request(b'{"text": 1}', 100)
    Traceback (most recent call last):
    restore.serve.RequestError: expected a JSON object {"text": "..."} or {"texts": ["...", ...]}
    """
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"malformed JSON: {e}") from None
    keys = set(request) if isinstance(request, dict) else set()
    if keys == {"text"} and isinstance(request["text"], str):
        single, texts = True, [request["text"]]
    elif keys == {"texts"} and isinstance(request["texts"], list) and all(isinstance(t, str) for t in request["texts"]):
        single, texts = False, request["texts"]
    else:
        raise RequestError(400, 'expected a JSON object {"text": "..."} or {"texts": ["...", ...]}')
    for k, text in enumerate(texts):
        if len(text) > max_text_chars:
            which = "text" if single else f"texts[{k}]"
            raise RequestError(413, f"{which} has {len(text):,} characters, over the limit of {max_text_chars:,}")
    return single, texts


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening (port 0: any free port), or one clear error.

    Bound before the model loads, so that a port in use is one line at once.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as e:
        raise RestoreError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise RestoreError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def run_server(pipeline: Pipeline, sock: socket.socket, **options) -> None:
    """Serve ``pipeline`` on ``sock`` until SIGTERM or Ctrl-C (uvicorn finishes the requests in
    flight first, then re-raises the signal: the command line reports it as every command does)."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    announce = (f"restore serve: http://{shown}:{port}/ (POST /restore, GET /health); model {pipeline.path}; "
                f"engine: {pipeline.engine}")  # fmt: skip
    app = create_app(pipeline, announce=announce, **options)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=None)
    uvicorn.Server(config).run(sockets=[sock])
