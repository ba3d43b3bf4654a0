"""Property-based fuzzing of policy loading: any input is either a valid Policy or a PolicyError, never a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.policy.load import Policy, PolicyError, load_policy, parse_policy

# Values shaped like policy content: known keys, country codes, globs and CIDRs, plus junk of every TOML type.
_WORDS = st.sampled_from(
    ["US", "RU", "UA-43", "embargoed", "group:E:1", "allies", "/v1/**", "/x", "*", "**", "10.0.0.0/8",
     "2002:a00::/24", "unix", "x-forwarded-for", "forwarded", "deny", "allow", "report", "enforce", "us_only",
     "any", "model", "requests[*].params.model", "GET", "WEBSOCKET", "EAR99", "C", "copy", "mmap", ""]
)  # fmt: skip
_SCALARS = st.one_of(_WORDS, st.text(max_size=12), st.integers(-3, 1 << 40), st.booleans(), st.floats())
_KEYS = st.sampled_from(
    ["geoip", "proxies", "defaults", "classes", "routes", "exempt", "identity", "response", "groups", "reference",
     "trusted", "header", "databases", "cache_size", "load", "class", "mode", "EAR99", "C", "path", "method",
     "host", "json_field", "query", "header", "equals", "matches", "max_body_bytes", "allow_destinations",
     "deny_destinations", "persons", "anonymizers", "unknown_location", "allow_nationalities", "paths",
     "networks", "blocked_by", "private_cache", "issuer", "audience", "source", "algorithms"]
)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_any_mapping_is_a_policy_or_a_policy_error(data: dict[str, Any]) -> None:
    try:
        policy = parse_policy(data)
    except PolicyError as exc:
        assert exc.problems and all(str(p) for p in exc.problems)
        return
    assert isinstance(policy, Policy) and len(policy.version) == 16


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=200)))
def test_any_file_is_a_policy_or_a_policy_error(tmp_path_factory: Any, raw: bytes) -> None:
    path: Path = tmp_path_factory.mktemp("fuzz") / "policy.toml"
    path.write_bytes(raw)
    try:
        load_policy(path)
    except PolicyError as exc:
        assert str(path) in str(exc)
