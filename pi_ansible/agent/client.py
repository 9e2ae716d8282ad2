"""The HTTP edge: the OpenAI SDK client, and its failures turned into one-line messages with a fix.

`openai` is imported only here and only when a client is made, so `pi --help` stays fast.
"""

from __future__ import annotations

import os
from typing import Any

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODEL = "gpt-5-mini"
KEY_FIX = "Set the right key with --api-key or OPENAI_API_KEY/PI_API_KEY."
REQUEST_TIMEOUT = float(os.environ.get("PI_AGENT_TIMEOUT", "300"))


class AgentError(Exception):
    """A failure the user has to act on; the message is one line that says what to do."""


def make_client(
    base_url: str, api_key: str, *, timeout: float = REQUEST_TIMEOUT, max_retries: int = 1
) -> Any:
    import openai

    return openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    message = None
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = inner.get("message") or inner.get("detail") or body.get("detail")
    elif isinstance(body, str) and body.strip():
        message = body
    if not message:
        message = getattr(exc, "message", None) or str(exc)
    return _one_line(message, 200).rstrip(". ") or "no details"


def _root_cause(exc: BaseException) -> str:
    seen = set()
    cause: BaseException | None = exc
    last = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        last = cause
        cause = cause.__cause__ or cause.__context__
    text = str(last)
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if (
        "name or service not known" in lowered
        or "nodename nor servname" in lowered
        or "getaddrinfo" in lowered
    ):
        return "unknown host"
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    if "unreachable" in lowered:
        return "network unreachable"
    return _one_line(text, 120) if text else type(last).__name__


def describe_error(
    exc: BaseException, base_url: str, model: str | None = None, *, key_given: bool = True
) -> str | None:
    """One line for a failure of the OpenAI SDK, or None when `exc` is not one (a bug: let it show)."""
    try:
        import openai
    except ImportError:  # pragma: no cover - openai is a dependency
        return None
    if not isinstance(exc, openai.OpenAIError):
        return None
    where = f"the server at {base_url}"
    if isinstance(exc, openai.APITimeoutError):
        return (
            f"{where} did not answer in time. Check that the model is running and not overloaded, "
            f"or raise PI_AGENT_TIMEOUT (seconds, now {REQUEST_TIMEOUT:g})."
        )
    if isinstance(exc, openai.APIConnectionError):
        return (
            f"could not reach {where} ({_root_cause(exc)}). Check --base-url and that the model is running "
            f"(pi list shows running models)."
        )
    if isinstance(exc, openai.AuthenticationError):
        if not key_given:
            return f"{where} needs an API key (401). Set it with --api-key or OPENAI_API_KEY/PI_API_KEY."
        return f"{where} refused the API key (401). {KEY_FIX}"
    if isinstance(exc, openai.PermissionDeniedError):
        return f"{where} denied access (403): {_server_message(exc)}. {KEY_FIX}"
    if isinstance(exc, openai.NotFoundError):
        subject = f"model '{model}'" if model else "the request"
        return (
            f"{where} answered 404 for {subject}: {_server_message(exc)}. Check --model against "
            f"{base_url.rstrip('/')}/models and that --base-url ends in /v1."
        )
    if isinstance(exc, openai.RateLimitError):
        return (
            f"{where} is rate limiting requests (429): {_server_message(exc)}. Wait a moment and try again."
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status >= 500:
            return (
                f"{where} failed with HTTP {status}: {_server_message(exc)}. Check the server's log "
                f"(pi logs NAME for a pi model) and try again."
            )
        return f"{where} rejected the request (HTTP {status}): {_server_message(exc)}."
    if isinstance(exc, openai.APIError):
        return f"{where} reported an error mid-answer: {_server_message(exc)}. Try again; check the server's log if it persists."
    return f"the OpenAI client failed: {_one_line(str(exc), 200)}."


def scrub(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 4:
        return text.replace(secret, "[redacted]")
    return text
