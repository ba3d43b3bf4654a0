"""`geofence check` and `geofence policy validate`, run as real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import WriteDb, country
from .test_cli import assert_one_line_error, geofence

CITY_POLICY = """
[geoip]
databases = ["{city}", "{anonymous}"]

[defaults]
class = "EAR99"

[classes.EAR99]
deny_destinations = ["embargoed"]
unknown_location = "allow"

[classes."4E091"]
allow_destinations = ["US"]
deny_destinations = ["embargoed"]
persons = "us_only"
anonymizers = "deny"

[[routes]]
method = "POST"
path = "/v1/messages"
json_field = "model"
equals = ["mythos-5"]
class = "4E091"

[exempt]
paths = ["/healthz"]
networks = ["192.0.2.0/24"]
"""


@pytest.fixture
def policy_file(tmp_path: Path, city_db: Path, anonymous_db: Path) -> Path:
    path = tmp_path / "geofence.toml"
    path.write_text(CITY_POLICY.format(city=city_db, anonymous=anonymous_db))
    return path


def run_json(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = geofence("check", *args, "--json")
    assert "Traceback" not in result.stderr
    return result.returncode, json.loads(result.stdout)


def post_messages(policy_file: Path, body: str, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    """`geofence check` for POST /v1/messages from a US address with *body*."""
    message = ["--method", "POST", "--path", "/v1/messages", "--body", body]
    return run_json("--ip", "8.8.8.8", *message, *extra, "--config", str(policy_file))


def test_check_allowed_us_person(policy_file: Path) -> None:
    code, decision = post_messages(policy_file, '{"model": "mythos-5"}', "--claims", '{"us_person": true}')
    assert code == 0
    assert decision["allowed"] is True and decision["status"] == 200 and decision["export_class"] == "4E091"
    assert decision["facts"]["location"]["subdivisions"] == ["US-CA"]
    assert decision["trace"][0].startswith("class: 4E091")


def test_check_same_ip_foreign_national_denied(policy_file: Path) -> None:
    code, decision = run_json(
        "--ip", "8.8.8.8", "--class", "4E091", "--claims", '{"nationalities": ["DEU"]}', "--config", str(policy_file)
    )
    assert code == 1
    assert (decision["status"], [r["code"] for r in decision["reasons"]]) == (451, ["not_us_person"])


def test_check_no_identity_is_401(policy_file: Path) -> None:
    code, decision = run_json("--ip", "8.8.8.8", "--class", "4E091", "--config", str(policy_file))
    assert (code, decision["status"]) == (1, 401)


def test_check_anonymizer_and_crimea(policy_file: Path) -> None:
    code, decision = run_json(
        "--ip", "8.8.8.200", "--class", "4E091", "--claims", '{"us_person": true}', "--config", str(policy_file)
    )
    assert code == 1 and [r["code"] for r in decision["reasons"]] == ["anonymizer"]
    code, decision = run_json("--ip", "91.207.57.1", "--path", "/anything", "--config", str(policy_file))
    assert code == 1 and decision["export_class"] == "EAR99"
    assert [r["code"] for r in decision["reasons"]] == ["destination_denied"]


def test_check_body_classification_falls_back_and_fails_closed(policy_file: Path) -> None:
    code, decision = post_messages(policy_file, '{"model": "haiku"}')
    assert (code, decision["export_class"]) == (0, "EAR99")
    code, decision = post_messages(policy_file, "{not json")
    assert (code, decision["export_class"], decision["status"]) == (1, "4E091", 401)


def test_check_exemptions(policy_file: Path) -> None:
    code, decision = run_json("--ip", "192.0.2.10", "--class", "4E091", "--config", str(policy_file))
    assert code == 0 and decision["reasons"][0]["code"] == "exempt"
    code, decision = run_json("--ip", "5.8.1.1", "--path", "/healthz", "--config", str(policy_file))
    assert code == 0 and decision["reasons"][0]["code"] == "exempt"


def test_check_invalid_claims_become_identity_invalid(policy_file: Path) -> None:
    code, decision = run_json(
        "--ip", "8.8.8.8", "--class", "4E091", "--claims", '{"us_person": "yes"}', "--config", str(policy_file)
    )
    assert (code, decision["status"], decision["reasons"][0]["code"]) == (1, 401, "identity_invalid")


def test_check_text_output_on_bundled_policy() -> None:
    result = geofence("check", "--ip", "5.255.255.5", "--path", "/v1/models/list")
    assert result.returncode == 1
    assert result.stdout.startswith("DENIED  status 451  class EAR99")
    assert "destination_denied: destination RU is denied for class EAR99" in result.stdout
    assert "policy    version" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--ip", "999.1.1.1", "--class", "EAR99"], "not a valid IP address"),
        (["--ip", "8.8.8.8", "--class", "NOPE"], "unknown class 'NOPE'"),
        (["--ip", "8.8.8.8", "--class", "EAR99", "--claims", "{oops"], "--claims is not valid JSON"),
        (["--ip", "8.8.8.8", "--class", "EAR99", "--config", "/nonexistent.toml"], "No such file"),
    ],
)
def test_check_bad_input_exits_2(args: list[str], fragment: str) -> None:
    assert_one_line_error(geofence("check", *args), fragment)


def test_check_broken_database_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[geoip]\ndatabases = ["missing.mmdb"]\n[classes.EAR99]\n')
    assert_one_line_error(
        geofence("check", "--ip", "8.8.8.8", "--class", "EAR99", "--config", str(path)), "no such database file"
    )


def test_validate_ok(policy_file: Path) -> None:
    result = geofence("policy", "validate", str(policy_file))
    assert result.returncode == 0, result.stderr
    assert "ok: 2 classes, 1 routes, policy version" in result.stdout
    assert "reference data as of 2026-07-08" in result.stdout
    assert result.stderr == ""


def test_validate_bundled_example_warns_about_anonymizers() -> None:
    from geofence.resources import data_path

    result = geofence("policy", "validate", str(data_path("example-policy.toml")))
    assert result.returncode == 0
    assert 'classes.4E091.anonymizers = "deny" has no effect' in result.stderr


def test_validate_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[defaults]\nmode = "enforse"\n[classes.EAR99]\ndeny_destinations = ["IRN"]\nanonymisers = "deny"\n'
        '[[routes]]\npath = "/x"\nclass = "4E091"\n'
    )
    result = geofence("policy", "validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert f"{path}: defaults.mode: 'enforse' is not one of 'enforce', 'report'; did you mean 'enforce'?" in lines
    assert f"{path}: classes.EAR99.anonymisers: unknown key; did you mean 'anonymizers'?" in lines
    assert any("did you mean IR (Iran)?" in line for line in lines)
    assert any("routes[0].class: unknown class '4E091'" in line for line in lines)
    assert lines[-1] == f"geofence: error: 4 problem(s) in {path}"


def test_validate_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[classes.EAR99]\ndeny_destinations = ["CU"\n')
    result = geofence("policy", "validate", str(path))
    assert result.returncode == 2 and "line 2" in result.stderr


def test_validate_missing_database(tmp_path: Path, write_db: WriteDb) -> None:
    good = write_db("c.mmdb", "GeoIP2-Country", {"8.8.8.0/24": {"country": country("US")}})
    path = tmp_path / "p.toml"
    path.write_text(f'[geoip]\ndatabases = ["{good}", "nope.mmdb"]\n[classes.EAR99]\n')
    result = geofence("policy", "validate", str(path))
    assert result.returncode == 2
    assert "geoip.databases[1]:" in result.stderr and "no such database file" in result.stderr


def test_check_with_a_token(tmp_path: Path, country_db: Path) -> None:
    from .test_tokens import token, token_policy

    path, _ = token_policy(tmp_path, country_db, '[classes.EAR99]\n[classes.C]\npersons = "us_only"\n')
    code, decision = run_json("--ip", "8.8.8.8", "--class", "C", "--token", token(), "--config", str(path))
    assert (code, decision["allowed"]) == (0, True)
    assert decision["facts"]["identity"]["us_person"] is True
    code, decision = run_json("--ip", "8.8.8.8", "--class", "C", "--token", token(aud="x"), "--config", str(path))
    assert (code, decision["status"], decision["reasons"][0]["detail"]) == (1, 401, "token audience not accepted")
    result = geofence("check", "--ip", "8.8.8.8", "--class", "EAR99", "--token", token())
    assert_one_line_error(result, "configures no token verification")


def test_check_says_why_a_token_was_rejected(tmp_path: Path, country_db: Path) -> None:
    """A person debugging a 401 needs the reason, in the text output too, not only "token rejected"."""
    from .test_tokens import token, token_policy

    path, _ = token_policy(tmp_path, country_db, '[classes.EAR99]\n[classes.C]\npersons = "us_only"\n')
    good = token()
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for bad, why in ((tampered, "signature"), (token(aud="x"), "audience not accepted")):
        result = geofence("check", "--ip", "8.8.8.8", "--class", "C", "--token", bad, "--config", str(path))
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert why in result.stdout, result.stdout
