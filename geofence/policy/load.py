"""The policy file: load, validate every key, and compile into lookups the request path can use directly.

Validation collects *every* problem (key path + message, with the nearest valid key or code suggested) before
refusing a file, so an operator fixes a policy in one round trip. Everything that can be computed once —
destination sets with groups expanded, compiled routes, exempt networks — is computed here, never per
request. The compiled :class:`Policy` is immutable; its ``version`` is a hash of its effective content.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from ..caches.budget import DEFAULT_CACHE_MB, MIN_CACHE_MB, CacheBudget
from ..errors import GeofenceError
from ..geoip.databases import LOAD_MODES, LoadMode
from ..geoip.locator import Locator
from ..identity.claims import ClaimNames
from ..identity.config import TokenConfig
from ..places import GroupResolver, ReferenceData, load_reference
from ..resources import data_path
from ..routing.routes import RouteTable
from .audit import AuditConfig, audit_config
from .checks import Checker, Problem, keys_of
from .classes import MODES, ClassPolicy, PersonRule, compile_class
from .identity import TOKEN_KEYS, token_config
from .response import ResponseSettings, response_settings
from .route_rules import known_class, route_rule

__all__ = [
    "EXAMPLE_POLICY",
    "AuditConfig",
    "ClassPolicy",
    "PersonRule",
    "Policy",
    "PolicyError",
    "Problem",
    "load_policy",
    "parse_policy",
]

EXAMPLE_POLICY: Final = "example-policy.toml"
OnStale = Literal["warn", "deny"]
"""Past ``max_age_days``: ``warn`` logs once; ``deny`` answers 503 ``database_stale`` on restricting classes."""
ON_STALE: Final[tuple[OnStale, ...]] = ("warn", "deny")
LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")
_HEADER_NAME: Final = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")


class PolicyError(GeofenceError):
    """A policy file that cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{source}: {count}: " + "; ".join(map(str, problems)))


@dataclass(frozen=True)
class Policy:
    """A validated, compiled policy. Build with :func:`load_policy` or :func:`parse_policy`."""

    classes: Mapping[str, ClassPolicy]
    default_class: str
    routes: RouteTable
    territories: Mapping[str, str]
    exempt_networks: tuple[tuple[int, int, str], ...]
    databases: tuple[str, ...] | None
    cache_size: int | None
    cache_mb: int
    """``[cache] max_mb``: what the request-path caches may hold, per process (see caches/budget.py)."""
    load: LoadMode
    max_age_days: int | None
    """Databases older than this (by build date) are stale: a warning, or with ``on_stale = "deny"`` a 503."""
    on_stale: OnStale
    health_path: str | None
    """A path the middleware answers itself with its health (``[health] path``), or None."""
    log_format: LogFormat
    """Decision log lines: ``"text"`` (key=value, escaped) or ``"json"`` (``[logging] format``)."""
    metrics: bool
    """Export Prometheus metrics (``[metrics] enabled``; needs ``geofence[prometheus]``)."""
    audit: AuditConfig | None
    """The audit trail (``[audit]``), or None for none."""
    trusted_proxies: tuple[tuple[int, int, str], ...]
    """Inclusive key ranges with their text; the pseudo-network ``unix`` trusts Unix-socket peers."""
    proxy_header: str
    response: ResponseSettings
    """How denials look (``[response]``): ``blocked_by``, ``private_cache``, ``contact``, the page template."""
    claim_names: ClaimNames
    tokens: TokenConfig | None
    """How to verify identity tokens; None when the policy configures no key source."""
    reference: ReferenceData
    source: str
    version: str = field(default="")

    def locator(self) -> Locator:
        """Open the policy's databases (the bundled one when none is configured)."""
        return Locator(
            self.databases, cache_size=self.cache_size or CacheBudget(self.cache_mb).networks, load=self.load
        )

    def exempt_network(self, key: int | None) -> str | None:
        """Why client *key* is exempt (its ``[exempt] networks`` entry), or None."""
        if key is not None:
            for first, last, text in self.exempt_networks:
                if first <= key <= last:
                    return f"client in exempt network {text}"
        return None


_TOP: Final = (
    "geoip",
    "proxies",
    "defaults",
    "reference",
    "groups",
    "classes",
    "routes",
    "exempt",
    "identity",
    "response",
    "health",
    "logging",
    "metrics",
    "audit",
    "cache",
)
_CLAIM_KEYS: Final = (
    "us_person_claim",
    "nationalities_claim",
    "residence_claim",
    "permanent_residence_claim",
    "most_recent_country_claim",
)


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate a policy file (default: the bundled example policy)."""
    path = Path(path) if path is not None else data_path(EXAMPLE_POLICY)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), [Problem("", exc.strerror or str(exc))]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(str(path), [Problem("", "not UTF-8 text")]) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if "at end of document" in message:  # say which line that is
            last_line = len(raw.splitlines()) or 1
            message = message.replace("at end of document", f"at end of document, line {last_line}")
        raise PolicyError(str(path), [Problem("", f"TOML syntax error: {message}")]) from None
    return parse_policy(data, source=str(path), base_dir=path.parent)


def parse_policy(data: Mapping[str, Any], *, source: str = "<policy>", base_dir: Path | None = None) -> Policy:
    """Validate and compile a policy given as a dict (the parsed TOML, or built in Python)."""
    check = Checker()
    top = check.table(dict(data), "", _TOP)

    geoip = check.table(top.get("geoip"), "geoip", ("databases", "cache_size", "load", "max_age_days", "on_stale"))
    load = check.choice(geoip.get("load"), "geoip.load", LOAD_MODES, "copy")
    databases = None
    if "databases" in geoip:
        names = check.strings(geoip["databases"], "geoip.databases")
        databases = tuple(str((base_dir / n) if base_dir and not Path(n).is_absolute() else n) for n in names)
        if not names:
            check.error("geoip.databases", "must name at least one database (omit the key for the bundled one)")
    cache_size = check.integer(geoip.get("cache_size"), "geoip.cache_size")
    cache_mb = check.integer(
        check.table(top.get("cache"), "cache", ("max_mb",)).get("max_mb"), "cache.max_mb", MIN_CACHE_MB
    )
    max_age_days = check.integer(geoip.get("max_age_days"), "geoip.max_age_days")
    on_stale = check.choice(geoip.get("on_stale"), "geoip.on_stale", ON_STALE, "warn")
    health = check.table(top.get("health"), "health", ("path",))
    health_path = check.string(health.get("path"), "health.path")
    logging_table = check.table(top.get("logging"), "logging", ("format",))
    log_format = check.choice(logging_table.get("format"), "logging.format", LOG_FORMATS, "text")
    metrics_table = check.table(top.get("metrics"), "metrics", ("enabled",))
    metrics_enabled = metrics_table.get("enabled", False)
    if not isinstance(metrics_enabled, bool):
        check.error("metrics.enabled", "must be true or false")
        metrics_enabled = False
    if health_path is not None and not health_path.startswith("/"):
        check.error("health.path", f"{health_path!r} must start with '/'")

    proxies = check.table(top.get("proxies"), "proxies", ("trusted", "header"))
    trusted = tuple(check.networks(proxies.get("trusted"), "proxies.trusted", allow_unix=True))
    header = check.string(proxies.get("header"), "proxies.header") or "x-forwarded-for"
    if not _HEADER_NAME.fullmatch(header.lower()):
        check.error("proxies.header", f"{header!r} is not an HTTP header name")

    reference_table = check.table(top.get("reference"), "reference", ("file",))
    reference_file = check.string(reference_table.get("file"), "reference.file")
    reference = _reference(reference_file, base_dir, check)

    groups: dict[str, Any] = dict(reference.groups)
    operator_groups = check.table(top.get("groups"), "groups", keys_of(top.get("groups")))
    for name, members in operator_groups.items():
        if len(name) == 2 and name.isalpha():
            check.error(f"groups.{name}", "a group name must not look like a country code")
        groups[name] = check.strings(members, f"groups.{name}")
    resolver = GroupResolver(groups)
    errors: list[str] = []
    for name in operator_groups:  # validate every group, used or not
        resolver.expand([f"group:{name}"], errors, f"groups.{name}")

    classes_raw = top.get("classes")
    classes: dict[str, ClassPolicy] = {}
    defaults = check.table(top.get("defaults"), "defaults", ("mode", "class"))
    default_mode = check.choice(defaults.get("mode"), "defaults.mode", MODES, "enforce")
    for name, raw in check.table(classes_raw, "classes", keys_of(classes_raw)).items():
        compiled = compile_class(name, raw, default_mode, resolver, check, errors)
        if compiled is not None:
            classes[name] = compiled
    if not classes and not check.problems:
        check.error("classes", "define at least one export class")

    default_class = check.string(defaults.get("class"), "defaults.class") or "EAR99"
    known_class(default_class, "defaults.class", classes, check)

    rules = []
    routes_raw = top.get("routes") or []
    if not isinstance(routes_raw, list):
        check.error("routes", "must be an array of tables ([[routes]])")
        routes_raw = []
    for i, raw in enumerate(routes_raw):
        rule = route_rule(i, raw, classes, check)
        if rule is not None:
            rules.append(rule)

    exempt = check.table(top.get("exempt"), "exempt", ("paths", "networks"))
    exempt_globs = check.strings(exempt.get("paths"), "exempt.paths")
    for i, glob in enumerate(exempt_globs):
        if not glob.startswith("/"):
            check.error(f"exempt.paths[{i}]", f"{glob!r} must start with '/'")
    exempt_networks = tuple(check.networks(exempt.get("networks"), "exempt.networks"))

    response = response_settings(top.get("response"), base_dir, check)

    identity = check.table(top.get("identity"), "identity", _CLAIM_KEYS + TOKEN_KEYS)
    claim_names = ClaimNames(
        **{
            key.removesuffix("_claim"): value
            for key in _CLAIM_KEYS
            if (value := check.string(identity.get(key), f"identity.{key}"))
        }
    )
    tokens = token_config(identity, claim_names, base_dir, check)

    for message in dict.fromkeys(errors):  # a bad group member is reported once, not once per use
        where, _, text = message.partition(": ")
        check.error(where, text)
    if check.problems:
        raise PolicyError(source, check.problems)

    policy = Policy(
        classes=classes,
        default_class=default_class,
        routes=RouteTable(rules, default_class, exempt_globs),
        territories=reference.territories,
        exempt_networks=exempt_networks,
        databases=databases,
        cache_size=cache_size,
        cache_mb=cache_mb or DEFAULT_CACHE_MB,
        max_age_days=max_age_days,
        on_stale=on_stale,
        health_path=health_path,
        log_format=log_format,
        metrics=metrics_enabled,
        audit=audit_config(top.get("audit"), base_dir, check),
        load=load,
        trusted_proxies=trusted,
        proxy_header=header.lower(),
        response=response,
        claim_names=claim_names,
        tokens=tokens,
        reference=reference,
        source=source,
    )
    return _with_version(policy)


def _reference(file: str | None, base_dir: Path | None, check: Checker) -> ReferenceData:
    if file is None:
        return load_reference()
    path = base_dir / file if base_dir and not Path(file).is_absolute() else Path(file)
    try:
        return load_reference(path)
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        check.error("reference.file", f"cannot read {path}: {exc}")
        return load_reference()


def _with_version(policy: Policy) -> Policy:
    """Stamp the policy with a hash of everything that can change a decision."""

    def plain(value: Any) -> Any:
        if isinstance(value, frozenset | set):
            return sorted(value)
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in sorted(value.items())}
        if hasattr(value, "__dataclass_fields__"):
            return {k: plain(getattr(value, k)) for k in value.__dataclass_fields__}
        return value

    effective = {
        "classes": plain(policy.classes),
        "default_class": policy.default_class,
        "routes": plain(policy.routes.rules),
        "territories": plain(policy.territories),
        "exempt_paths": plain(policy.routes.exempt_paths),
        "exempt_networks": [text for _, _, text in policy.exempt_networks],
        "databases": plain(policy.databases),
        "load": policy.load,
        "max_age_days": policy.max_age_days,
        "on_stale": policy.on_stale,
        "trusted_proxies": [text for _, _, text in policy.trusted_proxies],
        "blocked_by": policy.response.blocked_by,  # contact and the page change no decision: not versioned
        "private_cache": policy.response.private_cache,
        "proxy_header": policy.proxy_header,
        "claim_names": plain(policy.claim_names),
        "tokens": plain(policy.tokens),
    }
    digest = hashlib.sha256(json.dumps(effective, sort_keys=True, default=str).encode()).hexdigest()
    object.__setattr__(policy, "version", digest[:16])
    return policy
