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
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final

from ..errors import GeofenceError
from ..evidence.freshness import stale_decision, stale_message
from ..identity.claims import Identity
from ..native import describe, missing
from ..policy.decision import AUDIT_UNAVAILABLE, ERROR, Decision, Reason, error_decision
from ..policy.load import Policy
from ..request.facts import Refused, key_size, read_request, request_key
from ..request.ids import PEER_KEY, TRUST_KEY, request_id
from .deciding import Decider, privacy
from .health import health_report
from .plumbing import (
    Deadline,
    Marks,
    expiring_websocket,
    header,
    private_responses,
    private_when,
    refuse_lifespan,
    send_denial,
    send_json,
)
from .recording import DecisionRecorder, printable
from .reloader import Reloader
from .responses import DenialResponse, ResponseConfig, denial_response
from .state import MEMO_BYTES, Front, State, Where
from .where import ChainWarnings

__all__ = ["GeofenceMiddleware", "IdentityResolver"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
IdentityResolver = Callable[[Scope], Identity | None]
"""Returns the caller's verified identity, None for none, or raises IdentityError for a rejected one."""

log = logging.getLogger("geofence")

STATE_KEY: Final = "geofence"
POLICY_KEY: Final = "geofence.policy"
MIDDLEWARE_KEY: Final = "geofence.middleware"
CLIENT_KEY: Final = "geofence.client"
"""The resolved client (location, why there is none, exempt network, broken chain) for per-endpoint checks."""
PRIVATE_KEY: Final = "geofence.private"
"""Classes per-endpoint helpers allowed for this request that make its response private (see :func:`_markable`)."""
DEADLINE_KEY: Final = "geofence.deadline"
"""When this WebSocket must end (a :class:`geofence.asgi.plumbing.Deadline`), which a helper's identity may shorten."""
ENFORCED_KEY: Final = "geofence.enforced"
"""What per-endpoint helpers decided for this request, by class: each is checked and recorded once."""
_INTERNAL_ERROR_CLASS: Final = "unknown"


class GeofenceMiddleware:
    """Decide every request against an export-control policy; pass, or answer 451 / 401 / 503.

    *config* is a policy file path, a parsed :class:`Policy`, a dict in the policy file's shape, or None for
    the bundled example policy. With a file, ``reload=True`` (the default for files) watches it, the
    configured databases and key files, and swaps in a validated new state without a restart; an invalid
    change is logged and the running policy kept. An invalid policy at start never serves: the server's
    lifespan start-up fails with the reason, and without lifespan every request is answered 503.
    Identity comes from signed tokens when the policy's ``[identity]`` names a key source, or from
    *identity*, a resolver your app provides (which then takes precedence). *on_decision* is called with
    every denial and every report-mode would-be denial, for audit. *deny_response* may return a custom
    :class:`DenialResponse` (or None for the default).
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
        if missing():
            log.warning("geofence: %s; decisions are the same, each costs more", describe())
        self.recorder = DecisionRecorder(on_decision)
        self._decider = Decider(identity, ChainWarnings())
        self._live = Reloader(config, deny_response, watch=reload, interval=reload_interval)

    @property
    def stats(self) -> Mapping[tuple[str, str, str], int]:
        """Denials and report-mode would-be denials, by (outcome, export class, reason code)."""
        return self.recorder.stats

    @property
    def policy(self) -> Policy:
        """The policy in force now."""
        state = self._live.state
        if state is None:
            raise GeofenceError(self.startup_error or "no policy loaded")
        return state.policy

    @property
    def cache_budget_bytes(self) -> int:
        """What the request-path caches may hold in this process (``[cache] max_mb``), in bytes."""
        state = self._live.state
        return state.budget.total_bytes if state is not None else 0

    @property
    def startup_error(self) -> str | None:
        """Why no valid policy is loaded (the middleware then refuses to serve), or None."""
        return self._live.startup_error

    @property
    def _state(self) -> State | None:
        return self._live.state

    def reload(self) -> bool:
        """Re-read the policy file and databases now; True if a new state was swapped in."""
        return self._live.reload()

    def close(self) -> None:
        """Stop watching for changes."""
        self._live.close()

    # --- the request path ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        state = self._live.state
        if kind != "http" and kind != "websocket":
            if state is None and kind == "lifespan":
                await refuse_lifespan(receive, send, self.startup_error or "geofence: no policy")
                return
            await self.app(scope, receive, send)
            return
        if state is None:
            await self._refuse_unconfigured(scope, receive, send)
            return
        if scope["path"] == state.health_path and kind == "http":  # answered here, never decided
            status, body = health_report(state, self._live, time.time())
            await send_json(scope, send, status, body)
            return
        try:
            # One pass over the headers for the few this request needs, then one front-cache lookup that
            # answers route, client location and decision together when this client asked for this path before.
            metrics = state.metrics
            if metrics is not None:
                metrics.pending += 1  # a plain integer here; prometheus gets it off the warm path
            key, host, forwarding = request_key(scope, state.watched, state.needs_host, state.peer_trusted)
            front = state.front.get(key) if key is not None else None
            if front is None:
                front = self._miss(state, scope, key, host, forwarding)
        except Refused as exc:
            refused = error_decision(state.policy, _INTERNAL_ERROR_CLASS, str(exc))
            await self._finish(state, scope, receive, send, refused)
            return
        except Exception as exc:  # fail closed, and never show the client a traceback
            await self._finish(state, scope, receive, send, self._internal_error(state, scope, exc))
            return
        route, where, decision, private, plain, _ = front
        if decision is None:
            try:
                if route.params is None and not route.also:  # a class that needs an identity, one spelling:
                    decision = self._decider.decide_identity(state, scope, front)  # its privacy is in front
                    # an allowed HTTP request with nothing to record takes the warm path too
                    plain = kind == "http" and not decision.reasons and decision.allowed
                    plain = plain and decision.export_class not in state.record_allowed
                else:
                    decision, receive = await self._decider.decide_request(state, scope, receive, front)
                    private = privacy(scope.get("method"), decision.export_class, state)
            except Exception as exc:
                decision, private, plain = self._internal_error(state, scope, exc), False, False
        if plain and (state.stale_at is None or time.time() < state.stale_at):
            # The warm path: an allowed decision with nothing to record.
            _publish(scope, decision, state, self, where)
            if private:
                send = private_responses(send)
            elif private is None:
                send = _markable(scope, send)
            elif kind == "websocket":
                receive, send = _expiring(state, scope, receive, send, None)
            await self.app(scope, receive, send)
            return
        await self._finish(state, scope, receive, send, decision, where, private)

    def _miss(
        self, state: State, scope: Scope, key: tuple[Any, ...] | None, host: str, forwarding: Mapping[bytes, bytes]
    ) -> Front:
        """A request key not in the front cache: work it out (and keep it, unless the key is uncacheable)."""
        metrics = state.metrics
        started = time.perf_counter() if metrics is not None else 0.0
        reused = self._decider.reuse(state, key, forwarding) if key is not None else None
        if reused is not None:  # a new client on a route decided for its location before: facts not read
            front, seen = reused
        else:
            front, seen = self._decider.front(state, scope, read_request(scope, key, host, forwarding))
        if key is not None and seen and state.admit():
            state.front.put(key, front, key_size(key, forwarding) + (MEMO_BYTES if front.memo is not None else 0))
        if metrics is not None:
            metrics.miss(time.perf_counter() - started)
            if state.audit is not None:
                metrics.audit(state.audit)
        return front

    def _internal_error(self, state: State, scope: Scope, exc: Exception) -> Decision:
        log.exception("geofence: could not decide %s", printable(scope.get("path")), exc_info=exc)
        return error_decision(state.policy, _INTERNAL_ERROR_CLASS, f"internal error: {type(exc).__name__}")

    async def _finish(
        self,
        state: State,
        scope: Scope,
        receive: Receive,
        send: Send,
        decision: Decision,
        where: Where | None = None,
        private: bool | None = False,
    ) -> None:
        """Everything but the warm path: a stale database, the audit trail, report mode, denials."""
        if state.stale_at is not None or state.audit is not None:
            decision = self._checked(state, decision)
        scope_state = _publish(scope, decision, state, self, where)
        client = where.client if where is not None else None
        decision = scope_state[STATE_KEY] = self.recorder.decided(decision, scope, state, client)
        if decision.allowed:
            if private:
                send = private_responses(send)
            elif private is None:
                send = _markable(scope, send)
            elif scope["type"] == "websocket":
                receive, send = _expiring(state, scope, receive, send, decision.identity)
            await self.app(scope, receive, send)
            return
        await send_denial(scope, receive, send, self._denial(state, decision, scope))

    def _checked(self, state: State, decision: Decision) -> Decision:
        """What may still refuse a decision: a stale database under ``on_stale = "deny"``, and a failing audit
        trail under ``on_failure = "deny"`` (what cannot be recorded is not served; the denial is still queued,
        and the first write that succeeds clears the failure)."""
        if state.stale_at is not None and time.time() >= state.stale_at:
            decision = self._stale(state, decision)
        audit = state.audit
        if (
            audit is not None
            and audit.on_failure == "deny"
            and decision.allowed
            and decision.export_class in state.restricting
            and audit.failing
        ):
            detail = "audit trail failing (on_failure = deny)"
            decision = error_decision(state.policy, decision.export_class, detail, code=AUDIT_UNAVAILABLE)
        return decision

    def _stale(self, state: State, decision: Decision) -> Decision:
        """A database passed ``[geoip] max_age_days``: warn once per loaded state, then apply ``on_stale``."""
        policy = state.policy
        if state.stale_detail is None:  # worked out (and logged) once per loaded state, not per request
            infos = (db.info for db in state.locator.databases)
            state.stale_detail = stale_message(infos, policy.max_age_days, time.time()) or "database stale"
            log.warning("geofence: %s (on_stale = %s): run geofence db update", state.stale_detail, policy.on_stale)
        return stale_decision(policy, decision, state.stale_detail)

    async def _refuse_unconfigured(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Without a valid policy nothing is served: 503, never the app, never a traceback."""
        reason = Reason(ERROR, self.startup_error or "no policy")
        decision = Decision(False, 503, _INTERNAL_ERROR_CLASS, "enforce", (reason,), "none", None, None)
        response = denial_response(decision, ResponseConfig(), header(scope, b"accept"), request_id=request_id(scope))
        await send_denial(scope, receive, send, response)

    def identity_of(self, scope: Scope) -> tuple[Identity | None, str | None]:
        """The verified identity of a request (or why it was rejected): from the app's resolver, else tokens."""
        if self._state is None:
            return None, self.startup_error
        return self._decider.identity_of(self._state, scope)

    def enforced(self, decision: Decision, scope: Scope) -> Decision:
        """A per-endpoint helper enforces *decision*, a class the code demands: apply what may still refuse it
        (a stale database, a failing audit trail), record it once per class and request as the middleware's
        own decisions are (log, audit, ``on_decision``, with the request's id), mark an allowed GET or HEAD
        private when its class can deny anyone, and return the decision to act on."""
        state, scope_state = self._live.state, scope.get("state") or {}
        current = scope_state.get(STATE_KEY)
        if state is None or current is None or decision is current:
            return decision  # the middleware's own decision: checked and recorded already
        decision = self._checked(state, decision)
        enforced: dict[str, Decision] = scope_state.setdefault(ENFORCED_KEY, {})
        if decision.export_class in enforced:
            return enforced[decision.export_class]  # several guards on one route: one record
        request_id(scope)  # fixes the request's id, so every record of it carries the same one
        if decision.allowed:  # before recording: what cannot be guarded is refused, and recorded so
            decision = _guard(state, scope, scope_state, decision, current)
        where = scope_state.get(CLIENT_KEY)
        decision = self.recorder.decided(decision, scope, state, where.client if where is not None else None)
        enforced[decision.export_class] = decision
        return decision

    def private_for(self, decision: Decision, scope: Scope) -> bool:
        """Whether an allowed response of *decision* must be marked private for shared caches: a GET or HEAD
        of a class that can deny anyone (for a helper that sets the header itself, before an in-app cache)."""
        state = self._live.state
        return (
            state is not None and decision.allowed and bool(privacy(scope.get("method"), decision.export_class, state))
        )

    def denial(self, decision: Decision, scope: Scope) -> DenialResponse:
        """The response for a denied *decision* of a request (also used by the per-endpoint helpers)."""
        if self._state is None:
            return denial_response(decision, ResponseConfig(), header(scope, b"accept"), request_id=request_id(scope))
        return self._denial(self._state, decision, scope)

    def _denial(self, state: State, decision: Decision, scope: Scope) -> DenialResponse:
        """The denial response, with the request id the decision's log line and audit record carry."""
        accept, rid, config = header(scope, b"accept"), request_id(scope), state.responses
        try:
            return denial_response(decision, config, accept, scope, rid)
        except Exception:
            log.exception("geofence: deny_response hook or denial template failed; sending the standard denial")
            return denial_response(decision, dataclasses.replace(config, hook=None, template=None), accept, None, rid)


def _markable(scope: Scope, send: Send) -> Send:
    """*send*, marking the response private once a per-endpoint helper allows a class that can deny anyone
    (it adds the class to ``PRIVATE_KEY``): the route's own class could not."""
    marks = scope["state"][PRIVATE_KEY] = Marks()
    return private_when(marks, send)


def _expiring(
    state: State, scope: Scope, receive: Receive, send: Send, identity: Identity | None
) -> tuple[Receive, Send]:
    """A WebSocket's receive and send, closed when the identity that allowed it expires: the route's own (if
    its class read one), or one a per-endpoint helper allows later (it shortens ``DEADLINE_KEY``)."""
    deadline = scope["state"][DEADLINE_KEY] = Deadline()
    if identity is not None and identity.expires is not None:
        deadline.at = identity.expires + state.websocket_grace
    return expiring_websocket(receive, send, deadline)


def _guard(state: State, scope: Scope, scope_state: Any, decision: Decision, current: Decision) -> Decision:
    """What an allowed helper decision needs from the response: private marking for a GET or HEAD of a class
    that can deny anyone, the identity's expiry for a WebSocket. Refused (503) when that is no longer
    possible — the response has started, or nothing was set up to carry it."""
    problem = None
    if privacy(scope.get("method"), decision.export_class, state):
        marks = scope_state.get(PRIVATE_KEY)
        if marks is not None and not marks.started:
            marks.classes.append(decision.export_class)
        elif marks is not None or not privacy(scope.get("method"), current.export_class, state):
            problem = "the response could not be marked private"
    identity = decision.identity
    if scope.get("type") == "websocket" and identity is not None and identity.expires is not None:
        deadline = scope_state.get(DEADLINE_KEY)
        if deadline is not None:
            deadline.shorten(identity.expires + state.websocket_grace)
        else:
            problem = "the WebSocket could not be bound to the identity's expiry"
    return error_decision(state.policy, decision.export_class, problem) if problem else decision


def _publish(
    scope: Scope, decision: Decision | None, state: State, middleware: GeofenceMiddleware, where: Where | None
) -> dict[str, Any]:
    """Put the decision, the policy, the middleware and the resolved client where the app and the per-endpoint
    helpers read them (``scope["state"]``), and who is a trusted proxy (whose ``X-Request-ID`` is taken: see
    request/ids.py); returns that dict."""
    scope_state = scope.get("state")
    if scope_state is None:
        scope_state = scope["state"] = {}
    scope_state[STATE_KEY] = decision
    scope_state[POLICY_KEY] = state.policy
    scope_state[MIDDLEWARE_KEY] = middleware
    scope_state[CLIENT_KEY] = where
    scope_state[TRUST_KEY] = state.peer_trusted
    scope_state[PEER_KEY] = scope.get("client")
    return scope_state
