"""The one definition of the completion parameters, and the sync and async faces derived from it.

Each public method's parameters are written once, as a typing ``Protocol`` (its overloads tell type checkers what
``stream=True`` returns). ``public_method`` turns that definition into a classmethod whose runtime signature is the
protocol's, binds a call's arguments against it, and hands the implementation one checked value (for completions a
``CompletionArguments``: validated body, resolved model name). Sync and async implementations differ only in how
they send.

Adding a resource (``ChatCompletion``, ``File``…): put its request building in ``_core/request_specs.py``, declare
its parameters here once if they are shared by a sync and an async method, and write the two faces as a few lines
each over ``_transport.request`` / ``arequest`` (or ``stream_events`` / ``astream_events``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal, Protocol, TypeVar, cast, get_overloads, overload

from llmengine._constants import COMPLETION_TIMEOUT, DEFAULT_TIMEOUT
from llmengine._core.request_specs import RequestSpec, completion_body, completion_request, resolve_model
from llmengine.errors import ValidationError

R_co = TypeVar("R_co", covariant=True)
S_co = TypeVar("S_co", covariant=True)
A = TypeVar("A")

# Parameters that say where and how to send; every other named parameter is a field of the request body.
_ROUTING = frozenset({"cls", "model", "model_name", "timeout", "stream", "request_headers", "kwargs"})


class CreateCall(Protocol[R_co, S_co]):
    """``Completion.create`` (``R_co`` the completion, ``S_co`` the stream) and ``acreate`` (their awaitables)."""

    @overload
    def __call__(
        self,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = COMPLETION_TIMEOUT,
        stream: Literal[False] = False,
        request_headers: dict[str, str] | None = None,
        *,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> R_co: ...

    @overload
    def __call__(
        self,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = COMPLETION_TIMEOUT,
        *,
        stream: Literal[True],
        request_headers: dict[str, str] | None = None,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> S_co: ...

    # The general form, last: its signature is the one the methods show at run time.
    @overload
    def __call__(
        self,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = COMPLETION_TIMEOUT,
        stream: bool = False,
        request_headers: dict[str, str] | None = None,
        *,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> R_co | S_co: ...


class SubmitCall(Protocol[R_co]):
    """``Completion.submit`` / ``asubmit``: the same body, no stream; ``timeout`` bounds only the submit call."""

    def __call__(
        self,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        request_headers: dict[str, str] | None = None,
        *,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> R_co: ...


@dataclass(frozen=True)
class CompletionArguments:
    """One call's arguments, checked: the endpoint name, the validated body, and how to send it."""

    model: str
    body: dict[str, Any]
    timeout: float
    stream: bool
    request_headers: dict[str, str] | None

    @classmethod
    def from_bound(cls, arguments: dict[str, Any]) -> CompletionArguments:
        if arguments["prompt"] is None:
            raise ValidationError("prompt is required")
        fields = {name: value for name, value in arguments.items() if name not in _ROUTING}
        return cls(
            model=resolve_model(arguments["model"], arguments["model_name"]),
            body=completion_body({**fields, **arguments["kwargs"]}),
            timeout=arguments["timeout"],
            stream=arguments.get("stream", False),
            request_headers=arguments["request_headers"],
        )

    def request(self, kind: Literal["sync", "stream", "async"]) -> RequestSpec:
        return completion_request(kind, self.model, self.body, self.timeout, self.request_headers)


def _runtime_signature(face: type[Any]) -> inspect.Signature:
    # `face.__call__` is typing's placeholder once overloaded; get_overloads finds the originals by their name.
    original = SimpleNamespace(__module__=face.__module__, __qualname__=f"{face.__qualname__}.__call__")
    overloads = get_overloads(cast("Callable[..., object]", original))
    template = overloads[-1] if overloads else face.__call__
    parameters = list(inspect.signature(template).parameters.values())
    cls_parameter = inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return inspect.Signature([cls_parameter, *parameters[1:]])  # `self` of the protocol becomes `cls`


def public_method(face: type[Any], read: Callable[[dict[str, Any]], A], implementation: Callable[[A], object]) -> Any:
    """A classmethod with ``face``'s parameters; a call's arguments go through ``read`` into ``implementation``.

    ``read`` gets every parameter by name (defaults applied) and returns what the implementation needs (for
    completions, ``CompletionArguments.from_bound``); ``implementation`` may be a plain or an ``async def``.
    """
    signature = _runtime_signature(face)

    def bind(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> A:
        bound = signature.bind(cls, *args, **kwargs)
        bound.apply_defaults()
        return read(bound.arguments)

    method: Callable[..., Any]
    if inspect.iscoroutinefunction(implementation):
        coroutine = implementation

        async def method(cls: type, *args: Any, **kwargs: Any) -> Any:
            awaitable: Coroutine[Any, Any, Any] = coroutine(bind(cls, args, kwargs))
            return await awaitable

    else:

        def method(cls: type, *args: Any, **kwargs: Any) -> Any:
            return implementation(bind(cls, args, kwargs))

    functools.update_wrapper(method, implementation, assigned=("__doc__", "__module__"), updated=())
    method.__name__ = method.__qualname__ = implementation.__name__.lstrip("_")  # `_create` is shown as `create`
    setattr(method, "__signature__", signature)  # noqa: B010 - what inspect.signature shows
    return classmethod(method)
