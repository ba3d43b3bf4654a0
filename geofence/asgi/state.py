"""The loaded state a request reads — policy, readers, proxies, keys, caches — built and validated as one.

A request takes one reference to a :class:`State` and uses only it, so a reload (a new policy, a replaced
database, rotated keys) swaps everything at once and no request ever mixes generations. The caches live
here too: they belong to the readers and policy they were computed from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ..caches.bounded import BoundedCache
from ..caches.budget import CacheBudget
from ..errors import InvalidAddressError
from ..evidence.audit import AuditWriter
from ..evidence.freshness import stale_at
from ..evidence.metrics import Metrics, metrics
from ..geoip.location import Location
from ..geoip.locator import Locator
from ..network.addresses import address_key
from ..network.client_ip import ProxyConfig
from ..policy.decision import Decision
from ..policy.load import AuditConfig, Policy, load_policy, parse_policy
from ..routing.routes import Route
from .responses import DenialResponse, ResponseConfig

if TYPE_CHECKING:
    from ..identity.tokens import TokenVerifier

__all__ = [
    "MEMO_BYTES",
    "Front",
    "State",
    "Where",
    "build_state",
    "new_front",
    "new_where",
    "signature",
]


class Where(NamedTuple):
    """What is known per (peer, forwarding headers): the client's location or why there is none."""

    location: Location | None
    problem: str | None
    exempt: str | None
    broken: bool = False
    """The problem is a broken proxy chain (denied as client_address_invalid), not an unknown location."""
    client: str | None = None
    """The resolved client address as text (recorded in the audit trail only with ``full_ip = true``)."""
    facts: int = -1
    """The locator's id for the location's facts (equal ids: equal answers but for the network)."""


class Front(NamedTuple):
    """What the front cache keeps per request key (method, path, root path, host, peer, trusted headers)."""

    route: Route
    where: Where
    decision: Decision | None
    """The decision, when identity and parameters play no part (most requests): the warm path ends here."""
    private: bool | None
    """Whether an allowed response is marked private for shared caches: True, its class can deny anyone;
    None, only if a per-endpoint helper allows such a class (see :func:`geofence.asgi.deciding.privacy`)."""
    plain: bool
    """The decision is an allow with nothing to record or check per request (no reasons, not audited, no
    audit-failure rule): the middleware's shortest path."""
    memo: list[Any] | None = None
    """For a class that reads an identity: one slot holding (Authorization value, identity, decision, key
    generation) of the last request by this key (see :meth:`geofence.asgi.deciding.Decider.decide_identity`)."""


MEMO_BYTES: Final = 2048
"""The longest Authorization value a front entry remembers; what such an entry is charged in the front cache."""


new_where: Callable[[tuple[Any, ...]], Where] = partial(tuple.__new__, Where)
"""Build from a complete tuple on the request path: a NamedTuple's Python-level ``__new__`` costs several times more."""
new_front: Callable[[tuple[Any, ...]], Front] = partial(tuple.__new__, Front)


@dataclass
class State:
    """Everything a request reads, built and validated together, swapped as one reference."""

    policy: Policy
    locator: Locator
    proxies: ProxyConfig
    watched: frozenset[bytes]
    needs_host: bool
    responses: ResponseConfig
    verifier: TokenVerifier | None
    identity_classes: frozenset[str]
    """Classes with a person rule: only their requests resolve an identity."""
    restricting: frozenset[str]
    """Classes that can deny someone (a broken chain or a stale database denies only these)."""
    private_classes: frozenset[str]
    """Restricting classes whose allowed GET/HEAD responses are marked private for shared caches."""
    stale_at: float | None = None
    """When the oldest database passes ``[geoip] max_age_days`` (UNIX time), or None without a limit."""
    websocket_grace: float = 0.0
    stale_detail: str | None = None
    """Which databases passed ``max_age_days``, once that happened (logged then, once)."""
    metrics: Metrics | None = None
    audit: AuditWriter | None = None
    audited: frozenset[str] = frozenset()
    """Classes whose *allowed* decisions go to the audit trail (``[audit] include``); denials always do."""
    record_allowed: frozenset[str] = frozenset()
    """Classes whose allowed requests need a per-request look: audited, or denied when the audit trail fails."""
    health_path: str | None = None
    resolver: Any = None
    """The native client-and-location resolver (geofence/native), or None: the Python steps decide alone."""
    signature: tuple[Any, ...] = ()
    budget: CacheBudget = field(default_factory=CacheBudget)
    """``[cache] max_mb``, shared among the caches below (see caches/budget.py)."""
    # Bounded by entries and bytes, evicting a little at a time (see caches/bounded.py): keys come from clients.
    decisions: BoundedCache[tuple[str, int, int, str | None], tuple[Any, Decision]] = field(init=False)
    """(class, location facts id, identity object id, exempt) -> (identity, decision): few entries."""
    clients: BoundedCache[str, str] = field(init=False)
    """``client_key -> pack_client`` (see asgi/where.py): strings only, so a full cache costs the garbage collector
    nothing."""
    front: BoundedCache[tuple[Any, ...], Front] = field(init=False)
    """Request key -> built route, location and decision: few, so a full collection of the garbage collector
    stays short; a miss costs a client-cache hit and a few tuples."""
    templates: BoundedCache[tuple[Any, ...], tuple[Route, Decision, bool | None, bool]] = field(init=False)
    """(method, path, root path, host, location facts id, exempt) -> (route, decision, private, plain) of a
    one-spelling route decided by location alone: a new client with known facts on a known route costs one
    lookup and a Location (the native path's cold request; see :meth:`geofence.asgi.deciding.Decider.reuse`)."""
    peers: BoundedCache[str | None, bool] = field(init=False)
    admissions: int = 0
    peer_trusted: Callable[[str | None], bool] = field(init=False)

    def __post_init__(self) -> None:
        self.peer_trusted = self.trusted_peer  # bound once: the request path passes it on every request
        budget = self.budget
        self.decisions = BoundedCache(*budget.small(16_384))
        self.clients = budget.clients()
        self.front = budget.front()  # type: ignore[assignment]
        self.peers = BoundedCache(*budget.small(4096))
        self.templates = BoundedCache(*budget.small(16_384))

    def admit(self) -> bool:
        """Whether a front-cache miss of a known client goes into the front cache. Always while there is room;
        when it is full, one miss in four: with far more clients than entries (a cache of built objects is kept
        small), most inserts would only evict each other, while a client in steady use is still admitted
        within a few requests."""
        if len(self.front) < self.front.max_entries:
            return True
        self.admissions += 1
        return self.admissions & 3 == 0

    def trusted_peer(self, peer: str | None) -> bool:
        """Whether *peer* is a configured proxy (memoised: called for every request with forwarding headers)."""
        found = self.peers.get(peer)
        if found is None:
            if peer is None:
                found = self.proxies.trust_unix
            else:
                try:
                    found = self.proxies.is_trusted(address_key(peer))
                except InvalidAddressError:
                    found = False
            self.peers.put(peer, found, len(peer or ""))
        return found


def _resolver(locator: Locator, proxies: ProxyConfig) -> Any:
    """The native resolver for these proxies: it walks X-Forwarded-For itself, and leaves any other
    ``[proxies] header`` (and every request whose chain it does not answer) to the Python steps."""
    walked = proxies.watched[0] if proxies.header == "x-forwarded-for" else None
    return locator.native_trees(proxies.trusted, walked, proxies.max_header_bytes)


def build_state(
    config: str | os.PathLike[str] | Policy | Mapping[str, Any] | None,
    path: Path | None,
    deny_hook: Callable[[Decision, MutableMapping[str, Any]], DenialResponse | None] | None,
    previous: State | None = None,
) -> State:
    """Load and validate everything a request reads; raises on any problem (nothing is half-built). The audit
    writer of *previous* is kept when its settings did not change, so one process keeps one chain."""
    if isinstance(config, Policy):
        policy = config
    elif isinstance(config, Mapping):
        policy = parse_policy(config)
    else:
        policy = load_policy(path)
    proxies = ProxyConfig.from_networks(policy.trusted_proxies, policy.proxy_header)
    restricting = frozenset(name for name, c in policy.classes.items() if c.restricted)
    locator = policy.locator()
    budget = CacheBudget(policy.cache_mb)
    return State(
        policy=policy,
        locator=locator,
        proxies=proxies,
        watched=frozenset(proxies.watched),
        needs_host=policy.routes.needs_host,
        responses=ResponseConfig(
            blocked_by=policy.response.blocked_by,
            contact=policy.response.contact,
            template=policy.response.template,
            vary=("Accept", "Authorization", "Cookie", policy.proxy_header.title()),
            hook=deny_hook,
        ),
        verifier=_verifier(policy, budget),
        websocket_grace=policy.tokens.websocket_grace_seconds if policy.tokens is not None else 0.0,
        identity_classes=frozenset(name for name, c in policy.classes.items() if c.persons.kind != "any"),
        restricting=restricting,
        private_classes=restricting if policy.response.private_cache else frozenset(),
        stale_at=stale_at((db.info for db in locator.databases), policy.max_age_days),
        metrics=metrics() if policy.metrics else None,
        audit=audit_writer(policy.audit, previous),
        audited=_audited(policy, restricting),
        record_allowed=_record_allowed(policy, restricting),
        health_path=policy.health_path,
        resolver=locator.native_trees(
            proxies.trusted,
            b"x-forwarded-for" if proxies.header == "x-forwarded-for" else None,
            proxies.max_header_bytes,
        ),
        signature=signature(path, policy),
        budget=budget,
    )


def _verifier(policy: Policy, budget: CacheBudget) -> TokenVerifier | None:
    if policy.tokens is None:
        return None
    from ..identity.tokens import TokenVerifier  # PyJWT and cryptography load only for a policy that verifies tokens

    return TokenVerifier(policy.tokens, budget)


def audit_writer(config: AuditConfig | None, previous: State | None) -> AuditWriter | None:
    """The writer for *config*: the previous state's when its settings are the same, else a new one."""
    if config is None:
        return None
    if previous is not None and previous.audit is not None:
        if previous.policy.audit == config:
            return previous.audit
        previous.audit.close()  # one writer per file: the old one finishes (and logs its head) first
    return AuditWriter(
        config.path, logger=config.logger, include=config.include,  # type: ignore[arg-type]
        full_ip=config.full_ip, key_env=config.key_env, max_bytes=config.max_bytes, daily=config.daily,
        on_failure=config.on_failure,  # type: ignore[arg-type]
    )  # fmt: skip


def _audited(policy: Policy, restricting: frozenset[str]) -> frozenset[str]:
    include = policy.audit.include if policy.audit is not None else "denials"
    return frozenset(policy.classes) if include == "all" else restricting if include == "controlled" else frozenset()


def _record_allowed(policy: Policy, restricting: frozenset[str]) -> frozenset[str]:
    on_failure_deny = policy.audit is not None and policy.audit.on_failure == "deny"
    return _audited(policy, restricting) | (restricting if on_failure_deny else frozenset())


def signature(path: Path | None, policy: Policy | None) -> tuple[Any, ...]:
    """What the watcher compares: the policy file and the files it names (databases, key files, the denial
    page), by inode, size and mtime."""
    paths = [path] if path is not None else []
    if policy is not None:
        paths += [Path(p) for p in policy.databases or ()]
        paths += list(policy.tokens.key_files if policy.tokens is not None else ())
        paths += [policy.response.template_path] if policy.response.template_path is not None else []
    found: list[tuple[Any, ...]] = []
    for watched in paths:
        try:
            st = os.stat(watched)
            found.append((str(watched), st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            found.append((str(watched), None))
    return tuple(found)
