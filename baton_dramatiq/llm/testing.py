"""`FakeProvider`: a local OpenAI-compatible server, so LLM steps run in tests offline.

    from baton_dramatiq.llm.testing import FakeProvider

    with FakeProvider() as provider:               # listens on 127.0.0.1, a free port
        provider.respond("42", prompt_tokens=12, completion_tokens=3)
        provider.fail(429, retry_after=1)          # the next request gets a rate limit
        complete(messages, model="openai/gpt-4o-mini", api_base=provider.url, api_key="x")
        provider.requests                          # what it received

It answers ``POST /v1/chat/completions`` as OpenAI does (no streaming), with the usage
it is told to report, so litellm prices the answer from its own cost map. Nothing here
talks to the network beyond the loopback address it listens on.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class FakeRequest:
    """One request the provider received. `model` is as sent (``gpt-4o-mini``)."""

    model: str
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    headers: dict[str, str]


#: what a reply's text can be: fixed, or computed from the request
Text = str | Callable[[FakeRequest], str]


@dataclasses.dataclass(frozen=True, slots=True)
class _Reply:
    text: Text | None
    prompt_tokens: int | None
    completion_tokens: int | None
    delay: float


@dataclasses.dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    message: str
    retry_after: float | None


class FakeProvider:
    """An OpenAI-compatible chat completions server on 127.0.0.1, for tests.

    Parameters:
      port(int): 0 picks a free port.

    Attributes:
      url(str): the ``api_base`` to give litellm, e.g. ``http://127.0.0.1:PORT/v1``.
      requests(list[FakeRequest]): every request received, in order.
    """

    def __init__(self, *, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._replies: dict[str | None, _Reply] = {None: _Reply(None, None, None, 0.0)}
        self._failures: dict[str | None, collections.deque[_Failure]] = collections.defaultdict(
            collections.deque
        )
        self._requests: list[FakeRequest] = []
        self._server = _Server(("127.0.0.1", port), _handler_for(self))
        self._thread: threading.Thread | None = None
        host, bound = self._server.server_address[:2]
        self.url = f"http://{host!s}:{bound}/v1"

    # -- scripting --------------------------------------------------------------------

    def respond(
        self,
        text: Text | None = None,
        *,
        model: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        delay: float = 0.0,
    ) -> FakeProvider:
        """How to answer `model` (every model when None) from now on.

        Parameters:
          text(str|callable|None): the answer, or a function of the FakeRequest; by
            default ``"<model> says: <last user message>"``.
          prompt_tokens, completion_tokens(int|None): the usage to report; by default
            about one token per four characters.
          delay(float): seconds to wait before answering.
        """
        with self._lock:
            self._replies[_bare(model)] = _Reply(text, prompt_tokens, completion_tokens, delay)
        return self

    def fail(
        self,
        status: int = 500,
        *,
        model: str | None = None,
        times: int = 1,
        retry_after: float | None = None,
        message: str = "the fake provider failed on purpose",
    ) -> FakeProvider:
        """Answer the next `times` requests for `model` (any model when None) with an error.

        Parameters:
          status(int): the HTTP status, e.g. 429 (rate limit) or 500.
          retry_after(float|None): seconds, sent as ``Retry-After`` and ``retry-after-ms``.
        """
        with self._lock:
            self._failures[_bare(model)].extend([_Failure(status, message, retry_after)] * times)
        return self

    @property
    def requests(self) -> list[FakeRequest]:
        with self._lock:
            return list(self._requests)

    def count(self, model: str | None = None) -> int:
        """How many requests arrived (for `model` only, when given)."""
        bare = _bare(model)
        return sum(1 for r in self.requests if bare is None or r.model == bare)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FakeProvider:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.02},  # how soon close() returns, in seconds
                name="fake-llm-provider",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- serving ----------------------------------------------------------------------

    def _answer(self, request: FakeRequest) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._lock:
            self._requests.append(request)
            failure = None
            for key in (request.model, None):
                if self._failures.get(key):
                    failure = self._failures[key].popleft()
                    break
            reply = self._replies.get(request.model) or self._replies[None]
        if failure is not None:
            headers: dict[str, str] = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = f"{failure.retry_after:g}"
                headers["retry-after-ms"] = str(int(failure.retry_after * 1000))
            error = {"message": failure.message, "type": "fake_error", "code": None}
            return failure.status, headers, {"error": error}
        if reply.delay:
            time.sleep(reply.delay)
        if callable(reply.text):
            text = reply.text(request)
        elif reply.text is not None:
            text = reply.text
        else:
            last: dict[str, Any] = next(
                (m for m in reversed(request.messages) if m.get("role") == "user"), {}
            )
            text = f"{request.model} says: {str(last.get('content', ''))[:200]}"
        prompt_chars = sum(len(str(m.get("content", ""))) for m in request.messages)
        usage_in = reply.prompt_tokens if reply.prompt_tokens is not None else prompt_chars // 4 + 1
        usage_out = (
            reply.completion_tokens if reply.completion_tokens is not None else len(text) // 4 + 1
        )
        body: dict[str, Any] = {
            "id": f"chatcmpl-fake-{len(self._requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": usage_in,
                "completion_tokens": usage_out,
                "total_tokens": usage_in + usage_out,
            },
        }
        return 200, {}, body


def _bare(model: str | None) -> str | None:
    """The model name as the provider sees it: ``openai/gpt-4o`` arrives as ``gpt-4o``."""
    return model.split("/", 1)[1] if model and model.startswith("openai/") else model


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 stalls concurrent clients


def _handler_for(provider: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else ~40 ms per keep-alive request

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._send(400, {}, {"error": {"message": "the body is not JSON"}})
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {}, {"error": {"message": f"no route {self.path}"}})
                return
            request = FakeRequest(
                model=str(body.get("model", "")),
                messages=list(body.get("messages") or []),
                body=body,
                headers={k.lower(): v for k, v in self.headers.items()},
            )
            self._send(*provider._answer(request))

        def _send(self, status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # quiet: tests read `provider.requests` instead

    return Handler
