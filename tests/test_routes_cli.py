"""`geofence check` classifies with the same spellings and parameters as the middleware."""

from __future__ import annotations

import json
from typing import Any

import pytest

from geofence.cli.main import main


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["check", "--ip", "81.2.69.142", "--json", *args])  # GB, in the bundled database
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "args",
    [
        ["--method", "WEBSOCKET", "--path", "/v1/realtime?model=mythos-5"],
        ["--method", "WEBSOCKET", "--path", "/v1/realtime?model=gpt&model=mythos-5"],
        ["--method", "POST", "--path", "/api/v1/messages", "--root-path", "/api", "--body", '{"model": "mythos-5"}'],
        ["--method", "POST", "--path", "/v1/messages/", "--body", '{"model": "Mythos-5"}'],
        ["--method=POST", "--path=/v1/messages/batches", "--body", '{"requests": [{"params": {"model": "fable-5"}}]}'],
        ["--path", "/v1/models/mythos%2D5"],  # decoded as servers decode
    ],
)  # fmt: skip
def test_controlled_requests(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, decision = check(capsys, *args)
    assert (code, decision["export_class"]) == (1, "4E091"), decision["trace"]


def test_other_spellings_are_explained(capsys: pytest.CaptureFixture[str]) -> None:
    code, decision = check(capsys, "--method", "POST", "--path", "/v1/messages//", "--body", '{"model": "mythos-5"}')
    assert code == 1 and decision["trace"][0].startswith("class: 4E091 (JSON model = 'mythos-5'")
    assert decision["trace"][1].startswith("another spelling the app may route is EAR99 (no route matches")


def test_header_rules(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[classes.EAR99]\n[classes.C]\nallow_destinations = ["US"]\n'
        '[[routes]]\npath = "/x"\nheader = "x-model"\nequals = ["m"]\nclass = "C"\n'
    )
    code, decision = check(capsys, "--path", "/x", "--header", "X-Model: m", "--config", str(policy))
    assert (code, decision["export_class"]) == (1, "C")
    code, decision = check(capsys, "--path", "/x", "--header", "X-Model: other", "--config", str(policy))
    assert (code, decision["export_class"]) == (0, "EAR99")


def test_every_spelling_is_decided_and_the_first_denial_wins(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[classes.EAR99]\n[classes.C]\nallow_destinations = ["US"]\n[[routes]]\npath = "/x/*/y"\nclass = "C"\n'
    )
    # "/x//y" is "/x/y" to a framework that collapses slashes (EAR99, allowed in GB) but matches "/x/*/y" as
    # sent (C, US only): the request must be denied, as the middleware denies it.
    code, decision = check(capsys, "--config", str(policy), "--path", "/x//y")
    assert code == 1 and decision["export_class"] == "C"
    assert [r["code"] for r in decision["reasons"]] == ["destination_not_allowed"]
