"""The official Anthropic and OpenAI SDKs against a real uvicorn server behind the bundled example policy.

What the SDKs actually send — paths, bodies, query strings — is what the example policy's rules must catch: a
controlled model is refused (401 without a verified identity, 451 from outside the United States), surfaced as
the SDK's own error class, while any other model is served.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from websockets.exceptions import InvalidStatus

from geofence.asgi.middleware import GeofenceMiddleware
from geofence.cli.demo import RunningServer, demo_app
from geofence.policy.load import EXAMPLE_POLICY
from geofence.resources import data_path

from ..conftest import country, write_mmdb

US, GB = "8.8.8.8", "81.2.69.1"
MESSAGES = [{"role": "user", "content": "hello"}]


def example_policy(database: Path) -> dict[str, Any]:
    with open(data_path(EXAMPLE_POLICY), "rb") as f:
        config = tomllib.load(f)
    config["geoip"] = {"databases": [str(database)]}
    config["proxies"] = {"trusted": ["127.0.0.1/32"]}  # X-Forwarded-For names the simulated caller
    return config


@pytest.fixture(scope="module", params=["", "/api"], ids=["root", "root_path"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The example policy served by uvicorn; also with --root-path /api (path and root_path both carry it)."""
    database = write_mmdb(
        tmp_path_factory.mktemp("geoip") / "country.mmdb",
        "GeoIP2-Country",
        {"8.8.8.0/24": {"country": country("US")}, "81.2.69.0/24": {"country": country("GB")}},
    )
    app = GeofenceMiddleware(demo_app, config=example_policy(database))
    with RunningServer(app, root_path=request.param) as running:
        yield running


def client(server: RunningServer, sdk: str, ip: str) -> anthropic.Anthropic | openai.OpenAI:
    headers = {"X-Forwarded-For": ip}
    base = f"http://127.0.0.1:{server.port}"
    if sdk == "anthropic":
        return anthropic.Anthropic(api_key="k", base_url=base, max_retries=0, default_headers=headers)
    return openai.OpenAI(api_key="k", base_url=f"{base}/v1", max_retries=0, default_headers=headers)


Call = Callable[[Any, str], object]
CALLS: dict[str, tuple[str, Call]] = {
    "messages.create": ("anthropic", lambda c, m: c.messages.create(model=m, max_tokens=16, messages=MESSAGES)),
    "messages.count_tokens": ("anthropic", lambda c, m: c.messages.count_tokens(model=m, messages=MESSAGES)),
    "messages.batches.create": (
        "anthropic",
        lambda c, m: c.messages.batches.create(
            requests=[
                {"custom_id": "a", "params": {"model": "haiku-4", "max_tokens": 16, "messages": MESSAGES}},
                {"custom_id": "b", "params": {"model": m, "max_tokens": 16, "messages": MESSAGES}},
            ]
        ),
    ),
    # The SDK no longer wraps the legacy Text Completions API; its generic post still sends it.
    "complete": (
        "anthropic",
        lambda c, m: c.post("/v1/complete", cast_to=object, body={"model": m, "prompt": "Human: hi", "max_tokens": 8}),
    ),
    "models.retrieve": ("anthropic", lambda c, m: c.models.retrieve(m)),
    "chat.completions.create": ("openai", lambda c, m: c.chat.completions.create(model=m, messages=MESSAGES)),
    "responses.create": ("openai", lambda c, m: c.responses.create(model=m, input="hello")),
    "completions.create": ("openai", lambda c, m: c.completions.create(model=m, prompt="hello")),
}


# Model names in JSON are matched case-insensitively (`matches`); a model-named *path* is case-sensitive like
# the app's routes (/v1/models/MYTHOS-5 names another, unknown model), so that one combination is not listed.
CONTROLLED = [
    pytest.param(sdk, call, model, id=f"{name}-{model}")
    for name, (sdk, call) in CALLS.items()
    for model in ("mythos-5", "fable-5-20260601", "MYTHOS-5")
    if not (name == "models.retrieve" and model == "MYTHOS-5")
]


@pytest.mark.parametrize(("sdk", "call", "model"), CONTROLLED)
def test_controlled_models_are_refused(server: RunningServer, sdk: str, call: Call, model: str) -> None:
    with client(server, sdk, US) as us, pytest.raises((anthropic.AuthenticationError, openai.AuthenticationError)) as e:
        call(us, model)
    assert e.value.status_code == 401  # a U.S. caller, but no verified U.S.-person identity
    with client(server, sdk, GB) as gb, pytest.raises((anthropic.APIStatusError, openai.APIStatusError)) as abroad:
        call(gb, model)
    assert abroad.value.status_code == 451
    assert abroad.value.body["export_class"] == "4E091"  # type: ignore[index]


@pytest.mark.parametrize(("sdk", "call"), CALLS.values(), ids=CALLS.keys())
def test_other_models_are_served(server: RunningServer, sdk: str, call: Call) -> None:
    with client(server, sdk, GB) as gb:
        call(gb, "haiku-4")  # the demo app answers 200; the SDK raises on anything else


def test_realtime_websocket(server: RunningServer) -> None:
    """The Realtime API names the model in the handshake's query string."""

    async def connect(model: str) -> None:
        client = openai.AsyncOpenAI(
            api_key="k",
            base_url=f"http://127.0.0.1:{server.port}/v1",
            default_headers={"X-Forwarded-For": GB},
            websocket_base_url=f"ws://127.0.0.1:{server.port}/v1",
        )
        async with client.realtime.connect(model=model, extra_headers={"X-Forwarded-For": GB}) as connection:
            await connection.recv_bytes()

    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(connect("mythos-5"))
    assert refused.value.response.status_code == 451
    asyncio.run(connect("gpt-realtime"))
