"""The bundled example policy covers the API surface that can reach the two controlled models.

Each endpoint is classified with the policy's own RouteTable: a controlled model gives 4E091, any other model
EAR99, and spellings the app would also route (trailing slash, a mount prefix in root_path, the case of a
model name) change nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from geofence.policy.load import load_policy
from geofence.routing.routes import RouteTable

TABLE: RouteTable = load_policy().routes
CONTROLLED = "4E091"
OTHER = "EAR99"


def classes(
    method: str,
    path: str,
    body: Any = None,
    query: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = (),
    root_path: str = "",
) -> set[str]:
    """Every class the request must pass (one per spelling), parameters included."""
    raw = json.dumps(body).encode() if body is not None else b""
    route = TABLE.classify(method, "api.example.com", root_path + path, root_path)
    return {
        r.params.classify(raw, query, headers)[0] if r.params is not None else r.export_class
        for r in (route, *route.also)
    }


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def batch(*models: str) -> dict[str, Any]:
    return {"requests": [{"custom_id": f"r{i}", "params": chat(m)} for i, m in enumerate(models)]}


# (method, path, body for a model): every endpoint that names the model in a JSON body.
BODY_ENDPOINTS = [
    ("POST", "/v1/messages", chat),  # Anthropic Messages
    ("POST", "/v1/messages/count_tokens", lambda m: {"model": m, "messages": [{"role": "user", "content": "x"}]}),
    ("POST", "/v1/messages/batches", lambda m: batch("haiku-4", m)),  # requests[*].params.model
    ("POST", "/v1/complete", lambda m: {"model": m, "prompt": "\n\nHuman: hi\n\nAssistant:", "max_tokens": 8}),
    ("POST", "/v1/chat/completions", chat),  # OpenAI Chat Completions
    ("POST", "/v1/completions", lambda m: {"model": m, "prompt": "hi"}),
    ("POST", "/v1/responses", lambda m: {"model": m, "input": "hi"}),
    ("POST", "/v1/responses/input_tokens", lambda m: {"model": m, "input": "hi"}),
    ("POST", "/v1/responses/compact", lambda m: {"model": m, "input": []}),
    ("POST", "/v1/realtime/sessions", lambda m: {"model": m}),
    ("POST", "/v1/realtime/client_secrets", lambda m: {"session": {"type": "realtime", "model": m}}),
    ("POST", "/v1/realtime/calls/call_123/accept", lambda m: {"type": "realtime", "model": m}),
]
IDS = [path for _, path, _ in BODY_ENDPOINTS]
MODELS = ["mythos-5", "fable-5", "mythos-5-20260601", "MYTHOS-5", "Fable-5-Latest"]


@pytest.mark.parametrize(("method", "path", "make"), BODY_ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("model", MODELS)
def test_controlled_model_in_the_body(method: str, path: str, make: Any, model: str) -> None:
    assert CONTROLLED in classes(method, path, make(model))


@pytest.mark.parametrize(("method", "path", "make"), BODY_ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("model", ["haiku-4", "gpt-5-mini", "mythos-4", "fable-4"])
def test_other_models_are_ear99(method: str, path: str, make: Any, model: str) -> None:
    assert classes(method, path, make(model)) == {OTHER}


SPELLINGS = {
    "trailing slash": (lambda p: p + "/", ""),
    "doubled slashes": (lambda p: p.replace("/", "//"), ""),
    "dot segments": (lambda p: "/v1/./x/.." + p.removeprefix("/v1"), ""),
    "root_path": (lambda p: p, "/api"),
    "root_path and trailing slash": (lambda p: p + "/", "/api"),
}


@pytest.mark.parametrize(("method", "path", "make"), BODY_ENDPOINTS, ids=IDS)
@pytest.mark.parametrize(("spell", "root_path"), SPELLINGS.values(), ids=SPELLINGS.keys())
def test_spellings_the_app_routes_stay_controlled(
    method: str, path: str, make: Any, spell: Any, root_path: str
) -> None:
    assert CONTROLLED in classes(method, spell(path), make("Mythos-5"), root_path=root_path)
    assert CONTROLLED not in classes(method, spell(path), make("haiku-4"), root_path=root_path)


def test_a_batch_is_controlled_if_any_request_is() -> None:
    assert classes("POST", "/v1/messages/batches", batch("haiku-4", "haiku-4")) == {OTHER}
    assert classes("POST", "/v1/messages/batches", batch("haiku-4", "Mythos-5")) == {CONTROLLED}
    assert classes("POST", "/v1/messages/batches", {"requests": []}) == {OTHER}
    duplicate = b'{"requests": [{"params": {"model": "haiku-4", "model": "mythos-5"}}]}'
    route = TABLE.classify("POST", "", "/v1/messages/batches")
    assert route.params is not None
    assert route.params.classify(duplicate, b"", ())[0] == CONTROLLED  # parsers disagree: fail closed


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("/v1/realtime", b"model=mythos-5", {CONTROLLED}),
        ("/v1/realtime", b"model=fable-5-20260601", {CONTROLLED}),
        ("/v1/realtime", b"model=MYTHOS-5", {CONTROLLED}),
        ("/v1/realtime", b"model=mythos%2D5", {CONTROLLED}),  # percent-decoded as frameworks do
        ("/v1/realtime/", b"model=mythos-5", {CONTROLLED}),
        ("/v1/realtime/translations", b"model=mythos-5", {CONTROLLED}),
        ("/v1/realtime", b"model=gpt-realtime", {OTHER}),
        ("/v1/realtime", b"call_id=rtc_123", {OTHER}),  # joins a call that was classified when it began
        ("/v1/realtime", b"model=gpt-realtime&model=mythos-5", {CONTROLLED}),  # twice: fail closed
        ("/v1/realtime", b"x=1;model=mythos-5", {CONTROLLED}),  # ';' reads differently: fail closed
    ],
)
def test_realtime_websocket_names_the_model_in_the_query(path: str, query: bytes, expected: set[str]) -> None:
    assert classes("WEBSOCKET", path, query=query) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/models/mythos-5", CONTROLLED),
        ("/v1/models/mythos-5/", CONTROLLED),
        ("/v1/models/mythos-5-20260601", CONTROLLED),
        ("/v1/models/fable-5", CONTROLLED),
        ("/v1/models/fable-5-latest/x", CONTROLLED),
        ("/v1/models//fable-5", CONTROLLED),
        ("/v1/models/haiku-4", OTHER),
        ("/v1/models/mythos-50", OTHER),
        ("/v1/models", OTHER),
    ],
)
def test_model_named_paths(path: str, expected: str) -> None:
    assert expected in classes("GET", path)
    assert expected in classes("GET", path, root_path="/api")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/batches"), ("GET", "/v1/batches/batch_1"), ("POST", "/v1/realtime/calls")],
)
def test_invisible_models_fail_closed(method: str, path: str) -> None:
    assert classes(method, path) == {CONTROLLED}


def test_unreadable_bodies_fail_closed() -> None:
    for body in (b"", b"{not json", b"[]", b'{"model": "haiku", "model": "mythos-5"}'):
        route = TABLE.classify("POST", "", "/v1/messages")
        assert route.params is not None
        assert route.params.classify(body, b"", ())[0] == CONTROLLED
    assert route.params.classify(None, b"", ())[0] == CONTROLLED  # too large to buffer


def test_other_paths_and_exemptions() -> None:
    assert classes("GET", "/v1/files") == {OTHER}
    assert TABLE.classify("GET", "", "/healthz").exempt is not None
    assert TABLE.classify("GET", "", "/healthz/").exempt is None  # exempt only if every spelling is
