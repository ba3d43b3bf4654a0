"""The pure-ASGI middleware: scope -> client address -> location / identity -> class -> decision -> action.

One line protects any ASGI app::

    app.add_middleware(GeofenceMiddleware, config="geofence.toml")

Every ``http`` request and ``websocket`` handshake is decided before the app sees it; denied requests never
reach the app. ``lifespan`` and other scope types pass straight through. Pure ASGI: Starlette's base HTTP
middleware class would cost ~200 µs a request and never see WebSockets.

The per-request path touches only what it needs: a front cache per (method, path, host, peer, forwarding
header), the network-keyed location cache and a decision cache keyed by (class, location, identity), so a
repeat request from a known network costs a few dictionary lookups. Everything else — a policy or database
change on disk — is picked up by a background thread that validates the new state and swaps it in with one
reference assignment.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

from .client_ip import ProxyConfig, resolve_client
from .decision import Decision, decide, error_decision
from .errors import GeofenceError
from .identity import Identity, IdentityError
from .location import Location
from .locator import Locator
from .policy import Policy, load_policy, parse_policy
from .responses import DenialResponse, ResponseConfig, denial_response
from .routes import Route
from .tokens import TokenVerifier, token_from_scope

__all__ = ["GeofenceMiddleware", "IdentityResolver"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
IdentityResolver = Callable[[Scope], Identity | None]
"""Returns the caller's verified identity, None for none, or raises IdentityError for a rejected one."""

log = logging.getLogger("geofence")
decisions_log = logging.getLogger("geofence.decision")

STATE_KEY: Final = "geofence"
POLICY_KEY: Final = "geofence.policy"
MIDDLEWARE_KEY: Final = "geofence.middleware"
_DECISION_CACHE_LIMIT: Final = 65_536
_CLIENT_CACHE_LIMIT: Final = 16_384
_FRONT_CACHE_LIMIT: Final = 16_384
_INTERNAL_ERROR_CLASS: Final = "unknown"


class _Refused(Exception):
    """A request geofence will not classify (ambiguous); it is denied without a traceback in the log."""


class _Where(NamedTuple):
    """What is known per (peer, forwarding header): the client's location or why there is none."""

    location: Location | None
    problem: str | None
    exempt: str | None


class _Front(NamedTuple):
    """What the front cache keeps per (method, path, host, peer, forwarding header)."""

    route: Route
    where: _Where
    decision: Decision | None
    """The decision, when identity and body play no part (most requests): the warm path ends here."""
    private: bool
    """Whether an allowed response must be marked private for shared caches."""


@dataclass
class _State:
    """Everything a request reads, built and validated together, swapped as one reference."""

    policy: Policy
    locator: Locator
    proxies: ProxyConfig
    proxy_header: bytes
    reads_forwarded: bool
    needs_host: bool
    responses: ResponseConfig
    verifier: TokenVerifier | None
    identity_classes: frozenset[str]
    """Classes with a person rule: only their requests resolve an identity."""
    restricted_classes: frozenset[str]
    """Classes that deny someone: their allowed responses are marked private for shared caches."""
    signature: tuple[Any, ...] = ()
    decisions: dict[tuple[str, int, int, str | None], tuple[Any, Any, Decision]] = field(default_factory=dict)
    clients: dict[tuple[str | None, bytes | None], _Where] = field(default_factory=dict)
    front: dict[tuple[str, str, str, str | None, bytes | None], _Front] = field(default_factory=dict)


class GeofenceMiddleware:
    """Decide every request against an export-control policy; pass, or answer 451 / 401 / 503.

    *config* is a policy file path, a parsed :class:`Policy`, a dict in the policy file's shape, or None for
    the bundled example policy. With a file, ``reload=True`` (the default for files) watches it, the
    configured databases and key files, and swaps in a validated new state without a restart; an invalid
    change is logged and the running policy kept. Identity comes from signed tokens when the policy's
    ``[identity]`` names a key source, or from *identity*, a resolver your app provides (which then takes
    precedence). *on_decision* is called with every denial and every report-mode would-be
    denial, for audit. *deny_response* may return a custom :class:`DenialResponse` (or None for the default).
    """

    def __init__(
        self,
        app: ASGIApp,
        config: str | os.PathLike[str] | Policy | Mapping[str, Any] | None = None,
        *,
        identity: IdentityResolver | None = None,
        reload: bool | None = None,
        reload_interval: float = 2.0,
        on_decision: Callable[[Decision, Scope], None] | None = None,
        deny_response: Callable[[Decision, Scope], DenialResponse | None] | None = None,
    ) -> None:
        self.app = app
        self._path = Path(config) if isinstance(config, str | os.PathLike) else None
        self._config = config
        self._identity = identity
        self._on_decision = on_decision
        self._deny_hook = deny_response
        self.stats: Counter[tuple[str, str, str]] = Counter()
        """Denials and report-mode would-be denials, by (outcome, export class, reason code)."""
        self._state = self._build()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if reload if reload is not None else self._path is not None:
            if self._path is None:
                raise GeofenceError("reload needs a policy file path")
            self._watcher = threading.Thread(
                target=self._watch, args=(reload_interval,), name="geofence-reload", daemon=True
            )
            self._watcher.start()

    # --- state --------------------------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        """The policy in force now."""
        return self._state.policy

    def _build(self) -> _State:
        config = self._config
        if isinstance(config, Policy):
            policy = config
        elif isinstance(config, Mapping):
            policy = parse_policy(config)
        else:
            policy = load_policy(self._path)
        signature = self._signature(policy)
        proxies = ProxyConfig.from_networks(policy.trusted_proxies, policy.proxy_header)
        return _State(
            policy=policy,
            locator=policy.locator(),
            proxies=proxies,
            proxy_header=policy.proxy_header.encode("latin-1"),
            reads_forwarded=bool(proxies.trusted or proxies.trust_unix),
            needs_host=any(rule.host for rule in policy.routes.rules),
            responses=ResponseConfig(
                blocked_by=policy.blocked_by,
                vary=("Accept", "Authorization", "Cookie", policy.proxy_header.title()),
                hook=self._deny_hook,
            ),
            verifier=TokenVerifier(policy.tokens) if policy.tokens is not None else None,
            identity_classes=frozenset(name for name, c in policy.classes.items() if c.persons.kind != "any"),
            restricted_classes=frozenset(
                name for name, c in policy.classes.items() if c.restricted and policy.private_cache
            ),
            signature=signature,
        )

    def _signature(self, policy: Policy | None) -> tuple[Any, ...]:
        """What the watcher compares: the policy file and the databases it names, by inode, size and mtime."""
        paths = [self._path] if self._path is not None else []
        if policy is not None:
            paths += [Path(p) for p in policy.databases or ()]
            paths += list(policy.tokens.key_files if policy.tokens is not None else ())
        signature: list[tuple[Any, ...]] = []
        for path in paths:
            try:
                st = os.stat(path)
                signature.append((str(path), st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                signature.append((str(path), None))
        return tuple(signature)

    def reload(self) -> bool:
        """Re-read the policy file and databases now; True if a new state was swapped in."""
        try:
            state = self._build()
        except GeofenceError as exc:
            log.error("geofence: keeping policy %s: the new configuration is invalid: %s", self.policy.version, exc)
            return False
        except Exception:  # never let a surprise kill the watcher: later valid edits must still apply
            log.exception("geofence: keeping policy %s: could not load the new configuration", self.policy.version)
            return False
        old = self._state
        self._state = state  # one reference assignment: requests see the old state or the new, never a mix
        if state.policy.version != old.policy.version:
            log.warning("geofence: policy %s replaced by %s", old.policy.version, state.policy.version)
        # The old readers are not closed here: a request may still be using them. They close when unreferenced.
        return True

    def _watch(self, interval: float) -> None:
        seen = self._state.signature
        while not self._stop.wait(interval):
            current = self._signature(self._state.policy)
            if current != seen:  # a failed reload is not retried until the files change again
                seen = current
                self.reload()

    def close(self) -> None:
        """Stop watching for changes."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    # --- the request path ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        state = self._state
        try:
            # One pass over the headers for the few this request needs, then one front-cache lookup that
            # answers route and client location together when this client has asked for this path before.
            forwarded = None
            host = ""
            if state.reads_forwarded or state.needs_host:
                proxy_header = state.proxy_header
                for name, value in scope["headers"]:
                    if name == proxy_header and state.reads_forwarded:
                        forwarded = value if forwarded is None else forwarded + b"," + value
                    elif name == b"host" and state.needs_host:
                        if host:  # servers and frameworks disagree on which copy wins: refuse to guess
                            raise _Refused("the request has more than one Host header")
                        host = value.decode("latin-1")
            client = scope.get("client")
            method = scope["method"] if kind == "http" else "WEBSOCKET"
            front_key = (method, scope["path"], host, client[0] if client else None, forwarded)
            front = state.front.get(front_key)
            if front is None:
                front = self._front(state, scope, method, host, forwarded)
                if len(state.front) >= _FRONT_CACHE_LIMIT:
                    state.front.clear()
                state.front[front_key] = front
            decision = front.decision  # set when nothing but the front key can change the answer
            private = front.private
            if decision is None:
                route, where = front.route, front.where
                if route.body is None and route.also is None:
                    decision = self._decide(state, scope, route.export_class, route.exempt or where.exempt, where)
                else:
                    decision, receive = await self._decide_slow(state, scope, receive, route, where)
                private = method in _CACHEABLE and decision.export_class in state.restricted_classes
        except _Refused as exc:
            decision, private = error_decision(state.policy, _INTERNAL_ERROR_CLASS, str(exc)), False
        except Exception as exc:  # fail closed, and never show the client a traceback
            log.exception("geofence: could not decide %s %s", scope.get("method", "WEBSOCKET"), scope.get("path"))
            detail = f"internal error: {type(exc).__name__}"
            decision, private = error_decision(state.policy, _INTERNAL_ERROR_CLASS, detail), False
        scope_state = scope.get("state")
        if scope_state is None:
            scope_state = scope["state"] = {}
        scope_state[STATE_KEY] = decision
        scope_state[POLICY_KEY] = state.policy
        scope_state[MIDDLEWARE_KEY] = self
        if decision.allowed:
            if decision.reasons and decision.would_deny:
                self._record("would_deny", decision, scope)
            if private and not decision.reasons:
                send = _private_responses(send)
            await self.app(scope, receive, send)
            return
        self._record("deny", decision, scope)
        response = self._denial(state, decision, scope)
        if kind == "http":
            await send({"type": "http.response.start", "status": response.status, "headers": list(response.headers)})
            body = b"" if scope.get("method") == "HEAD" else response.body
            await send({"type": "http.response.body", "body": body})
            return
        await _deny_websocket(scope, receive, send, response)

    async def _decide_slow(
        self, state: _State, scope: Scope, receive: Receive, route: Route, where: _Where
    ) -> tuple[Decision, Receive]:
        """Routes that need the body, or whose path has another spelling the app might route: every
        classification must allow the request."""
        routes = [route] if route.also is None else [route, route.also]
        body = None
        limits = [r.body.candidates[0].max_body_bytes for r in routes if r.body is not None]
        if limits:
            body, receive = await _buffer_body(scope, receive, max(limits))
        decision = None
        for candidate in routes:
            export_class = candidate.body.classify(body)[0] if candidate.body is not None else candidate.export_class
            found = self._decide(state, scope, export_class, candidate.exempt or where.exempt, where)
            if decision is None or (decision.allowed and not found.allowed):
                decision = found
        assert decision is not None
        return decision, receive

    def _front(self, state: _State, scope: Scope, method: str, host: str, forwarded: bytes | None) -> _Front:
        """Route and client location for a (method, path, host, peer, forwarding header) not seen before, and
        the decision itself when no identity and no body can change it."""
        route = state.policy.routes.classify(method, host, scope["path"])
        client = scope.get("client")
        where_key = (client[0] if client else None, forwarded)
        where = state.clients.get(where_key)
        if where is None:
            where = self._locate(state, scope, forwarded)
            if len(state.clients) >= _CLIENT_CACHE_LIMIT:
                state.clients.clear()
            state.clients[where_key] = where
        if route.body is None and route.also is None and route.export_class not in state.identity_classes:
            decision = self._decide(state, scope, route.export_class, route.exempt or where.exempt, where)
            private = method in _CACHEABLE and decision.export_class in state.restricted_classes
            return _Front(route, where, decision, private)
        return _Front(route, where, None, False)

    def _decide(self, state: _State, scope: Scope, export_class: str, exempt: str | None, where: _Where) -> Decision:
        """Identity, then the decision: one cached answer per (class, network, identity) object."""
        location = where.location
        identity = identity_problem = None
        if export_class in state.identity_classes:  # only classes with a person rule pay for identity
            identity, identity_problem = self._identity_of(state, scope)
        if location is None or identity_problem is not None:
            return decide(
                state.policy, export_class, location, identity,
                identity_problem=identity_problem, location_problem=where.problem, exempt=exempt,
            )  # fmt: skip
        cache_key = (export_class, id(location), id(identity), exempt)
        cached = state.decisions.get(cache_key)
        if cached is not None and cached[0] is location and cached[1] is identity:
            return cached[2]
        decision = decide(state.policy, export_class, location, identity, exempt=exempt)
        if len(state.decisions) >= _DECISION_CACHE_LIMIT:
            state.decisions.clear()
        # The objects are kept in the entry, so their ids cannot be reused by others while it exists.
        state.decisions[cache_key] = (location, identity, decision)
        return decision

    def _locate(self, state: _State, scope: Scope, forwarded: bytes | None) -> _Where:
        """Client address -> location, for the front cache. A database error propagates (and is not cached)."""
        client = resolve_client(scope, state.proxies, forwarded)
        if client.key is None:
            return _Where(None, f"client address unknown: {client.problem}", None)
        return _Where(state.locator.lookup_key(client.key), None, state.policy.exempt_network(client.key))

    def identity_of(self, scope: Scope) -> tuple[Identity | None, str | None]:
        """The verified identity of a request (or why it was rejected): from the app's resolver, else tokens."""
        return self._identity_of(self._state, scope)

    def _identity_of(self, state: _State, scope: Scope) -> tuple[Identity | None, str | None]:
        try:
            if self._identity is not None:
                return self._identity(scope), None
            if state.verifier is not None:
                token = token_from_scope(scope, state.verifier.config.source, state.verifier.config.max_token_bytes)
                return (state.verifier.identity(token), None) if token is not None else (None, None)
        except IdentityError as exc:
            return None, str(exc)
        return None, None

    def denial(self, decision: Decision, scope: Scope) -> DenialResponse:
        """The response for a denied *decision* of a request (also used by the per-endpoint helpers)."""
        return self._denial(self._state, decision, scope)

    def _denial(self, state: _State, decision: Decision, scope: Scope) -> DenialResponse:
        accept = _header(scope, b"accept")
        try:
            return denial_response(decision, state.responses, accept, scope)
        except Exception:
            log.exception("geofence: deny_response hook failed; sending the standard denial")
            return denial_response(decision, dataclasses.replace(state.responses, hook=None), accept)

    def _record(self, outcome: str, decision: Decision, scope: Scope) -> None:
        for reason in decision.reasons:
            self.stats[(outcome, decision.export_class, reason.code)] += 1
        decisions_log.info(
            "%s %s %s %s class=%s status=%s reasons=%s policy=%s",
            outcome,
            scope.get("method", "WEBSOCKET"),
            scope.get("path"),
            (scope.get("client") or ("-",))[0],
            decision.export_class,
            decision.status,
            ",".join(r.code for r in decision.reasons),
            decision.policy_version,
        )
        if self._on_decision is not None:
            try:
                self._on_decision(decision, scope)
            except Exception:
                log.exception("geofence: on_decision hook failed")


_PRIVATE: Final = (b"cache-control", b"private")
_CACHEABLE: Final = frozenset({"GET", "HEAD"})  # what shared caches store without explicit opt-in


def _private_responses(send: Send) -> Send:
    """Mark the app's response ``Cache-Control: private``: it was decided for this caller, so a shared cache
    (a CDN in front of the app) must not replay it to someone the policy would refuse."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers") or ()
            for name, _ in headers:
                if name.lower() == b"cache-control":
                    message["headers"] = _make_private(headers)
                    break
            else:
                message["headers"] = [*headers, _PRIVATE]
        await send(message)

    return wrapped


def _make_private(headers: Any) -> list[tuple[bytes, bytes]]:
    """Keep the app's directives but ``public`` / ``s-maxage``, and make the response private."""
    given = [bytes(v).decode("latin-1") for k, v in headers if bytes(k).lower() == b"cache-control"]
    directives = [d.strip() for v in given for d in v.split(",") if d.strip()]
    if any(d.lower() in ("private", "no-store") for d in directives):
        return list(headers)
    kept = [d for d in directives if not d.lower().startswith(("public", "s-maxage"))]
    value = ", ".join(["private", *kept]).encode("latin-1")
    return [(k, v) for k, v in headers if bytes(k).lower() != b"cache-control"] + [(b"cache-control", value)]


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def _buffer_body(scope: Scope, receive: Receive, limit: int) -> tuple[bytes | None, Receive]:
    """Read the body up to *limit* bytes, and a receive that replays what was read, then continues.

    Returns None for the body when it is larger than *limit* (or the client left): the class then fails
    closed. Nothing is lost either way: the app still receives every byte the client sent.
    """
    messages: list[Message] = []
    size = 0
    complete = False
    while size <= limit:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            complete = size <= limit
            break
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request") if complete else None
    pending = iter(messages)

    async def replay() -> Message:
        for message in pending:
            return message
        return await receive()

    return body, replay


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, response: DenialResponse) -> None:
    """Refuse a WebSocket before accepting it: an HTTP response where the server supports it, else 1008."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {"type": "websocket.http.response.start", "status": response.status, "headers": list(response.headers)}
        )
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": "policy violation"})
