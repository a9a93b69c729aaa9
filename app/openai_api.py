"""An OpenAI-compatible HTTP API over the workbench: what chat front ends, editors and scripts
speak to local models (the `openai` client, `gr.load_chat`, curl).

    api = create_app(workbench.configure(...), models=None)   # a FastAPI app, mounted at /v1:
    app = server_app(api, allowed_hosts("127.0.0.1"))         # python -m engine serve
    launch(demo, ..., api=api)                                # python app.py --api (Gradio)

    GET  /v1/models                     the models this server offers, and their modes
    POST /v1/chat/completions           a chat turn (Python assistant, free chat or story)
    POST /v1/completions                plain continuation of a prompt (story mode)

It is a third front end on app.workbench: requests go through the same catalogue (only listed
models, never a path), the same checks (app.limits: the sampling ranges, message lengths, history
size) and the same engine chat modes as the Gradio and Chainlit apps, so the Python assistant
keeps its filter and its documentation sources here too.

The mode: the `mode` field ("python", "chat", "story"; an extension), else a suffix on the model
name ("python-assistant:chat"), else "python" for the model the catalogue picks for the Python
assistant and "chat" for any other. Sampling: temperature, top_p, max_tokens (or
max_completion_tokens), stop, seed, plus top_k and repetition_penalty as extensions; a field left
out takes the UIs' default. OpenAI fields we cannot honour (n > 1, logprobs, penalties other than
0, logit_bias, suffix, best_of > 1) are refused with a 400 rather than ignored.

Errors have the OpenAI shape {"error": {"message", "type", "param", "code"}}: 400 for a bad
value, 404 for a model this server does not offer, 503 when the server's queue of generations
(engine.serving, shared with the apps) is full. Each response carries a "workbench" object
(mode, refused, reason, sources, notices); a stream carries it in its last chunk.
A client that goes away cancels its generation (streaming or not). When the server has a
password (WORKBENCH_PASSWORD, app.auth), it is the API key: `Authorization: Bearer <password>`.
The Host allowlist and body limit are app.hosts.HostGuard's, as for the apps.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount

from engine.assistant import MODES
from engine.serving import ServerBusy

from .auth import USER_ENV, check_login, password_required
from .display import source_entries
from .hosts import HostGuard
from .limits import MAX_BODY_BYTES, sampling_params
from .workbench import USER_ERRORS, Workbench

API_PATH = "/v1"  # where the API is mounted, on its own server or on the Gradio app's
OWNER = "gpt-workbench"
MAX_STOP = 4  # stop strings per request, as in OpenAI's API
MAX_STOP_CHARS = 200
# How often a non-streaming request checks whether its client is still there.
DISCONNECT_POLL_S = 0.25


class APIError(Exception):
    """An error the client gets as {"error": {...}} with an HTTP status."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 code: str | None = None, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.type = status, param, code, type_

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.type, "param": self.param,
                          "code": self.code}}


class _Request(BaseModel):
    """Fields both endpoints share. Numbers are checked by app.limits (the UIs' ranges and
    messages), not by pydantic, so `"temperature": "hot"` gets the same message as in the UIs."""

    model_config = ConfigDict(extra="allow")  # other clients' fields are ignored

    model: str
    mode: str | None = None
    stream: bool = False
    stream_options: dict | None = None
    temperature: Any = None
    top_p: Any = None
    top_k: Any = None
    repetition_penalty: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    stop: Any = None
    seed: Any = None
    n: Any = None
    logprobs: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None


class ChatRequest(_Request):
    messages: list[dict]


class CompletionRequest(_Request):
    prompt: Any
    echo: bool = False
    suffix: Any = None
    best_of: Any = None


def create_app(wb: Workbench, models: list[str] | None = None) -> FastAPI:
    """The API as a FastAPI app. `models`: the names (see _names) of the catalogue's models to
    offer (default: all it lists); ValueError for one it does not list."""
    offered = [_resolve(wb, m) for m in models] if models else None
    api = FastAPI(title="GPT Workbench OpenAI-compatible API", version="1",
                  docs_url="/docs", openapi_url="/openapi.json", redoc_url=None,
                  dependencies=[Depends(_check_key)])
    api.state.workbench = wb
    _add_error_handlers(api)

    @api.get("/models")
    def list_models() -> dict:
        return {"object": "list", "data": [_model_card(m) for m in _model_ids(wb, offered)]}

    @api.get("/models/{model:path}")
    def get_model(model: str) -> dict:
        _spec_and_mode(wb, offered, model, None)
        return _model_card(model)

    @api.post("/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        spec, mode = _spec_and_mode(wb, offered, body.model, body.mode)
        params = _params(body)
        system, history, message = _split_messages(body.messages)
        cancel = threading.Event()
        if mode == "story":  # the latest message continued as it is
            reply = await run_in_threadpool(wb.story, message, spec, params, cancel)
        else:
            reply = await run_in_threadpool(wb.chat, message, history, mode, spec, params,
                                            cancel, system=system)
        return await _respond(body, request, reply, cancel, chat=True)

    @api.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        spec, mode = _spec_and_mode(wb, offered, body.model, body.mode, default="story")
        if mode != "story":
            raise APIError(f"/v1/completions continues the prompt as it is (mode 'story'); for "
                           f"mode {mode!r} use /v1/chat/completions", param="mode")
        for name in ("suffix", "best_of"):
            value = getattr(body, name)
            if value not in (None, 1) or (name == "suffix" and value not in (None, "")):
                raise APIError(f"{name} is not supported by this server, got {value!r}",
                               param=name)
        prompt = body.prompt[0] if isinstance(body.prompt, list) and len(body.prompt) == 1 \
            else body.prompt
        if not isinstance(prompt, str):
            raise APIError("prompt must be one string (lists of prompts and token ids are not "
                           f"supported), got {type(body.prompt).__name__}", param="prompt")
        params = _params(body)
        cancel = threading.Event()
        reply = await run_in_threadpool(wb.story, prompt, spec, params, cancel)
        return await _respond(body, request, reply, cancel, chat=False,
                              echo=prompt if body.echo else "")

    return api


def server_app(api: FastAPI, hosts) -> Starlette:
    """The API at /v1 behind the apps' Host allowlist and body limit (app.hosts.HostGuard)."""
    return Starlette(routes=[Mount(API_PATH, api)],
                     middleware=[Middleware(HostGuard, hosts=hosts,
                                            body_limit=lambda path: MAX_BODY_BYTES)])


def _check_key(request: Request) -> None:
    """With a server password set, every request must carry it as the API key."""
    if not password_required():
        return
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not check_login(os.environ.get(USER_ENV, ""), key.strip()):
        raise APIError("this server needs an API key: send its password as "
                       "'Authorization: Bearer <password>' (the api_key of an OpenAI client)",
                       status=401, code="invalid_api_key")


# -- requests -------------------------------------------------------------------------------


def _names(wb: Workbench) -> dict[str, str]:
    """{API model name: catalogue spec}: a bundled model by its folder's name ("story"), a
    training run as "runs/<name>", a hub model by its id; no local paths."""
    names = {}
    for c in wb.models.entries():
        name = {"bundled": Path(c.spec).name, "run": f"runs/{Path(c.spec).name}"}.get(c.source,
                                                                                    c.spec)
        names.setdefault(name, c.spec)
    return names


def _resolve(wb: Workbench, name: str) -> str:
    """The catalogue spec of an API model name (or of a spec or label the catalogue lists);
    ValueError for anything else."""
    spec = _names(wb).get(name.strip()) if isinstance(name, str) else None
    return spec or wb.models.resolve(name)


def _model_ids(wb: Workbench, offered: list[str] | None) -> list[str]:
    names = [n for n, spec in _names(wb).items() if offered is None or spec in offered]
    return [m for name in names for m in (name, *(f"{name}:{mode}" for mode in MODES))]


def _model_card(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": OWNER}


def _spec_and_mode(wb: Workbench, offered, model: str, mode: str | None,
                   default: str | None = None) -> tuple[str, str]:
    """(catalogue spec, mode) for a request's model name and mode field."""
    name, suffix = model, None
    if ":" in model and model.rsplit(":", 1)[1] in MODES:
        name, suffix = model.rsplit(":", 1)
    try:
        spec = _resolve(wb, name)
    except ValueError as e:
        raise APIError(str(e), status=404, param="model", code="model_not_found") from None
    if offered is not None and spec not in offered:
        raise APIError(f"model {name!r} is not offered by this server; choose one of: "
                       f"{', '.join(_model_ids(wb, offered)[::len(MODES) + 1])}", status=404,
                       param="model", code="model_not_found")
    if mode is not None and mode not in MODES:
        raise APIError(f"mode must be one of {', '.join(MODES)}, got {mode!r}", param="mode")
    if mode and suffix and mode != suffix:
        raise APIError(f"the model name asks for mode {suffix!r} but the mode field says "
                       f"{mode!r}", param="mode")
    mode = mode or suffix or default
    if mode is None:
        mode = "python" if spec == wb.models.default("python") else "chat"
    return spec, mode


def _params(body: _Request):
    """SamplingParams from the API's fields, through app.limits (the UIs' ranges)."""
    unsupported = {"n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0}
    for name, neutral in unsupported.items():
        value = getattr(body, name)
        if value is not None and value != neutral:
            raise APIError(f"{name} is not supported by this server (leave it out or use "
                           f"{neutral!r}), got {value!r}", param=name)
    if body.logit_bias:
        raise APIError("logit_bias is not supported by this server", param="logit_bias")
    if body.max_tokens is not None and body.max_completion_tokens is not None:
        raise APIError("give max_tokens or max_completion_tokens, not both",
                       param="max_tokens")
    max_tokens = body.max_completion_tokens if body.max_tokens is None else body.max_tokens
    fields = {"temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k,
              "repetition_penalty": body.repetition_penalty, "max_new_tokens": max_tokens,
              "seed": body.seed}
    for name, value in fields.items():
        try:
            sampling_params(**{name: value})
        except ValueError as e:
            param = "max_tokens" if name == "max_new_tokens" else name
            raise APIError(str(e).replace("max_new_tokens", param), param=param) from None
    return sampling_params(**fields, stop=_stop(body.stop))


def _stop(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise APIError(f"stop must be a non-empty string or a list of them, got {stop!r:.80}",
                       param="stop")
    if len(stops) > MAX_STOP or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise APIError(f"stop takes at most {MAX_STOP} strings of up to {MAX_STOP_CHARS} "
                       "characters", param="stop")
    return tuple(stops)


def _split_messages(messages: list[dict]) -> tuple[str, list[dict], str]:
    """(system text, history, latest user message) from OpenAI chat messages. System (and
    developer) messages become the system text before the conversation."""
    if not messages:
        raise APIError("messages is empty: send at least the user's message", param="messages")
    system, turns = [], []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise APIError(f"messages[{i}] must be an object", param="messages")
        if m.get("role") in ("system", "developer"):
            content = m.get("content")
            if not isinstance(content, str):
                raise APIError(f"messages[{i}]: a system message's content must be text",
                               param="messages")
            system.append(content)
        else:
            turns.append(m)
    if not turns or turns[-1].get("role") != "user":
        raise APIError("the last message must be the user's", param="messages")
    last = turns[-1].get("content")
    if isinstance(last, list):  # content blocks: the text ones, as the engine reads them
        last = "\n".join(b.get("text", "") for b in last
                         if isinstance(b, dict) and b.get("type", "text") == "text")
    if not isinstance(last, str):
        raise APIError("the user's message must be text", param="messages")
    return "\n\n".join(system), turns[:-1], last


# -- responses ------------------------------------------------------------------------------


def _finish_reason(reply) -> str:
    stats = reply.stats
    # Cut short by max_tokens or by the server's time limit: "length"; anything else: "stop".
    return "length" if stats is not None and stats.finish_reason in ("length", "time") else "stop"


def _usage(reply) -> dict:
    stats = reply.stats
    prompt = stats.prompt_tokens if stats else 0
    completion = stats.new_tokens if stats else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _extension(reply) -> dict:
    """What the OpenAI shape has no field for: the mode, the filter's verdict, the sources."""
    notices = list(reply.stats.notices) if reply.stats else list(reply.notices)
    return {"mode": reply.mode, "refused": reply.refused, "reason": reply.reason,
            "sources": source_entries(reply.sources), "notices": notices}


async def _respond(body: _Request, request: Request, reply, cancel: threading.Event, chat: bool,
                   echo: str = ""):
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    head = {"id": ident, "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": body.model}
    if body.stream:
        usage = bool((body.stream_options or {}).get("include_usage"))
        return EventSourceResponse(_events(head, reply, cancel, chat, echo, usage),
                                   ping=15, sep="\n")
    text = await _collect(request, reply, cancel)
    choice = {"index": 0, "finish_reason": _finish_reason(reply), "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text,
                             "refusal": reply.refusal if reply.refused else None}
    else:
        choice["text"] = echo + text
    return {**head, "choices": [choice], "usage": _usage(reply), "workbench": _extension(reply)}


async def _collect(request: Request, reply, cancel: threading.Event) -> str:
    """The whole answer, generated in a worker thread; cancelled when the client goes away."""
    work = asyncio.ensure_future(run_in_threadpool(reply.text))
    while not work.done():
        done, _ = await asyncio.wait({work}, timeout=DISCONNECT_POLL_S)
        if not done and await request.is_disconnected():
            cancel.set()
    return work.result()


_END = object()


async def _deltas(reply, cancel: threading.Event):
    """The reply's text deltas, each produced in a worker thread. When the consumer stops early
    (the client went away), the generation is cancelled."""
    it: Iterator[str] = iter(reply)
    finished = False
    try:
        while True:
            delta = await anyio.to_thread.run_sync(next, it, _END, abandon_on_cancel=True)
            if delta is _END:
                finished = True
                return
            yield delta
    finally:
        if not finished:
            cancel.set()


async def _events(head: dict, reply, cancel: threading.Event, chat: bool, echo: str,
                  usage: bool):
    """The SSE events of a streamed response: chunks, the last one with finish_reason and the
    workbench extension, a usage chunk when asked for, then [DONE]."""
    head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}

    def chunk(delta: str | None, finish: str | None = None, **extra) -> str:
        if chat:
            choice = {"index": 0, "delta": {} if delta is None else {"content": delta},
                      "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        return json.dumps({**head, "choices": [choice], **extra})

    if chat:
        yield json.dumps({**head, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                     "content": ""},
                                               "finish_reason": None, "logprobs": None}]})
    elif echo:
        yield chunk(echo)
    try:
        async for delta in _deltas(reply, cancel):
            yield chunk(delta)
    except USER_ERRORS as e:  # headers are sent: the error travels as an event
        yield json.dumps(APIError(str(e)).body())
        return
    yield chunk(None, _finish_reason(reply), workbench=_extension(reply))
    if usage:
        yield json.dumps({**head, "choices": [], "usage": _usage(reply)})
    yield "[DONE]"


def _add_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(APIError)
    async def api_error(_, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @api.exception_handler(RequestValidationError)
    async def invalid(_, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else \
            first.get("msg", "invalid request")
        return JSONResponse(APIError(message, param=where).body(), status_code=400)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return JSONResponse(APIError(str(e.detail), e.status_code, type_=kind).body(),
                            status_code=e.status_code)

    @api.exception_handler(ServerBusy)  # the server-wide queue is full (engine.serving)
    async def busy(_, e: ServerBusy):
        body = APIError(str(e), 503, code="server_busy", type_="server_error").body()
        return JSONResponse(body, status_code=503, headers={"Retry-After": "10"})

    for error in USER_ERRORS:  # ValueError, ModelLoadError, ...: a message a person can act on
        @api.exception_handler(error)
        async def user_error(_, e: Exception):
            return JSONResponse(APIError(str(e)).body(), status_code=400)
