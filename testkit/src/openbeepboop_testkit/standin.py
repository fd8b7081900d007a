"""A stand-in OpenAI-compatible LLM server, so tests measure the queue, not a model.

It answers ``POST /v1/chat/completions`` (non-streaming) with a deterministic
echo of the prompt and honest token counts, and ``GET /v1/models``. Knobs make
it slow or make it fail the way real providers fail, and every call is logged
so a test can count how often each prompt reached "the LLM", which fields
arrived and which key it was called with:

- ``delay``: seconds to wait before answering (``asyncio.sleep``, so the
  stand-in itself is never the bottleneck); a caller that hangs up during
  the delay ends it, and the call records when (``hung_up_at``), the way a
  real provider stops generating for a closed connection;
- ``fail_status``: answer every call with this HTTP status and an OpenAI error
  body;
- ``fail_first_n``: per distinct prompt, the first N calls fail (with
  ``fail_status``, or 500), later ones succeed; ``flaky_marker`` limits this to
  prompts containing that string;
- ``fail_prompts``: a prompt containing one of these markers always gets a 400
  whose message contains :data:`PERMANENT_ERROR_MESSAGE`.

The answer takes the shapes OpenAI gives, so tests can follow every field a
message may carry through the queue: ``logprobs: true`` adds a log
probability per word; a request with legacy ``functions`` is answered with a
``function_call`` of the first one (its arguments: the prompt); a prompt
containing :data:`REFUSAL_MARKER` is refused (``refusal`` set, no content).

Knobs are set at start (constructor or command-line flags) and at run time with
``POST /_control`` (JSON object of knobs); ``GET /_calls`` returns the log and
``POST /_reset`` clears it and the per-prompt counters.

In-process, in a background thread::

    with StandinLLM(delay=0.02) as llm:
        ...  # point LiteLLM at llm.base_url with the "openai/" prefix
        assert llm.prompt_counts()["Hi"] == 1

As a process: ``python -m openbeepboop_testkit.standin --port 0 --port-file F``
(the port is written to F once the server accepts connections), driven from
the test with :class:`StandinClient`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

#: The model name the stand-in reports when asked for its models.
DEFAULT_MODEL = "standin-model"
#: Part of the message of every permanent (``fail_prompts``) failure, so tests
#: can check the provider's message reached the user unchanged.
PERMANENT_ERROR_MESSAGE = "stand-in provider rejected this prompt permanently"
#: A prompt containing this is answered with a refusal instead of content.
REFUSAL_MARKER = "[refuse]"
#: The refusal's text.
REFUSAL_TEXT = "The stand-in declines this prompt."
#: Headers never recorded in the call log (the key is recorded apart, as ``api_key``).
SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})
#: How long :class:`StandinLLM` waits for its thread to start serving.
START_TIMEOUT_SECONDS = 30.0

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    429: "rate_limit_error",
}


@dataclass(frozen=True)
class Knobs:
    """How the stand-in behaves; every field can change at run time."""

    delay: float = 0.0
    fail_status: int | None = None
    fail_first_n: int = 0
    flaky_marker: str | None = None
    fail_prompts: tuple[str, ...] = ()
    models: tuple[str, ...] = (DEFAULT_MODEL,)

    def updated(self, changes: dict[str, Any]) -> Knobs:
        """A copy with ``changes`` applied; unknown names are an error."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown stand-in knobs: {unknown}")
        clean = dict(changes)
        for name in ("fail_prompts", "models"):
            if name in clean:
                clean[name] = tuple(clean[name])
        return replace(self, **clean)


@dataclass(frozen=True)
class Call:
    """One request that reached the stand-in's chat completion endpoint (logged on arrival)."""

    call_id: int
    prompt: str
    model: str
    headers: dict[str, str]
    api_key: str | None
    body_keys: list[str]
    body: dict[str, Any]
    status: int
    timestamp: float
    #: When the answer was sent; None while the call is still in its ``delay``
    #: (or was abandoned by the caller).
    answered_at: float | None = None
    #: When the caller closed the connection while the call was still in its
    #: ``delay`` (it was never answered); None otherwise.
    hung_up_at: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Call:
        """A call as :meth:`to_json` (and ``GET /_calls``) wrote it."""
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        """The call as JSON-ready data."""
        return asdict(self)


def prompt_text(messages: object) -> str:
    """The text of the last user message (text parts joined), or ``""``."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _count_tokens(text: str) -> int:
    # Whitespace words: deterministic and good enough to prove usage travels.
    return len(text.split())


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    error_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "api_error")
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


class StandinState:
    """Knobs, per-prompt counters and the call log, shared by the app and its owner."""

    def __init__(self, knobs: Knobs) -> None:
        self._lock = threading.Lock()
        self.knobs = knobs
        self._calls: dict[int, Call] = {}
        self._seen: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count(1)

    def configure(self, changes: dict[str, Any]) -> Knobs:
        """Apply knob changes at once (calls already sleeping keep their delay)."""
        with self._lock:
            self.knobs = self.knobs.updated(changes)
            return self.knobs

    def reset(self) -> None:
        """Forget every call and every per-prompt counter."""
        with self._lock:
            self._calls.clear()
            self._seen.clear()

    def calls(self) -> list[Call]:
        """A snapshot of the call log, oldest first."""
        with self._lock:
            return list(self._calls.values())

    def decide(self, prompt: str) -> tuple[Knobs, int, int | None, str]:
        """Count the call; return (knobs, call id, failure status or None, failure message)."""
        with self._lock:
            knobs = self.knobs
            previous = self._seen[prompt]
            self._seen[prompt] += 1
            call_id = next(self._ids)
        for marker in knobs.fail_prompts:
            if marker in prompt:
                return knobs, call_id, 400, f"{PERMANENT_ERROR_MESSAGE} (marker {marker!r})"
        flaky = knobs.flaky_marker is None or knobs.flaky_marker in prompt
        if knobs.fail_first_n > 0:
            if flaky and previous < knobs.fail_first_n:
                status = knobs.fail_status or 500
                return knobs, call_id, status, f"stand-in failure {previous + 1} (status {status})"
            return knobs, call_id, None, ""
        if knobs.fail_status is not None:
            return knobs, call_id, knobs.fail_status, f"stand-in error (status {knobs.fail_status})"
        return knobs, call_id, None, ""

    def record(self, call: Call) -> None:
        """Append one call to the log."""
        with self._lock:
            self._calls[call.call_id] = call

    def hung_up(self, call_id: int) -> None:
        """Note that a call's caller went away before its answer."""
        with self._lock:
            call = self._calls.get(call_id)
            if call is not None:
                self._calls[call_id] = replace(call, hung_up_at=time.time())

    def answered(self, call_id: int) -> None:
        """Note that a call's answer was sent."""
        with self._lock:
            call = self._calls.get(call_id)
            if call is not None:
                self._calls[call_id] = replace(call, answered_at=time.time())


def _completion(call_id: int, body: dict[str, Any], prompt: str) -> dict[str, Any]:
    words = f"Echo: {prompt}".split()
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    finish_reason = "stop"
    if isinstance(limit, int) and 0 < limit < len(words):
        words, finish_reason = words[:limit], "length"
    message, finish_reason = _message(body, prompt, " ".join(words), finish_reason)
    requested_n = body.get("n")
    n = requested_n if isinstance(requested_n, int) and requested_n > 0 else 1
    prompt_tokens = sum(
        _count_tokens(_content_text(m.get("content")))
        for m in body.get("messages", [])
        if isinstance(m, dict)
    )
    completion_tokens = len(words) * n
    return {
        "id": f"chatcmpl-standin-{call_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model", DEFAULT_MODEL)),
        "system_fingerprint": "standin",
        "choices": [
            {
                "index": index,
                "message": message,
                "logprobs": _logprobs(words) if body.get("logprobs") is True else None,
                "finish_reason": finish_reason,
            }
            for index in range(n)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _message(
    body: dict[str, Any], prompt: str, content: str, finish_reason: str
) -> tuple[dict[str, Any], str]:
    """The assistant message and finish reason: content, a refusal or a legacy function call."""
    if REFUSAL_MARKER in prompt:
        return {"role": "assistant", "content": None, "refusal": REFUSAL_TEXT}, "stop"
    functions = body.get("functions")
    if isinstance(functions, list) and functions and isinstance(functions[0], dict):
        call = {"name": str(functions[0].get("name")), "arguments": json.dumps({"prompt": prompt})}
        return {"role": "assistant", "content": None, "function_call": call}, "function_call"
    return {"role": "assistant", "content": content}, finish_reason


def _logprobs(words: list[str]) -> dict[str, Any]:
    """OpenAI's ``logprobs`` object: one entry per word of the answer, each a little less likely."""
    tokens = [
        {
            "token": word,
            "logprob": -0.25 * number,
            "bytes": list(word.encode()),
            "top_logprobs": [],
        }
        for number, word in enumerate(words)
    ]
    return {"content": tokens, "refusal": None}


async def _hung_up(request: Request) -> None:
    """Return once the caller has closed the connection (the body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _sleep_unless_hung_up(request: Request, seconds: float) -> bool:
    """Sleep ``seconds``; False, early, if the caller hangs up meanwhile."""
    sleeping = asyncio.ensure_future(asyncio.sleep(seconds))
    hangup = asyncio.ensure_future(_hung_up(request))
    try:
        await asyncio.wait({sleeping, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeping.cancel()
        hangup.cancel()
    return not (hangup.done() and not hangup.cancelled() and hangup.exception() is None)


def create_app(state: StandinState) -> Starlette:
    """The stand-in's ASGI app over ``state``."""

    async def chat_completions(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is required")
        if body.get("stream"):
            return _error(400, "the stand-in does not stream")
        prompt = prompt_text(body["messages"])
        knobs, call_id, fail, message = state.decide(prompt)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in SECRET_HEADERS}
        auth = request.headers.get("authorization", "")
        api_key = auth[7:] if auth.lower().startswith("bearer ") else None
        api_key = api_key or request.headers.get("api-key") or request.headers.get("x-api-key")
        state.record(
            Call(
                call_id=call_id,
                prompt=prompt,
                model=str(body.get("model", "")),
                headers=headers,
                api_key=api_key,
                body_keys=sorted(body),
                body=body,
                status=fail or 200,
                timestamp=time.time(),
            )
        )
        if knobs.delay > 0 and not await _sleep_unless_hung_up(request, knobs.delay):
            state.hung_up(call_id)
            return _error(499, "the caller hung up")  # nobody reads it
        if fail is not None:
            response = _error(fail, message, code="standin_failure")
        else:
            response = JSONResponse(_completion(call_id, body, prompt))
        state.answered(call_id)
        return response

    async def models(request: Request) -> JSONResponse:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "standin"}
            for name in state.knobs.models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def control(request: Request) -> JSONResponse:
        try:
            changes = json.loads(await request.body() or b"{}")
            knobs = state.configure(changes)
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        return JSONResponse(asdict(knobs))

    async def calls(request: Request) -> JSONResponse:
        return JSONResponse([call.to_json() for call in state.calls()])

    async def reset(request: Request) -> JSONResponse:
        state.reset()
        return JSONResponse({"reset": True})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_control", control, methods=["POST"]),
            Route("/_calls", calls, methods=["GET"]),
            Route("/_reset", reset, methods=["POST"]),
        ]
    )


class CallLog:
    """Questions tests ask of a call log; subclasses provide :meth:`calls`."""

    def calls(self) -> list[Call]:
        """Every call so far, oldest first."""
        raise NotImplementedError

    def prompt_counts(self) -> collections.Counter[str]:
        """How many times each prompt reached the stand-in."""
        return collections.Counter(call.prompt for call in self.calls())

    def answered_calls(self) -> list[Call]:
        """The calls whose answer was sent."""
        return [call for call in self.calls() if call.answered_at is not None]

    def calls_for(self, prompt: str) -> list[Call]:
        """The calls whose prompt is exactly ``prompt``."""
        return [call for call in self.calls() if call.prompt == prompt]


class _NotifyingServer(uvicorn.Server):
    """A uvicorn server that says when it is accepting connections."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _config(state: StandinState, log_level: str, keep_alive: float = 5.0) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(state),
        log_level=log_level,
        access_log=False,
        lifespan="off",
        # uvicorn's default (5 s); longer for a client slowed down many times
        # (under valgrind), which would otherwise reuse connections just closed.
        timeout_keep_alive=int(keep_alive),
        # A request sleeping on a long ``delay`` must not hold up shutdown.
        timeout_graceful_shutdown=1,
    )


class StandinLLM(CallLog):
    """The stand-in served in a background thread on a free loopback port.

    With ``port``, on that port instead: a test can point a node at a port
    where nothing listens yet (a backend that is down) and start the
    stand-in there later (the backend coming up).
    """

    def __init__(
        self, host: str = "127.0.0.1", log_level: str = "warning", port: int = 0, **knobs: Any
    ) -> None:
        self.state = StandinState(Knobs().updated(knobs))
        self._host = host
        self._port = port
        self._log_level = log_level
        self._sock: socket.socket | None = None
        self._server: _NotifyingServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (after :meth:`start`)."""
        if self._sock is None:
            raise RuntimeError("the stand-in is not started")
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``): LiteLLM's ``api_base`` for ``openai/`` models."""
        return f"{self.url}/v1"

    def start(self) -> StandinLLM:
        """Serve in a daemon thread; return once it accepts connections."""
        started = threading.Event()
        self._sock = _bind(self._host, self._port)
        self._server = _NotifyingServer(_config(self.state, self._log_level), started.set)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not started.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the stand-in LLM did not start")
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(10)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = None

    def __enter__(self) -> StandinLLM:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def configure(self, **knobs: Any) -> Knobs:
        """Change knobs at run time."""
        return self.state.configure(knobs)

    def reset(self) -> None:
        """Clear the call log and the per-prompt counters."""
        self.state.reset()

    def calls(self) -> list[Call]:
        """Every call so far, oldest first."""
        return self.state.calls()


class StandinClient(CallLog):
    """Drives a stand-in running in another process through its control endpoints."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.base_url = f"{self.url}/v1"
        self._timeout = timeout

    def _request(self, method: str, path: str, body: object = None) -> Any:
        response = httpx.request(method, self.url + path, json=body, timeout=self._timeout)
        response.raise_for_status()
        return response.json()

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change knobs at run time; returns all knobs as now set."""
        result: dict[str, Any] = self._request("POST", "/_control", knobs)
        return result

    def reset(self) -> None:
        """Clear the call log and the per-prompt counters."""
        self._request("POST", "/_reset")

    def calls(self) -> list[Call]:
        """Every call so far, oldest first."""
        return [Call.from_json(item) for item in self._request("GET", "/_calls")]


def standin_command(
    port_file: str | os.PathLike[str], keep_alive: float | None = None, **knobs: Any
) -> list[str]:
    """The argv that runs a stand-in process with these knobs (for ``processes``)."""
    import sys

    argv = [sys.executable, "-m", "openbeepboop_testkit.standin", "--port", "0"]
    argv += ["--port-file", str(port_file)]
    if keep_alive is not None:
        argv += ["--keep-alive", str(keep_alive)]
    knobs_obj = Knobs().updated(knobs)
    defaults = Knobs()
    if knobs_obj.delay != defaults.delay:
        argv += ["--delay", str(knobs_obj.delay)]
    if knobs_obj.fail_status is not None:
        argv += ["--fail-status", str(knobs_obj.fail_status)]
    if knobs_obj.fail_first_n:
        argv += ["--fail-first-n", str(knobs_obj.fail_first_n)]
    if knobs_obj.flaky_marker is not None:
        argv += ["--flaky-marker", knobs_obj.flaky_marker]
    for marker in knobs_obj.fail_prompts:
        argv += ["--fail-prompt", marker]
    if knobs_obj.models != defaults.models:
        for model in knobs_obj.models:
            argv += ["--model", model]
    return argv


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: Iterable[str] | None = None) -> None:
    """``python -m openbeepboop_testkit.standin``: serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="openbeepboop_testkit.standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="write the port here once serving")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int)
    parser.add_argument("--fail-first-n", type=int, default=0)
    parser.add_argument("--flaky-marker")
    parser.add_argument("--fail-prompt", action="append", default=[], dest="fail_prompts")
    parser.add_argument("--model", action="append", default=[], dest="models")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--keep-alive", type=float, default=5.0, help="seconds an idle connection is kept"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    knobs = Knobs(
        delay=args.delay,
        fail_status=args.fail_status,
        fail_first_n=args.fail_first_n,
        flaky_marker=args.flaky_marker,
        fail_prompts=tuple(args.fail_prompts),
        models=tuple(args.models) or (DEFAULT_MODEL,),
    )
    sock = _bind(args.host, args.port)
    port = int(sock.getsockname()[1])

    def announce() -> None:
        if args.port_file is not None:
            _write_atomically(args.port_file, f"{port}\n")

    config = _config(StandinState(knobs), args.log_level, args.keep_alive)
    server = _NotifyingServer(config, announce)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
