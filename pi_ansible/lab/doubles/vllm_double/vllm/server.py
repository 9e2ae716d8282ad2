"""The HTTP side: vLLM 0.33's OpenAI-compatible routes on the standard library's ThreadingHTTPServer.

Bodies are compact JSON as starlette's JSONResponse writes them, streams are SSE over chunked
transfer encoding, access lines look like uvicorn's. Only `/v1`, `/v2`, `/inference` and `/cohere`
need the API key (vLLM's AuthenticationMiddleware); `/health`, `/metrics`, `/version`, `/ping` do not.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from vllm import __version__, _log
from vllm.behaviour import Msg, Shaped, args_json, content_text, count_tokens, decide, pieces, shape, truncate
from vllm.families import Family, tool_call_id
from vllm.metrics import Stats

GUARDED_PREFIXES = ("/v1", "/v2", "/inference", "/cohere")
ROUTES = [
    ("/openapi.json", "HEAD, GET"),
    ("/docs", "HEAD, GET"),
    ("/docs/oauth2-redirect", "HEAD, GET"),
    ("/redoc", "HEAD, GET"),
    ("/load", "GET"),
    ("/version", "GET"),
    ("/health", "GET"),
    ("/metrics", "GET"),
    ("/tokenize", "POST"),
    ("/detokenize", "POST"),
    ("/v1/models", "GET"),
    ("/ping", "GET"),
    ("/ping", "POST"),
    ("/invocations", "POST"),
    ("/v1/chat/completions", "POST"),
    ("/v1/responses", "POST"),
    ("/v1/responses/{response_id}", "GET"),
    ("/v1/responses/{response_id}/cancel", "POST"),
    ("/v1/completions", "POST"),
    ("/v1/messages", "POST"),
]
MAX_BODY = 64 << 20


def _hex() -> str:
    return uuid.uuid4().hex


def _dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class ApiError(Exception):
    def __init__(self, status: int, message: str, err_type: str = "BadRequestError", param=None):
        super().__init__(message)
        self.status, self.message, self.err_type, self.param = status, message, err_type, param

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.err_type,
                "param": self.param,
                "code": self.status,
            }
        }


@dataclass
class App:
    served_names: list[str]
    model_path: str
    max_model_len: int
    family: Family
    auto_tools: bool
    tool_parser: str | None
    reasoning_parser: str | None
    is_gpt_oss: bool
    template_kwargs: dict
    api_keys: list[str]
    stats: Stats
    fingerprint: str | None
    stream_delay: float = 0.0
    fail_requests: int = 0
    access_log: bool = True
    quiet_paths: frozenset = frozenset()
    dead: bool = False
    responses: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.served_names[0]

    @property
    def reasoning_separated(self) -> bool:
        return bool(self.reasoning_parser) or self.is_gpt_oss

    def thinking(self, kwargs: dict) -> bool:
        if kwargs.get("enable_thinking") is False or kwargs.get("thinking") is False:
            return False
        return self.family.thinks or bool(self.reasoning_parser) or self.is_gpt_oss

    def structured(self, tool_choice) -> bool:
        if isinstance(tool_choice, dict) or tool_choice == "required":
            return True
        return self.auto_tools and self.tool_parser in self.family.parsers


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sock, app: App):
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()[:2]
        self.app = app
        self.active = 0
        self.active_lock = threading.Lock()

    def server_bind(self):  # already bound by the launcher, before the model loads
        pass

    def handle_error(self, request, client_address):
        # A client that hangs up (a health probe, a cancelled stream) is routine for uvicorn: no traceback.
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server
    timeout = 60

    def version_string(self) -> str:
        return "uvicorn"

    def log_message(self, format, *args):
        pass

    # -- plumbing -----------------------------------------------------------------------------
    def _access(self, status: int) -> None:
        app = self.server.app
        path = urlsplit(self.path).path
        if not app.access_log or path in app.quiet_paths:
            return
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        _log.write(
            f"INFO:     {self.client_address[0]}:{self.client_address[1]} - "
            f'"{self.command} {self.path} HTTP/1.1" {status} {phrase}'
        )

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._access(status)

    def _json(self, status: int, obj) -> None:
        self._send(status, _dumps(obj))

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self._access(200)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _sse(self, obj, event: str | None = None) -> None:
        head = f"event: {event}\n".encode() if event else b""
        self._chunk(head + b"data: " + (obj if isinstance(obj, bytes) else _dumps(obj)) + b"\n\n")
        delay = self.server.app.stream_delay
        if delay:
            time.sleep(delay)

    def _read_raw(self) -> None:
        """Read the whole request body first, so that an early answer (401, 500) leaves the
        connection clean for the client's next request."""
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            self.close_connection = True
            self._raw = b""
            return
        self._raw = self.rfile.read(length) if length > 0 else b""

    def _body(self):
        raw = self._raw
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            raise ApiError(
                400,
                f"[{{'type': 'json_invalid', 'loc': ('body', {e.pos}), 'msg': 'JSON decode error', "
                f"'input': {{}}, 'ctx': {{'error': '{e.msg}'}}}}]",
            ) from e
        if not isinstance(body, dict):
            raise ApiError(
                400,
                "[{'type': 'model_attributes_type', 'loc': ('body',), 'msg': 'Input should be a "
                "valid dictionary or object to extract fields from'}]",
            )
        return body

    def _authorized(self) -> bool:
        keys = self.server.app.api_keys
        if not keys:
            return True
        value = self.headers.get("Authorization") or ""
        scheme, _, param = value.partition(" ")
        if scheme.lower() != "bearer":
            return False
        digest = hashlib.sha256(param.encode()).digest()
        return any(hashlib.sha256(k.encode()).digest() == digest for k in keys)

    # -- dispatch -----------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_OPTIONS(self):
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def _dispatch(self) -> None:
        srv = self.server
        with srv.active_lock:
            srv.active += 1
        try:
            self._read_raw()
            self._route()
        except ApiError as e:
            self._json(e.status, e.body())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with srv.active_lock:
                srv.active -= 1

    def _route(self) -> None:
        app = self.server.app
        path = urlsplit(self.path).path
        method = self.command
        if path.startswith(GUARDED_PREFIXES) and not self._authorized():
            self._json(401, {"error": "Unauthorized"})
            return
        get = method in ("GET",)
        post = method == "POST"
        if post and path in ("/v1/chat/completions", "/v1/completions", "/v1/responses") and self._fail_now():
            _log.error(
                "serving.py:1412",
                "Error in generation: EngineCore encountered an issue. See stack trace "
                "(above) for the root cause.",
            )
            raise ApiError(
                500,
                "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                "InternalServerError",
            )
        if path in ("/health", "/ping") and (get or (post and path == "/ping")):
            self._send(503 if app.dead else 200, b"")
        elif path == "/version" and get:
            self._json(200, {"version": __version__})
        elif path == "/load" and get:
            self._json(200, {"server_load": app.stats.running})
        elif path == "/metrics" and get:
            self._send(200, app.stats.render().encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/v1/models" and get:
            self._json(200, self._models())
        elif path == "/v1/chat/completions" and post:
            self._chat(self._body())
        elif path == "/v1/completions" and post:
            self._completions(self._body())
        elif path == "/v1/responses" and post:
            self._responses(self._body())
        elif path.startswith("/v1/responses/") and get:
            rid = path.rsplit("/", 1)[1]
            with app.lock:
                stored = app.responses.get(rid)
            if stored is None:
                raise ApiError(404, f"Response with id '{rid}' not found.", "NotFoundError")
            self._json(200, stored["response"])
        elif path == "/tokenize" and post:
            body = self._body()
            text = body.get("prompt") or content_text(
                " ".join(content_text(m.get("content")) for m in body.get("messages") or [])
            )
            n = count_tokens(text)
            self._json(
                200,
                {
                    "count": n,
                    "max_model_len": app.max_model_len,
                    "tokens": list(range(100, 100 + n)),
                    "token_strs": None,
                },
            )
        elif path == "/detokenize" and post:
            body = self._body()
            self._json(200, {"prompt": " ".join(f"<{t}>" for t in body.get("tokens") or [])})
        elif any(path == r for r, _ in ROUTES) or path.startswith("/v1/responses/"):
            self._json(405, {"detail": "Method Not Allowed"})
        else:
            self._json(404, {"detail": "Not Found"})

    def _fail_now(self) -> bool:
        app = self.server.app
        with app.lock:
            if app.fail_requests == 0:
                return False
            if app.fail_requests > 0:
                app.fail_requests -= 1
            return True

    # -- endpoints ----------------------------------------------------------------------------
    def _models(self) -> dict:
        app = self.server.app
        now = int(time.time())
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": now,
                    "owned_by": "vllm",
                    "root": app.model_path,
                    "parent": None,
                    "max_model_len": app.max_model_len,
                    "permission": [
                        {
                            "id": f"modelperm-{_hex()[:16]}",
                            "object": "model_permission",
                            "created": now,
                            "allow_create_engine": False,
                            "allow_sampling": True,
                            "allow_logprobs": True,
                            "allow_search_indices": False,
                            "allow_view": True,
                            "allow_fine_tuning": False,
                            "organization": "*",
                            "group": None,
                            "is_blocking": False,
                        }
                    ],
                }
                for name in app.served_names
            ],
        }

    def _check_model(self, body: dict) -> str:
        app = self.server.app
        model = body.get("model")
        if model and model not in app.served_names:
            raise ApiError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        return model or app.name

    def _check_length(self, prompt_tokens: int, max_tokens) -> int:
        app = self.server.app
        if prompt_tokens >= app.max_model_len:
            raise ApiError(
                400,
                f"This model's maximum context length is {app.max_model_len} tokens. However, your "
                f"request has {prompt_tokens} input tokens. Please reduce the length of the input "
                "messages.",
            )
        if max_tokens is not None:
            if not isinstance(max_tokens, int) or max_tokens < 1:
                raise ApiError(400, f"max_tokens must be at least 1, got {max_tokens}.")
            if max_tokens > app.max_model_len - prompt_tokens:
                raise ApiError(
                    400,
                    f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
                    f"maximum context length is {app.max_model_len} tokens and your request has "
                    f"{prompt_tokens} input tokens ({max_tokens} > {app.max_model_len} - "
                    f"{prompt_tokens}).",
                )
            return max_tokens
        return app.max_model_len - prompt_tokens

    @staticmethod
    def _chat_messages(raw) -> list[Msg]:
        if not isinstance(raw, list) or not raw:
            raise ApiError(400, "[{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required'}]")
        out = []
        for m in raw:
            if not isinstance(m, dict) or "role" not in m:
                raise ApiError(
                    400, "[{'type': 'missing', 'loc': ('body', 'messages', 'role'), 'msg': 'Field required'}]"
                )
            calls = [
                {
                    "id": tc.get("id", ""),
                    "name": (tc.get("function") or {}).get("name", ""),
                    "arguments": (tc.get("function") or {}).get("arguments", ""),
                }
                for tc in m.get("tool_calls") or []
            ]
            out.append(
                Msg(m["role"], content_text(m.get("content")), calls, m.get("tool_call_id"), m.get("name"))
            )
        return out

    @staticmethod
    def _chat_tools(raw) -> list[dict]:
        tools = []
        for t in raw or []:
            fn = t.get("function") if isinstance(t, dict) else None
            if t.get("type", "function") == "function" and fn and fn.get("name"):
                tools.append(
                    {
                        "name": fn["name"],
                        "description": fn.get("description") or "",
                        "parameters": fn.get("parameters") or {},
                    }
                )
        return tools

    def _generate(
        self, msgs: list[Msg], tools: list[dict], tool_choice, kwargs: dict, *, responses_api=False
    ) -> Shaped:
        app = self.server.app
        d = decide(msgs, tools, tool_choice, app.name)
        structured = app.structured(tool_choice) or (responses_api and app.is_gpt_oss)
        return shape(
            d,
            app.family,
            thinking=app.thinking(kwargs),
            reasoning_separated=app.reasoning_separated,
            structured_tools=structured,
            forced_named=isinstance(tool_choice, dict),
        )

    def _chat(self, body: dict) -> None:
        app = self.server.app
        started = time.monotonic()
        model = self._check_model(body)
        msgs = self._chat_messages(body.get("messages"))
        tools = self._chat_tools(body.get("tools"))
        tool_choice = body.get("tool_choice") or ("auto" if tools else "none")
        if (
            tool_choice == "auto"
            and tools
            and not (app.auto_tools and app.tool_parser)
            and not app.is_gpt_oss
        ):
            raise ApiError(
                400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
            )
        prompt_tokens = sum(count_tokens(m.content) + 4 for m in msgs) + count_tokens(json.dumps(tools)) + 2
        max_tokens = self._check_length(
            prompt_tokens, body.get("max_completion_tokens", body.get("max_tokens"))
        )
        kwargs = {**app.template_kwargs, **(body.get("chat_template_kwargs") or {})}
        out = self._generate(msgs, tools, tool_choice, kwargs)
        content, cut = truncate(out.content or "", max_tokens) if not out.calls else (out.content, False)
        finish = "length" if cut else out.finish_reason
        reasoning = out.reasoning if body.get("include_reasoning", True) else None
        completion_tokens = count_tokens(out.raw) + count_tokens(out.reasoning or "")
        if cut:
            completion_tokens = max_tokens
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": None,
        }
        cid, created = f"chatcmpl-{_hex()}", int(time.time())
        calls = [
            {
                "id": tool_call_id(app.family.name, n, i, _hex()),
                "type": "function",
                "function": {"name": n, "arguments": args_json(a)},
            }
            for i, (n, a) in enumerate(out.calls)
        ]
        app.stats.start()
        if not body.get("stream"):
            app.stats.finish(
                prompt_tokens,
                completion_tokens,
                finish,
                time.monotonic() - started,
                time.monotonic() - started,
            )
            self._json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": content,
                                "refusal": None,
                                "annotations": None,
                                "audio": None,
                                "function_call": None,
                                "tool_calls": calls,
                                "reasoning": reasoning,
                            },
                            "logprobs": None,
                            "finish_reason": finish,
                            "stop_reason": None,
                            "token_ids": None,
                        }
                    ],
                    "service_tier": None,
                    "system_fingerprint": app.fingerprint,
                    "usage": usage,
                    "prompt_logprobs": None,
                    "prompt_token_ids": None,
                    "kv_transfer_params": None,
                },
            )
            return
        opts = body.get("stream_options") or {}

        def chunk(delta, finish_reason=None, **extra):
            c = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason, **extra}
                ],
            }
            return c

        try:
            self._start_stream()
            self._sse(chunk({"role": "assistant", "content": ""}))
            ttft = time.monotonic() - started
            for p in pieces(reasoning or ""):
                self._sse(chunk({"reasoning": p}))
            for p in pieces(content or ""):
                self._sse(chunk({"content": p}))
            for i, call in enumerate(calls):
                self._sse(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "id": call["id"],
                                    "type": "function",
                                    "index": i,
                                    "function": {"name": call["function"]["name"], "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                args = call["function"]["arguments"]
                half = len(args) // 2
                for part in (args[:half], args[half:]):
                    if part:
                        self._sse(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
            self._sse(chunk({"content": ""}, finish, stop_reason=None))
            if opts.get("include_usage"):
                self._sse(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            self._sse(b"[DONE]")
            self._end_stream()
        except (BrokenPipeError, ConnectionResetError):
            app.stats.abort()
            self.close_connection = True
            return
        app.stats.finish(prompt_tokens, completion_tokens, finish, ttft, time.monotonic() - started)

    def _completions(self, body: dict) -> None:
        app = self.server.app
        started = time.monotonic()
        model = self._check_model(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = " ".join(p if isinstance(p, str) else " ".join(map(str, p)) for p in prompt)
        if not isinstance(prompt, str):
            raise ApiError(400, "[{'type': 'missing', 'loc': ('body', 'prompt'), 'msg': 'Field required'}]")
        prompt_tokens = count_tokens(prompt) or 1
        max_tokens = self._check_length(prompt_tokens, body.get("max_tokens", 16))
        text = f" This is a deterministic completion from the vLLM lab double serving {app.name}."
        text, cut = truncate(text, max_tokens)
        if body.get("echo"):
            text = prompt + text
        finish = "length" if cut else "stop"
        completion_tokens = count_tokens(text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": None,
        }
        cid, created = f"cmpl-{_hex()}", int(time.time())
        app.stats.start()
        if not body.get("stream"):
            app.stats.finish(prompt_tokens, completion_tokens, finish, 0.0, time.monotonic() - started)
            self._json(
                200,
                {
                    "id": cid,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "text": text,
                            "logprobs": None,
                            "finish_reason": finish,
                            "stop_reason": None,
                            "prompt_logprobs": None,
                        }
                    ],
                    "service_tier": None,
                    "system_fingerprint": app.fingerprint,
                    "usage": usage,
                    "kv_transfer_params": None,
                },
            )
            return
        try:
            self._start_stream()
            parts = pieces(text)
            for i, p in enumerate(parts):
                last = i == len(parts) - 1
                self._sse(
                    {
                        "id": cid,
                        "object": "text_completion",
                        "created": created,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "text": p,
                                "logprobs": None,
                                "finish_reason": finish if last else None,
                                "stop_reason": None,
                            }
                        ],
                    }
                )
            if (body.get("stream_options") or {}).get("include_usage"):
                self._sse(
                    {
                        "id": cid,
                        "object": "text_completion",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            self._sse(b"[DONE]")
            self._end_stream()
        except (BrokenPipeError, ConnectionResetError):
            app.stats.abort()
            self.close_connection = True
            return
        app.stats.finish(prompt_tokens, completion_tokens, finish, 0.0, time.monotonic() - started)

    # -- Responses API ------------------------------------------------------------------------
    @staticmethod
    def _response_items(items) -> list[Msg]:
        if isinstance(items, str):
            return [Msg("user", items)]
        out: list[Msg] = []
        for item in items or []:
            if not isinstance(item, dict):
                continue
            kind = item.get("type", "message")
            if kind == "message" or (
                "role" in item and kind not in ("function_call", "function_call_output")
            ):
                out.append(Msg(item.get("role", "user"), content_text(item.get("content"))))
            elif kind == "function_call":
                call = {
                    "id": item.get("call_id", ""),
                    "name": item.get("name", ""),
                    "arguments": item.get("arguments", ""),
                }
                if out and out[-1].role == "assistant" and not out[-1].content:
                    out[-1].tool_calls.append(call)
                else:
                    out.append(Msg("assistant", "", [call]))
            elif kind == "function_call_output":
                output = item.get("output")
                out.append(
                    Msg(
                        "tool",
                        output if isinstance(output, str) else content_text(output),
                        tool_call_id=item.get("call_id"),
                    )
                )
        return out

    def _responses(self, body: dict) -> None:
        app = self.server.app
        started = time.monotonic()
        model = self._check_model(body)
        history: list[Msg] = []
        prev_id = body.get("previous_response_id")
        if prev_id:
            with app.lock:
                prev = app.responses.get(prev_id)
            if prev is None:
                raise ApiError(404, f"Response with id '{prev_id}' not found.", "NotFoundError")
            history = list(prev["messages"])
        if body.get("instructions") and not history:
            history.append(Msg("system", str(body["instructions"])))
        if body.get("input") is None:
            raise ApiError(400, "[{'type': 'missing', 'loc': ('body', 'input'), 'msg': 'Field required'}]")
        msgs = history + self._response_items(body.get("input"))
        tools = [
            {
                "name": t["name"],
                "description": t.get("description") or "",
                "parameters": t.get("parameters") or {},
            }
            for t in body.get("tools") or []
            if isinstance(t, dict) and t.get("type") == "function" and t.get("name")
        ]
        tool_choice = body.get("tool_choice") or "auto"
        if isinstance(tool_choice, dict) and "function" not in tool_choice:
            tool_choice = {"function": {"name": tool_choice.get("name")}}
        prompt_tokens = sum(count_tokens(m.content) + 4 for m in msgs) + count_tokens(json.dumps(tools)) + 2
        max_out = self._check_length(prompt_tokens, body.get("max_output_tokens"))
        kwargs = {**app.template_kwargs, **(body.get("chat_template_kwargs") or {})}
        out = self._generate(msgs, tools, tool_choice, kwargs, responses_api=True)
        text, cut = truncate(out.content or "", max_out) if not out.calls else (out.content, False)
        reasoning_tokens = count_tokens(out.reasoning or "")
        output_tokens = count_tokens(out.raw) + reasoning_tokens
        items: list[dict] = []
        if out.reasoning:
            items.append(
                {
                    "id": f"rs_{_hex()}",
                    "summary": [],
                    "type": "reasoning",
                    "content": [{"text": out.reasoning, "type": "reasoning_text"}],
                    "encrypted_content": None,
                    "status": None,
                }
            )
        if text:
            items.append(
                {
                    "id": f"msg_{_hex()}",
                    "content": [{"annotations": [], "text": text, "type": "output_text", "logprobs": None}],
                    "role": "assistant",
                    "status": "completed",
                    "type": "message",
                }
            )
        for name, args in out.calls:
            items.append(
                {
                    "arguments": args_json(args),
                    "call_id": f"call_{_hex()[:24]}",
                    "name": name,
                    "type": "function_call",
                    "id": f"fc_{_hex()}",
                    "status": "completed",
                }
            )
        rid, created = f"resp_{_hex()}", int(time.time())
        usage = {
            "input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": prompt_tokens + output_tokens,
        }

        def response(status: str, output: list, with_usage: bool) -> dict:
            return {
                "id": rid,
                "created_at": created,
                "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
                "instructions": body.get("instructions"),
                "metadata": body.get("metadata"),
                "model": model,
                "object": "response",
                "output": output,
                "parallel_tool_calls": body.get("parallel_tool_calls", True),
                "temperature": body.get("temperature", 1.0),
                "tool_choice": body.get("tool_choice", "auto"),
                "tools": body.get("tools") or [],
                "top_p": body.get("top_p", 1.0),
                "background": False,
                "max_output_tokens": max_out,
                "max_tool_calls": None,
                "previous_response_id": prev_id,
                "prompt": None,
                "reasoning": body.get("reasoning"),
                "service_tier": "auto",
                "status": status,
                "text": None,
                "top_logprobs": None,
                "truncation": "disabled",
                "usage": usage if with_usage else None,
                "user": None,
            }

        status = "incomplete" if cut else "completed"
        final = response(status, items, True)
        new_history = [
            *msgs,
            Msg(
                "assistant",
                text or "",
                [
                    {"id": i["call_id"], "name": i["name"], "arguments": i["arguments"]}
                    for i in items
                    if i["type"] == "function_call"
                ],
            ),
        ]
        with app.lock:
            app.responses[rid] = {"response": final, "messages": new_history}
        app.stats.start()
        if not body.get("stream"):
            app.stats.finish(
                prompt_tokens, output_tokens, "length" if cut else "stop", 0.0, time.monotonic() - started
            )
            self._json(200, final)
            return
        seq = [0]

        def ev(kind: str, **fields) -> None:
            payload = {**fields, "sequence_number": seq[0], "type": kind}
            seq[0] += 1
            self._sse(payload, event=kind)

        try:
            self._start_stream()
            ev("response.created", response=response("in_progress", [], False))
            ev("response.in_progress", response=response("in_progress", [], False))
            for idx, item in enumerate(items):
                if item["type"] == "reasoning":
                    rtext = item["content"][0]["text"]
                    ev(
                        "response.output_item.added",
                        item={**item, "content": [], "status": "in_progress"},
                        output_index=idx,
                    )
                    ev(
                        "response.content_part.added",
                        item_id=item["id"],
                        output_index=idx,
                        content_index=0,
                        part={"text": "", "type": "reasoning_text"},
                    )
                    for p in pieces(rtext):
                        ev(
                            "response.reasoning_text.delta",
                            item_id=item["id"],
                            output_index=idx,
                            content_index=0,
                            delta=p,
                        )
                    ev(
                        "response.reasoning_text.done",
                        item_id=item["id"],
                        output_index=idx,
                        content_index=0,
                        text=rtext,
                    )
                    ev(
                        "response.content_part.done",
                        item_id=item["id"],
                        output_index=idx,
                        content_index=0,
                        part={"text": rtext, "type": "reasoning_text"},
                    )
                    ev("response.output_item.done", item=item, output_index=idx)
                elif item["type"] == "message":
                    mtext = item["content"][0]["text"]
                    ev(
                        "response.output_item.added",
                        item={**item, "content": [], "status": "in_progress"},
                        output_index=idx,
                    )
                    ev(
                        "response.content_part.added",
                        item_id=item["id"],
                        output_index=idx,
                        content_index=0,
                        part={"annotations": [], "text": "", "type": "output_text", "logprobs": []},
                    )
                    for p in pieces(mtext):
                        ev(
                            "response.output_text.delta",
                            item_id=item["id"],
                            output_index=idx,
                            content_index=0,
                            delta=p,
                            logprobs=[],
                        )
                    ev(
                        "response.output_text.done",
                        item_id=item["id"],
                        output_index=idx,
                        content_index=0,
                        text=mtext,
                        logprobs=[],
                    )
                    ev(
                        "response.content_part.done",
                        item_id=item["id"],
                        output_index=idx,
                        content_index=0,
                        part={"annotations": [], "text": mtext, "type": "output_text", "logprobs": []},
                    )
                    ev("response.output_item.done", item=item, output_index=idx)
                else:
                    ev(
                        "response.output_item.added",
                        item={**item, "arguments": "", "status": "in_progress"},
                        output_index=idx,
                    )
                    args = item["arguments"]
                    half = len(args) // 2
                    for part in (args[:half], args[half:]):
                        if part:
                            ev(
                                "response.function_call_arguments.delta",
                                item_id=item["id"],
                                output_index=idx,
                                delta=part,
                            )
                    ev(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=idx,
                        arguments=args,
                        name=item["name"],
                    )
                    ev("response.output_item.done", item=item, output_index=idx)
            ev("response.incomplete" if cut else "response.completed", response=final)
            self._end_stream()
        except (BrokenPipeError, ConnectionResetError):
            app.stats.abort()
            self.close_connection = True
            return
        app.stats.finish(
            prompt_tokens, output_tokens, "length" if cut else "stop", 0.0, time.monotonic() - started
        )
