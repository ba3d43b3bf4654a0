"""The decision steps of a request: route and client (once per new request key), then the decision itself —
strictest over every spelling of the path the app might route, with identity read only for classes with a
person rule, and one cached answer per (class, location facts, identity).

The middleware calls these on a front-cache miss, for classes that need an identity, and for classes decided
by the body, query or headers; the warm path never reaches them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from functools import partial
from typing import Any, Final

from ..geoip.location import Location
from ..identity.claims import Identity, IdentityError
from ..native import core
from ..policy.decision import Decision, decide
from ..request.facts import RequestFacts
from ..routing.routes import Route
from .plumbing import buffer_body
from .state import MEMO_BYTES, Front, State, Where, new_front, new_where
from .where import ChainWarnings, Client, client_key, locate_client, pack_client, unpack_client

__all__ = ["Decider", "privacy"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_CACHEABLE: Final = frozenset({"GET", "HEAD"})  # what shared caches store without explicit opt-in


class Decider:
    """The steps from request facts to a decision, for one middleware: its identity resolver (which takes
    precedence over tokens) and its once-per-cause warnings about broken proxy chains."""

    def __init__(self, resolver: Callable[[Scope], Identity | None] | None, warnings: ChainWarnings) -> None:
        self.resolver = resolver
        self.warnings = warnings

    def reuse(self, state: State, key: tuple[Any, ...], forwarding: Mapping[bytes, bytes]) -> tuple[Front, bool] | None:
        """The native path's new client on a route already decided for its location facts: the front entry
        from that template with this client's own network, before the request's facts are even read; and
        whether the key was seen. None when it does not apply (then :meth:`front` decides)."""
        resolver = state.resolver
        located = resolver.resolve(key[4], forwarding) if resolver is not None else None  # key[4]: the peer
        if located is None:
            return None
        network, facts_id, client, text = located
        exempt = state.policy.exempt_network(client)
        template = state.templates.get(_template_key(key, facts_id, exempt))
        if template is None:
            return None
        route, decision, private, plain = template
        location = state.locator.location(network, facts_id)
        where = new_where((location, None, exempt, False, text, facts_id))
        front = new_front((route, where, _with_location(decision, location), private, plain, None))
        return front, resolver.seen(key)

    def front(self, state: State, scope: Scope, facts: RequestFacts) -> tuple[Front, bool]:
        """Route and client location for a request key not seen before, and the decision itself when no
        identity and no request parameter can change it; and whether the client was known (the front cache
        admits only those: a flood of one-off clients neither pays for nor displaces its entries)."""
        resolver = state.resolver
        located = resolver.resolve(facts.peer, facts.forwarding) if resolver is not None else None
        template_key = None
        if located is not None:  # the native path: the client and its location in one call, nothing cached
            network, facts_id, key, text = located
            exempt = state.policy.exempt_network(key)
            seen = facts.key is not None and resolver.seen(facts.key)  # known by request key (no client cache)
            template_key = _template_key(facts.key, facts_id, exempt) if facts.key is not None else None
            client: Client = (network, facts_id, None, exempt, False, text)
        else:
            client, seen = self.client(state, scope, facts)
            if resolver is not None:
                seen = facts.key is not None and resolver.seen(facts.key)
        front = self.decided(state, scope, facts, client)
        if template_key is not None and front.decision is not None and not front.route.also:
            # what :meth:`reuse` answers the next new client with these facts on this route
            state.templates.put(template_key, (front.route, front.decision, front.private, front.plain), facts.size)
        return front, seen

    def decided(self, state: State, scope: Scope, facts: RequestFacts, client: Client) -> Front:
        """The front entry of a request from *client*: its route, its location and (when nothing else plays a
        part) its decision."""
        route = state.policy.routes.classify(facts.method, facts.host, facts.path, facts.root_path)
        network, facts_id, problem, exempt, broken, text = client
        location = state.locator.location(network, facts_id) if network is not None else None
        where = new_where((location, problem, exempt, broken, text, facts_id))
        if not route.also:  # one spelling (most requests): skip the general loop below
            if route.params is not None:
                return new_front((route, where, None, False, False, None))
            if route.export_class in state.identity_classes:  # decided per request; its privacy is the class's
                verifier = state.verifier  # a memo by Authorization value, when that value is the token
                memo = [None] if verifier is not None and verifier.by_authorization and self.resolver is None else None
                private = privacy(facts.method, route.export_class, state)
                return new_front((route, where, None, private, False, memo))
            decision = self.decide(state, scope, route.export_class, route.exempt or where.exempt, where)
        else:
            spellings = _spellings(route)
            if any(r.params is not None or r.export_class in state.identity_classes for r in spellings):
                return new_front((route, where, None, False, False, None))
            decision = self.strictest(state, scope, where, ((r.export_class, r.exempt) for r in spellings))
        private = privacy(facts.method, decision.export_class, state)
        plain = decision.allowed and not decision.reasons and decision.export_class not in state.record_allowed
        return new_front((route, where, decision, private, plain, None))

    def client(self, state: State, scope: Scope, facts: RequestFacts) -> tuple[Client, bool]:
        """The Python steps to the client and its location (the reference): cached per peer and trusted
        forwarding headers, when the request is cacheable at all (see request/facts.py); and whether it was
        known."""
        where_key = client_key(facts.peer, facts.forwarding) if facts.key is not None else None
        packed = state.clients.get(where_key) if where_key is not None else None
        if packed is not None:
            return unpack_client(packed), True
        client = locate_client(scope, facts.forwarding, state.proxies, state.locator, state.policy, self.warnings)
        if where_key is not None:
            state.clients.put(where_key, pack_client(client), 2 * len(where_key) + 80)
        return client, False

    def decide_identity(self, state: State, scope: Scope, front: Front) -> Decision:
        """A one-spelling route whose class reads an identity. Its front entry remembers the last Authorization
        value it saw with that value's identity and decision, so a repeat request with the same token costs one
        comparison: the value compared in full, the identity's expiry and the verifier's key generation checked
        (withdrawn keys vouch for nothing). Anything else is decided, and remembered when it can be."""
        route, where, memo, verifier = front.route, front.where, front.memo, state.verifier
        if memo is None or verifier is None:
            return self.decide(state, scope, route.export_class, route.exempt or where.exempt, where)
        value = core.authorization(scope["headers"])  # type: ignore[union-attr]
        last = memo[0]
        if last is not None and value == last[0] and last[3] == verifier.generation and time.time() < last[1].expires:
            return last[2]  # type: ignore[no-any-return]
        generation = verifier.generation  # read before deciding: a key change meanwhile voids what follows
        decision = self.decide(state, scope, route.export_class, route.exempt or where.exempt, where)
        identity = decision.identity
        if value is not None and len(value) <= MEMO_BYTES and identity is not None and identity.expires is not None:
            memo[0] = (value, identity, decision, generation)  # one reference assignment: never seen half-written
        return decision

    async def decide_request(
        self, state: State, scope: Scope, receive: Receive, front: Front
    ) -> tuple[Decision, Receive]:
        """Requests whose class depends on identity or on the body, query or headers."""
        spellings = _spellings(front.route)
        limits = [r.params.max_body_bytes for r in spellings if r.params is not None and r.params.needs_body]
        body = None
        if limits:
            body, receive = await buffer_body(receive, max(limits))
        query = scope.get("query_string", b"")
        classes = [
            (r.params.classify(body, query, scope["headers"])[0] if r.params is not None else r.export_class, r.exempt)
            for r in spellings
        ]
        return self.strictest(state, scope, front.where, classes), receive

    def strictest(
        self, state: State, scope: Scope, where: Where, classes: Iterable[tuple[str, str | None]]
    ) -> Decision:
        """Every spelling of the request the app might route must be allowed: the first denial wins. When all
        are allowed, the one that says most about the request wins (a report-mode would-be denial, then an
        identity, then a restricting class), so the app, the audit, the private marking and the WebSocket
        expiry see the strictest class that applied."""
        best = None
        for export_class, exempt in classes:
            found = self.decide(state, scope, export_class, exempt or where.exempt, where)
            if not found.allowed:
                return found
            rank = (found.would_deny, found.identity is not None, found.export_class in state.restricting)
            if best is None or rank > best[0]:
                best = (rank, found)
        assert best is not None
        return best[1]

    def decide(self, state: State, scope: Scope, export_class: str, exempt: str | None, where: Where) -> Decision:
        """Identity, then the decision: one cached answer per (class, location facts, identity object)."""
        location = where.location
        identity = identity_problem = None
        if export_class in state.identity_classes:  # only classes with a person rule pay for identity
            identity, identity_problem = self.identity_of(state, scope)
        if location is None or identity_problem is not None:
            return decide(
                state.policy, export_class, location, identity,
                identity_problem=identity_problem,
                location_problem=None if where.broken else where.problem,
                client_problem=where.problem if where.broken else None,
                exempt=exempt,
            )  # fmt: skip
        # Keyed by the location's facts, not its network: a new network with a known answer costs one lookup.
        cache_key = (export_class, where.facts, id(identity), exempt)
        cached = state.decisions.get(cache_key)
        if cached is not None and cached[0] is identity:  # the identity is kept in the entry: its id is unique
            decision = cached[1]
            if decision.location is location:
                return decision
            return _with_location(decision, location)
        decision = decide(state.policy, export_class, location, identity, exempt=exempt)
        state.decisions.put(cache_key, (identity, decision))
        return decision

    def identity_of(self, state: State, scope: Scope) -> tuple[Identity | None, str | None]:
        """The verified identity of a request (or why it was rejected): from the app's resolver, else tokens."""
        try:
            if self.resolver is not None:
                return self.resolver(scope), None
            verifier = state.verifier
            if verifier is not None:
                return verifier.identity_of(scope), None
        except IdentityError as exc:
            return None, str(exc)
        return None, None


def privacy(method: str | None, export_class: str, state: State) -> bool | None:
    """How an allowed response is guarded against shared caches: True, marked private (its class can deny
    anyone); None, a GET or HEAD of a class that cannot, which a per-endpoint helper may still make private
    (it demands a class that can); False, nothing to guard (other methods, or ``private_cache = false``)."""
    if method is None or method.upper() not in _CACHEABLE or not state.private_classes:
        return False
    return True if export_class in state.private_classes else None


def _with_location(decision: Decision, location: Location) -> Decision:
    """*decision* for another network with the same facts (the decision rests on the facts alone)."""
    allowed, status, export_class, mode, reasons, version, _, identity = decision
    return _new_decision((allowed, status, export_class, mode, reasons, version, location, identity))


_new_decision: Final[Callable[[tuple[Any, ...]], Decision]] = partial(tuple.__new__, Decision)


def _template_key(key: tuple[Any, ...], facts_id: int, exempt: str | None) -> tuple[Any, ...]:
    """What a template is kept by: a request key's method, path, root path and host (everything that routes
    it), the client's location facts and its exemption."""
    return (key[0], key[1], key[2], key[3], facts_id, exempt)


def _spellings(route: Route) -> tuple[Route, ...]:
    """The classifications a request must pass: one per spelling the app might route (exempt only when
    every spelling is, which the route table has already checked)."""
    return (route,) if route.exempt is not None or not route.also else (route, *route.also)
