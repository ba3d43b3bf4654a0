"""Who is the client, against real servers: server proxy-header settings x geofence ``[proxies]`` x requests.

A client must never choose the address geofence geolocates. The test process is the client; it connects from
127.0.0.1 — the address the trusted configurations name as *the proxy* — or from 127.0.0.2, which nothing
trusts (a caller reaching the server directly). It sends no forwarding header, a forged
``X-Forwarded-For: 8.8.8.8`` or a forged ``Forwarded: for=8.8.8.8`` (8.8.8.8 is in the US in the test
database). Loopback is not geolocatable, so on a class that allows only the US and denies unknown locations:

* ``peer``    — geofence used the TCP peer (451 ``location_unknown``);
* ``8.8.8.8`` — geofence used the header's address (200, located in the US);
* ``invalid`` — geofence refused to trust the client address (451 ``client_address_invalid``, also on a class
  with ``unknown_location = "allow"``; a class that restricts nobody is still served).

Expected (see :func:`expected`): a header is used only when it came through a configured trusted proxy and
geofence's own walk agrees; when the server rewrote ``scope["client"]`` from a header geofence cannot verify,
the request is ``invalid``. One cell is a documented limitation: a server that trusts every peer and receives a
*single* forged entry is indistinguishable from a correct rewrite (xfail).

Run with ``GEOFENCE_MATRIX_OUT=table.md`` to write the observed matrix as a Markdown table.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from ..conftest import country, write_mmdb
from .test_servers import serve_spec

PROXY = "127.0.0.1"  # where the test connects from when it plays the proxy (trusted where configured)
STRANGER = "127.0.0.2"  # a direct caller nothing trusts
FORGED = "8.8.8.8"
LIMITATION = "8.8.8.8 (known limitation)"


class Server(NamedTuple):
    label: str
    server: str
    options: dict[str, Any]
    wrap: str | None
    rewrites: Callable[[str], bool]
    """Whether this server replaces scope["client"] from X-Forwarded-For sent from this source address."""


SERVERS = [
    Server("uvicorn (defaults: --proxy-headers, --forwarded-allow-ips 127.0.0.1)", "uvicorn",
           {"proxy_headers": True, "forwarded_allow_ips": "127.0.0.1"}, None, lambda source: source == PROXY),
    Server("uvicorn --no-proxy-headers", "uvicorn", {"proxy_headers": False}, None, lambda source: False),
    Server('uvicorn --forwarded-allow-ips "*"', "uvicorn", {"proxy_headers": True, "forwarded_allow_ips": "*"},
           None, lambda source: True),
    Server("hypercorn", "hypercorn", {}, None, lambda source: False),
    Server("hypercorn + ProxyFixMiddleware (legacy, trusted_hops=1)", "hypercorn", {}, "hypercorn-proxyfix",
           lambda source: True),
    Server("granian", "granian", {}, None, lambda source: False),
    Server('granian + wrap_asgi_with_proxy_headers("127.0.0.1")', "granian", {}, "granian-proxies:127.0.0.1",
           lambda source: source == PROXY),
    Server('granian + wrap_asgi_with_proxy_headers("*")', "granian", {}, "granian-proxies:*",
           lambda source: True),
]  # fmt: skip

PROXIES = {
    "none": None,
    "xff": {"trusted": ["127.0.0.1/32"], "header": "x-forwarded-for"},
    "forwarded": {"trusted": ["127.0.0.1/32"], "header": "forwarded"},
}
PROXY_LABELS = {
    "none": "no `[proxies]`",
    "xff": '`trusted = ["127.0.0.1/32"]`, `header = "x-forwarded-for"`',
    "forwarded": '`trusted = ["127.0.0.1/32"]`, `header = "forwarded"`',
}
HEADERS = {"none": {}, "xff": {"X-Forwarded-For": FORGED}, "forwarded": {"Forwarded": f"for={FORGED}"}}
SOURCES = [PROXY, STRANGER]


def expected(server: Server, proxies: str, source: str, header: str) -> str:
    """The intended outcome of one request (see the module docstring)."""
    if header == "xff" and server.rewrites(source):
        if proxies == "xff":  # geofence's walk agrees with the server's single entry
            return FORGED if source == PROXY else LIMITATION
        return "invalid"  # a rewrite geofence cannot verify (no trusted proxies, or another header)
    if proxies == "none" or source != PROXY:
        return "peer"  # a header from a peer that is not a trusted proxy is ignored
    return FORGED if header == proxies else "invalid"  # the trusted proxy must send the configured header


def matrix_policy(country_db: Path, proxies: dict[str, Any] | None) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "geoip": {"databases": [str(country_db)]},
        "defaults": {"class": "OPEN"},
        "classes": {
            "OPEN": {"unknown_location": "allow"},  # restricts nobody
            "STRICT": {"allow_destinations": ["US"], "unknown_location": "deny"},
            "LENIENT": {"deny_destinations": ["embargoed"], "unknown_location": "allow"},
        },
        "routes": [{"path": "/strict/**", "class": "STRICT"}, {"path": "/lenient/**", "class": "LENIENT"}],
    }
    if proxies is not None:
        policy["proxies"] = proxies
    return policy


@pytest.fixture(scope="module")
def matrix_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mmdb(
        tmp_path_factory.mktemp("matrix") / "country.mmdb",
        "GeoIP2-Country",
        {"8.8.8.0/24": {"country": country("US")}, "5.8.0.0/16": {"country": country("RU")}},
    )


@pytest.fixture(scope="module", params=SERVERS, ids=[s.label for s in SERVERS])
def running(request: pytest.FixtureRequest, matrix_db: Path) -> Iterator[tuple[Server, int]]:
    server: Server = request.param
    spec = {
        "app": "demo",
        "policies": {name: matrix_policy(matrix_db, proxies) for name, proxies in PROXIES.items()},
        "wrap": server.wrap,
    }
    with serve_spec(server.server, spec, **server.options) as port:
        yield server, port


_CLIENTS: dict[str, httpx.Client] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.popitem()[1].close()


def get(port: int, path: str, variant: str, source: str, headers: dict[str, str]) -> httpx.Response:
    """GET from *source* (one keep-alive client per source address: building an httpx client is slow)."""
    client = _CLIENTS.get(source)
    if client is None:
        client = _CLIENTS[source] = httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10)
    return client.get(f"http://127.0.0.1:{port}{path}", headers={"x-e2e-variant": variant, **headers})


def classify(strict: httpx.Response, lenient: httpx.Response, open_: httpx.Response) -> str:
    """The outcome label from the same request on the three classes."""

    def codes(r: httpx.Response) -> list[str]:
        if r.status_code == 200:
            return []
        try:
            return [x["code"] for x in r.json().get("reasons", [])]
        except ValueError:
            return [f"non-JSON body {r.text[:80]!r}"]

    def country_of(r: httpx.Response) -> Any:
        location = r.json()["decision"]["facts"]["location"]
        return location and location.get("country")

    detail = (f"other(strict {strict.status_code} {codes(strict)}, lenient {lenient.status_code} {codes(lenient)}, "
              f"open {open_.status_code})")  # fmt: skip
    if open_.status_code != 200:
        return detail
    if strict.status_code == 200 and country_of(strict) == "US" and lenient.status_code == 200:
        return FORGED
    if (strict.status_code == 451 and codes(strict) == ["location_unknown"] and lenient.status_code == 200
            and country_of(lenient) is None):  # fmt: skip
        return "peer"
    if (
        strict.status_code == 451
        and lenient.status_code == 451
        and all("client_address_invalid" in codes(r) for r in (strict, lenient))
    ):
        return "invalid"
    return detail


OBSERVED: dict[tuple[str, str, str, str], str] = {}


@pytest.mark.parametrize("proxies", list(PROXIES))
def test_client_address_matrix(running: tuple[Server, int], proxies: str) -> None:
    server, port = running
    mismatches, limitations = [], []
    for source in SOURCES:
        for header, headers in HEADERS.items():
            replies = [get(port, f"/{c}/x", proxies, source, headers) for c in ("strict", "lenient", "open")]
            observed = classify(*replies)
            OBSERVED[(server.label, proxies, source, header)] = observed
            want = expected(server, proxies, source, header)
            where = f"from {source}, {header} header"
            if want == LIMITATION:
                if observed == FORGED:
                    limitations.append(f"{where}: geofence used the forged {FORGED}")
                elif observed != "invalid":
                    mismatches.append(f"{where}: expected invalid (or the known limitation), got {observed}")
            elif observed != want:
                mismatches.append(f"{where}: expected {want}, got {observed}")
    assert not mismatches, f"{server.label} x [proxies] {proxies}:\n  " + "\n  ".join(mismatches)
    if limitations:
        pytest.xfail(
            "known limitation (SECURITY.md): a server trusting every peer rewrote the client from a "
            "single forged entry, indistinguishable from a correct rewrite: " + "; ".join(limitations)
        )


# Malformed, withheld or missing values from a trusted proxy: never "use the proxy instead", never allowed on a
# class that restricts anyone, even with unknown_location = "allow".
MALFORMED = {
    "xff": ["unknown", "8.8.8.8:junk", "not-an-address", "", "8.8.8.8, bogus", "_hidden", "01.2.3.4", "[8.8.8.8]x"],
    "forwarded": ["for=unknown", "for=_hidden", 'for="[2001:db8::1"', "for=8.8.8.8;for=1.1.1.1", "by=1.2.3.4",
                  "for=", "for=8.8.8.8:junk", "for=8.8.8.8, for=unknown"],
}  # fmt: skip


@pytest.mark.parametrize("server", [*SERVERS[:4], SERVERS[6]], ids=lambda s: s.label)
def test_malformed_from_trusted_proxy(server: Server, matrix_db: Path) -> None:
    spec = {
        "app": "demo",
        "policies": {name: matrix_policy(matrix_db, PROXIES[name]) for name in MALFORMED},
        "wrap": server.wrap,
    }
    failures = []
    with serve_spec(server.server, spec, **server.options) as port:
        for proxies, values in MALFORMED.items():
            name = "X-Forwarded-For" if proxies == "xff" else "Forwarded"
            for value in values:
                replies = [get(port, f"/{c}/x", proxies, PROXY, {name: value}) for c in ("strict", "lenient", "open")]
                observed = classify(*replies)
                if observed != "invalid":
                    failures.append(f"{name}: {value!r} from the trusted proxy -> {observed}")
    assert not failures, f"{server.label}:\n  " + "\n  ".join(failures)


# uvicorn reads X-Forwarded-For entries leniently (uvicorn.middleware.proxy_headers._parse_host_port): a bracketed
# IPv4 address, and any port int() accepts. Each of these makes uvicorn set scope["client"] to ("8.8.8.8", port)
# when it trusts the sender. geofence must still see that the address came from the header.
UVICORN_SPELLINGS = ["[8.8.8.8]", "[8.8.8.8]:80", "8.8.8.8:123456", "8.8.8.8:1_0", "8.8.8.8: 80", "8.8.8.8:+80",
                     "8.8.8.8:-1"]  # fmt: skip


@pytest.mark.parametrize("server", [SERVERS[0], SERVERS[2]], ids=lambda s: s.label)
def test_uvicorn_lenient_entries_do_not_hide_a_rewrite(server: Server, matrix_db: Path) -> None:
    """Expected: wherever uvicorn rewrote the client from such an entry the request is ``invalid`` (a malformed
    entry from a trusted proxy, or a rewrite geofence cannot verify); where it did not, the peer is used."""
    spec = {"app": "demo", "policies": {name: matrix_policy(matrix_db, p) for name, p in PROXIES.items()}}
    failures = []
    with serve_spec(server.server, spec, **server.options) as port:
        for source in SOURCES:
            want = "invalid" if server.rewrites(source) else "peer"
            for value in UVICORN_SPELLINGS:
                for proxies in PROXIES:
                    headers = {"X-Forwarded-For": value}
                    replies = [get(port, f"/{c}/x", proxies, source, headers) for c in ("strict", "lenient", "open")]
                    observed = classify(*replies)
                    if observed != want:
                        failures.append(f"from {source}, [proxies] {proxies}, X-Forwarded-For: {value!r} -> "
                                        f"{observed}, expected {want}")  # fmt: skip
    assert not failures, f"{server.label}:\n  " + "\n  ".join(failures)


WORDS = {
    "peer": "peer (header ignored)",
    FORGED: "**8.8.8.8** (header used)",
    LIMITATION: "**8.8.8.8 — forged, not detectable**",
    "invalid": "denied `client_address_invalid`",
}


def _word(server: str, proxies: str, source: str, header: str) -> str:
    key = (server, proxies, source, header)
    value = OBSERVED.get(key, "?")
    if value == FORGED and source == STRANGER:  # a stranger's forged header was believed
        server_row = next(s for s in SERVERS if s.label == server)
        if expected(server_row, proxies, source, header) == LIMITATION:
            value = LIMITATION
    return WORDS.get(value, value)


def markdown_table() -> str:
    """Two tables from the observed results: what an untrusted client achieves by forging X-Forwarded-For, and
    what geofence does with what the configured proxy address sends."""
    head = "| server | " + " | ".join(PROXY_LABELS[p] for p in PROXIES) + " |\n|---|" + "---|" * len(PROXIES) + "\n"
    lines = [f"Untrusted client ({STRANGER}) sends `X-Forwarded-For: {FORGED}` (a forged `Forwarded` is ignored in "
             "every cell):\n", head]  # fmt: skip
    for server in SERVERS:
        cells = [_word(server.label, p, STRANGER, "xff") for p in PROXIES]
        lines.append(f"| {server.label} | " + " | ".join(cells) + " |\n")
    lines += [f"\nThe proxy address ({PROXY}) sends no header / `X-Forwarded-For: {FORGED}` / "
              f"`Forwarded: for={FORGED}`:\n\n", head]  # fmt: skip
    short = {"peer (header ignored)": "peer", "**8.8.8.8** (header used)": "8.8.8.8",
             "denied `client_address_invalid`": "invalid"}  # fmt: skip
    for server in SERVERS:
        cells = [" / ".join(short.get(w, w) for w in (_word(server.label, p, PROXY, h) for h in HEADERS))
                 for p in PROXIES]  # fmt: skip
        lines.append(f"| {server.label} | " + " | ".join(cells) + " |\n")
    return "".join(lines)


@atexit.register
def _write_table() -> None:
    out = os.environ.get("GEOFENCE_MATRIX_OUT")
    if out and OBSERVED:
        Path(out).write_text(markdown_table())
