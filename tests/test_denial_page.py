"""The denial page people see: plain words, the facts support needs, a contact, accessible, replaceable."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from html.parser import HTMLParser
from pathlib import Path
from string import Template
from typing import Any

import httpx
import pytest

from geofence import Decision, DenialResponse
from geofence.asgi.middleware import GeofenceMiddleware
from geofence.asgi.responses import ResponseConfig, denial_response
from geofence.policy.decision import Reason
from geofence.policy.load import PolicyError, load_policy, parse_policy
from geofence.policy.response import MAX_TEMPLATE_BYTES, PLACEHOLDERS, default_template

from .conftest import wait_until

pytestmark = pytest.mark.anyio

HTML = "text/html,application/xhtml+xml,*/*;q=0.8"
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def policy(country_db: Path, **response: Any) -> dict[str, Any]:
    return {
        "geoip": {"databases": [str(country_db)]},
        "classes": {
            "EAR99": {"deny_destinations": ["embargoed"], "unknown_location": "allow"},
            "4E091": {"allow_destinations": ["US"], "persons": "us_only"},
        },
        "routes": [{"path": "/weights/**", "class": "4E091"}],
        "response": {"blocked_by": "https://example.com/export-controls", **response},
    }


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def get(middleware: Any, path: str = "/x", peer: str = "5.8.1.1", method: str = "GET", **kw: Any) -> Any:
    transport = httpx.ASGITransport(app=middleware, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as client:
        return await client.request(method, path, **kw)


def denied(status: int, export_class: str = "EAR99", code: str = "destination_denied", detail: str = "") -> Decision:
    reason = Reason(code, detail or f"destination RU is denied for class {export_class}")
    return Decision(False, status, export_class, "enforce", (reason,), "0123456789abcdef", None, None)


def page(decision: Decision, config: ResponseConfig | None = None, request_id: str = "req-1") -> str:
    response = denial_response(decision, config or ResponseConfig(), HTML, request_id=request_id)
    assert dict(response.headers)[b"content-type"] == b"text/html; charset=utf-8"
    return response.body.decode()


class Outline(HTMLParser):
    """The elements, attributes and text of a page, as the accessibility checks need them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, str] = {}
        self._open: list[str] = []
        self.style = ""
        self.terms: list[list[str]] = []
        """The text of each ``dt`` and ``dd``, in order."""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("dt", "dd"):
            self.terms.append([tag, ""])
        if tag not in ("meta", "br", "link", "img"):
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        for tag in self._open:
            self.text[tag] = self.text.get(tag, "") + data
        if self._open and self._open[-1] == "style":
            self.style += data
        if "dt" in self._open or "dd" in self._open:
            self.terms[-1][1] += data

    def details(self) -> dict[str, str]:
        """``dt`` text -> its ``dd`` text, whitespace collapsed."""
        texts = [" ".join(text.split()) for _, text in self.terms]
        return dict(zip(texts[::2], texts[1::2], strict=True))

    def count(self, tag: str) -> int:
        return sum(1 for name, _ in self.tags if name == tag)

    def attrs(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


# --- plain words, the facts, the request id -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "heading", "words"),
    [
        (451, "This page is not available to you", ("export-control rules for your location or identity",)),
        (401, "Please sign in with a verified identity", ("sign in with a verified identity", "try again")),
        (503, "We could not check your access", ("to be safe, the request was refused", "try again in a few minutes")),
    ],
)
def test_each_status_says_what_happened_and_what_to_do_in_plain_words(
    status: int, heading: str, words: tuple[str, ...]
) -> None:
    outline = Outline(page(denied(status)))
    assert outline.text["h1"] == heading
    body = " ".join(outline.text["main"].split())
    for phrase in words:
        assert phrase.lower() in body.lower()
    assert "What you can do" in outline.text["h2"]
    assert "contact the people who run this service" in body  # no contact configured: still someone to ask
    assert "request id" in body


def test_the_page_shows_class_reasons_policy_version_and_request_id_in_public_words_only() -> None:
    error = denied(503, "4E091", code="error", detail="cannot read /srv/geo/GeoIP2-City.mmdb: corrupt")
    outline = Outline(page(error, request_id="abc-123"))
    assert outline.details() == {
        "Request id": "abc-123",
        "Rule class": "4E091",
        "Policy version": "0123456789abcdef",
        "Why": "the request could not be evaluated (error)",
    }
    assert "/srv" not in outline.text["html"] and "mmdb" not in outline.text["html"]


def test_class_names_contacts_and_request_ids_are_escaped() -> None:
    evil = "<script>alert(1)</script>"
    text = page(denied(451, evil, detail=f"destination RU is denied for class {evil}"), ResponseConfig(contact=evil))
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert 'href="mailto:' not in text and "<a href" not in text.split("Blocked by")[0]
    quoted = page(denied(451), ResponseConfig(contact='"><img src=x onerror=alert(1)>@example.com'))
    assert "<img" not in quoted and "onerror=alert(1)&gt;" in quoted


@pytest.mark.parametrize(
    ("contact", "rendered"),
    [
        ("export-help@example.com", '<a href="mailto:export-help@example.com">export-help@example.com</a>'),
        ("https://example.com/contact?a=1&b=2", '<a href="https://example.com/contact?a=1&amp;b=2">'),
        ("Export Office, +1 555 0100", "contact Export Office, +1 555 0100."),
        ("javascript:alert(1)", "contact javascript:alert(1)."),  # not a link: only http(s) and email are
        ("ftp://example.com/x", "contact ftp://example.com/x."),
    ],
)
def test_contact_is_a_mailto_link_a_web_link_or_text(contact: str, rendered: str) -> None:
    text = page(denied(451), ResponseConfig(contact=contact))
    assert rendered in text
    if "<a" not in rendered:
        assert text.count("<a ") == 0
    response = denial_response(denied(451), ResponseConfig(contact=contact), "application/json", request_id="r")
    assert json.loads(response.body)["contact"] == contact


def test_json_carries_the_request_id_and_the_contact_only_when_set() -> None:
    plain = json.loads(denial_response(denied(451), ResponseConfig(), "", request_id="r-1").body)
    assert plain["request_id"] == "r-1" and "contact" not in plain
    assert list(plain) == ["type", "title", "status", "detail", "reasons", "export_class", "policy_version",
                           "request_id"]  # fmt: skip


# --- through the middleware: the id the log line and the audit record carry -------------------------------------


async def test_the_request_id_on_the_page_and_in_the_json_is_the_logged_and_audited_one(
    country_db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trail = tmp_path / "audit.jsonl"
    config = {**policy(country_db), "audit": {"path": str(trail)}, "proxies": {"trusted": ["10.0.0.0/8"]}}
    middleware = GeofenceMiddleware(app, config=config)
    via_proxy = {"accept": HTML, "x-forwarded-for": "5.8.1.1"}
    try:
        with caplog.at_level(logging.INFO, logger="geofence.decision"):
            browser = await get(middleware, headers={"accept": HTML})
            api = await get(middleware)
            proxied = await get(middleware, peer="10.0.0.1", headers={**via_proxy, "x-request-id": "edge-42"})
            hostile = await get(middleware, peer="10.0.0.1", headers={**via_proxy, "x-request-id": "<b>x</b>"})
    finally:
        middleware.close()  # flushes the audit trail
    shown = [re.search(r"<dt>Request id</dt><dd><code>([^<]*)</code>", r.text).group(1)  # type: ignore[union-attr]
             for r in (browser, proxied, hostile)]  # fmt: skip
    shown.insert(1, api.json()["request_id"])
    audited = [json.loads(line)["request_id"] for line in trail.read_text().splitlines()]
    records = [r.getMessage() for r in caplog.records if r.name == "geofence.decision"]
    logged = [re.search(r"request_id=(\S+)$", r).group(1) for r in records]  # type: ignore[union-attr]
    assert shown == audited == logged
    assert len(set(shown)) == 4 and shown[2] == "edge-42" and "<" not in shown[3]


async def test_only_a_trusted_proxys_request_id_is_taken_and_its_own_comes_last(country_db: Path) -> None:
    """A client's own X-Request-ID would let it give its records another request's id: only a configured
    proxy's is taken, and of several the last (a proxy that adds its own puts it after the client's)."""
    config = {**policy(country_db), "proxies": {"trusted": ["10.0.0.0/8"]}}
    middleware = GeofenceMiddleware(app, config=config)
    direct = await get(middleware, headers={"x-request-id": "req-42"})
    assert direct.status_code == 451 and re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", direct.json()["request_id"])
    forwarded = [("x-forwarded-for", "5.8.1.1"), ("x-request-id", "forged-by-client"), ("x-request-id", "edge-7")]
    proxied = await get(middleware, peer="10.0.0.1", headers=forwarded)
    assert proxied.status_code == 451 and proxied.json()["request_id"] == "edge-7"
    untrusted = await get(middleware, peer="5.8.9.9", headers=forwarded)  # not a configured proxy
    assert untrusted.json()["request_id"] not in ("edge-7", "forged-by-client")
    middleware.close()


@pytest.mark.parametrize(("peer", "given", "kept"), [("10.0.0.5", "proxy-id-7", True), ("8.8.8.8", "victim-42", False)])
async def test_the_sender_of_an_id_is_the_peer_geofence_saw_even_if_the_app_rewrites_the_client(
    country_db: Path, tmp_path: Path, peer: str, given: str, kept: bool
) -> None:
    """The audit writer fixes an allowed record's id after the app ran; an app (or an inner proxy-headers
    middleware) that rewrote ``scope["client"]`` by then changes nothing: the proxy's id is kept, a client's
    is not taken."""
    trail = tmp_path / "audit.jsonl"
    config = {**policy(country_db), "proxies": {"trusted": ["10.0.0.0/8"]}, "audit": {"path": str(trail)}}
    config["classes"]["US"] = {"allow_destinations": ["US"]}
    config["routes"] = [{"path": "/us", "class": "US"}]

    async def rewriting(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["client"] = ("10.0.0.9" if peer == "8.8.8.8" else "8.8.8.8", 1)  # now trusted, or now not
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = GeofenceMiddleware(rewriting, config=config)
    headers = {"x-forwarded-for": "8.8.8.8", "x-request-id": given}
    assert (await get(middleware, "/us", peer=peer, headers=headers)).status_code == 200
    middleware.close()
    (record,) = [json.loads(line) for line in trail.read_text().splitlines()]
    assert (record["request_id"] == given) is kept


async def test_json_log_format_carries_the_same_id(country_db: Path, caplog: pytest.LogCaptureFixture) -> None:
    middleware = GeofenceMiddleware(app, config={**policy(country_db), "logging": {"format": "json"}})
    with caplog.at_level(logging.INFO, logger="geofence.decision"):
        response = await get(middleware)
    (record,) = [r for r in caplog.records if r.name == "geofence.decision"]
    assert json.loads(record.getMessage())["request_id"] == response.json()["request_id"]


async def test_html_denials_get_a_strict_csp_and_json_ones_none(country_db: Path) -> None:
    middleware = GeofenceMiddleware(app, config=policy(country_db, contact="help@example.com"))
    browser = await get(middleware, headers={"accept": HTML})
    assert browser.status_code == 451 and browser.headers["content-security-policy"] == CSP
    assert 'href="mailto:help@example.com"' in browser.text
    assert "content-security-policy" not in (await get(middleware)).headers
    allowed = await get(middleware, peer="8.8.8.8", headers={"accept": HTML})
    assert allowed.status_code == 200 and "content-security-policy" not in allowed.headers


async def test_head_denial_still_has_no_body(country_db: Path) -> None:
    middleware = GeofenceMiddleware(app, config=policy(country_db))
    response = await get(middleware, method="HEAD", headers={"accept": HTML})
    assert response.status_code == 451 and response.content == b""
    assert response.headers["content-type"].startswith("text/html")


async def test_the_deny_response_hook_still_comes_first(country_db: Path) -> None:
    def hook(decision: Decision, scope: dict[str, Any]) -> DenialResponse | None:
        if scope["path"] == "/mine":
            return DenialResponse(418, ((b"content-type", b"text/plain"),), b"custom")
        return None

    middleware = GeofenceMiddleware(app, config=policy(country_db), deny_response=hook)
    custom = await get(middleware, "/mine", headers={"accept": HTML})
    assert (custom.status_code, custom.text) == (418, "custom")
    standard = await get(middleware, "/other", headers={"accept": HTML})
    assert standard.status_code == 451 and "<h1>This page is not available to you</h1>" in standard.text


async def test_a_template_failing_at_request_time_falls_back_to_the_bundled_page(country_db: Path) -> None:
    plain = parse_policy(policy(country_db))
    broken = dataclasses.replace(
        plain, response=dataclasses.replace(plain.response, template=Template("$not_a_placeholder"))
    )
    middleware = GeofenceMiddleware(app, config=broken)
    response = await get(middleware, headers={"accept": HTML})
    assert response.status_code == 451 and "<h1>This page is not available to you</h1>" in response.text


async def test_401_page_through_the_middleware(country_db: Path) -> None:
    middleware = GeofenceMiddleware(app, config=policy(country_db, contact="https://example.com/help"))
    response = await get(middleware, "/weights/a", peer="8.8.8.8", headers={"accept": HTML})
    assert response.status_code == 401 and "Please sign in with a verified identity" in response.text
    assert '<a href="https://example.com/help">' in response.text


# --- accessibility, no scripts, no external resources ----------------------------------------------------------


@pytest.mark.parametrize("status", [451, 401, 503])
def test_the_default_page_is_accessible_and_self_contained(status: int) -> None:
    text = page(denied(status), ResponseConfig(contact="help@example.com", blocked_by="https://example.com/b"))
    outline = Outline(text)
    assert outline.attrs("html") == [{"lang": "en"}]
    assert any(a.get("name") == "viewport" and "width=device-width" in (a.get("content") or "")
               for a in outline.attrs("meta"))  # fmt: skip
    title = json.loads(denial_response(denied(status), ResponseConfig()).body)["title"]
    assert outline.text["title"] == f"{status} {title}"
    assert outline.count("h1") == 1 and outline.count("main") == 1
    assert outline.count("h2") >= 1 and outline.count("h3") == 0  # no skipped heading levels
    assert "<script" not in text.lower() and "javascript:" not in text.lower()
    assert outline.count("link") == outline.count("img") == outline.count("iframe") == 0
    assert not re.search(r"\bsrc\s*=|@import|url\(", text)  # nothing fetched: no images, fonts or CSS
    assert len(text.encode()) < 4096


def test_the_bundled_template_has_no_script_at_all() -> None:
    assert "<script" not in default_template().template.lower()
    assert set(default_template().get_identifiers()) <= set(PLACEHOLDERS)


def _luminance(hex_colour: str) -> float:
    digits = hex_colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = ((c / 12.92) if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """The WCAG 2 contrast ratio of two sRGB colours."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_helper_matches_known_ratios() -> None:
    assert round(contrast("#000", "#fff"), 1) == 21.0
    assert round(contrast("#777", "#fff"), 2) == 4.48  # the classic just-fails-AA grey


def test_every_text_colour_has_aa_contrast_on_every_background() -> None:
    style = Outline(page(denied(451))).style
    colours = re.findall(r"(?<![-\w])color:\s*(#[0-9a-fA-F]{3,6})\b", style)
    backgrounds = re.findall(r"background(?:-color)?:\s*(#[0-9a-fA-F]{3,6})\b", style)
    assert len(colours) >= 3 and len(backgrounds) >= 2, style
    assert not re.search(r"(?<![-\w])color:\s*(?!#)", style)  # only hex colours, so every one is checked here
    ratios = {(fg, bg): contrast(fg, bg) for fg in colours for bg in backgrounds}
    assert min(ratios.values()) >= 4.5, ratios


# --- [response] template and contact in the policy -----------------------------------------------------------


def _policy_file(tmp_path: Path, country_db: Path, response: str, proxies: str = "") -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(
        f'[geoip]\ndatabases = ["{country_db}"]\n{proxies}[classes.EAR99]\ndeny_destinations = ["embargoed"]\n'
        f"[response]\n{response}\n"
    )
    return path


async def test_a_template_next_to_the_policy_replaces_the_page_with_every_placeholder(
    tmp_path: Path, country_db: Path
) -> None:
    (tmp_path / "pages").mkdir()
    body = "\n".join(f"{name}=[${name}]" for name in PLACEHOLDERS) + "\nprice: $$5\n"
    (tmp_path / "pages" / "denial.html").write_text(body, encoding="utf-8")
    response = (
        'template = "pages/denial.html"\ncontact = "<Export desk>"\nblocked_by = "https://example.com/export-controls"'
    )
    path = _policy_file(tmp_path, country_db, response, proxies='[proxies]\ntrusted = ["10.0.0.0/8"]\n')
    middleware = GeofenceMiddleware(app, config=path)
    headers = {"accept": HTML, "x-request-id": "req-9", "x-forwarded-for": "5.8.1.1"}
    response = await get(middleware, peer="10.0.0.1", headers=headers)
    values = dict(re.findall(r"^(\w+)=\[(.*)\]$", response.text, re.M))
    assert set(values) == set(PLACEHOLDERS)
    assert values["status"] == "451" and values["title"] == "Unavailable For Legal Reasons"
    assert values["heading"] == "This page is not available to you"
    assert values["request_id"] == "req-9" and values["export_class"] == "EAR99"
    assert values["policy_version"] == middleware.policy.version
    assert values["reasons"] == "<li>destination RU is denied for class EAR99 (<code>destination_denied</code>)</li>"
    assert values["contact"] == values["contact_html"] == "&lt;Export desk&gt;"
    assert "contact &lt;Export desk&gt;." in values["next_steps"]
    assert values["blocked_by"] == "https://example.com/export-controls"
    assert values["blocked_by_html"] == (
        '<p>Blocked by <a href="https://example.com/export-controls">https://example.com/export-controls</a>.</p>'
    )
    assert "price: $5" in response.text
    assert response.headers["content-security-policy"] == CSP
    assert (await get(middleware)).json()["contact"] == "<Export desk>"


async def test_an_edited_template_is_picked_up_by_the_watcher_and_a_broken_one_keeps_the_old(
    tmp_path: Path, country_db: Path
) -> None:
    page_file = tmp_path / "denial.html"
    page_file.write_text("<p>first $request_id</p>", encoding="utf-8")
    config = _policy_file(tmp_path, country_db, 'template = "denial.html"')
    middleware = GeofenceMiddleware(app, config=config, reload_interval=0.05)
    try:
        assert (await get(middleware, headers={"accept": HTML})).text.startswith("<p>first ")
        page_file.write_text("<p>second, a longer page $request_id</p>", encoding="utf-8")
        assert wait_until(lambda: middleware._live.reloads["ok"] == 1)  # the watcher saw the page change
        assert (await get(middleware, headers={"accept": HTML})).text.startswith("<p>second")
        page_file.write_text("<p>$nope and more</p>", encoding="utf-8")
        assert wait_until(lambda: middleware._live.reloads["refused"] == 1)
        assert (await get(middleware, headers={"accept": HTML})).text.startswith("<p>second")
    finally:
        middleware.close()


def test_a_copy_of_the_bundled_template_renders_the_same_page(tmp_path: Path, country_db: Path) -> None:
    (tmp_path / "denial.html").write_text(default_template().template, encoding="utf-8")
    loaded = load_policy(_policy_file(tmp_path, country_db, 'template = "denial.html"'))
    template = loaded.response.template
    assert template is not None and template.template == default_template().template
    decision = denied(451)
    assert page(decision, ResponseConfig(template=template)) == page(decision)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"<p>$nope</p>", "unknown placeholder $nope"),
        (b"<p>$reqest_id</p>", "did you mean $request_id?"),
        (b"<p>costs $5</p>", "line 1: '$' must start a placeholder"),
        (b"\n\n<p>\xff\xfe</p>", "not UTF-8"),
        (b"x" * (MAX_TEMPLATE_BYTES + 1), "larger than 64 KiB"),
    ],
    ids=["missing", "unknown", "misspelt", "bare-dollar", "not-utf8", "too-big"],
)
def test_template_problems_fail_the_policy_load(
    tmp_path: Path, country_db: Path, content: bytes | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "page.html").write_bytes(content)
    with pytest.raises(PolicyError) as caught:
        load_policy(_policy_file(tmp_path, country_db, 'template = "page.html"'))
    (problem,) = caught.value.problems
    assert problem.path == "response.template" and message in problem.message, problem
    assert str(tmp_path / "page.html") in problem.message


def test_a_broken_template_refuses_to_start_the_middleware(tmp_path: Path, country_db: Path) -> None:
    (tmp_path / "page.html").write_text("$nope")
    middleware = GeofenceMiddleware(app, config=_policy_file(tmp_path, country_db, 'template = "page.html"'))
    assert middleware.startup_error is not None and "unknown placeholder $nope" in middleware.startup_error


@pytest.mark.parametrize(
    ("contact", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * 201, "at most 200 characters"),
        ("help@example.com\nBcc: x@evil.example", "no control characters"),
        ("help\x00@example.com", "no control characters"),
        ("help\u202e@example.com", "no control characters"),  # a bidi override reorders what people read
        (42, "must be a string"),
    ],
)
def test_contact_validation(country_db: Path, contact: Any, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy(country_db, contact=contact))
    (problem,) = caught.value.problems
    assert problem.path == "response.contact" and message in problem.message


def test_contact_and_template_do_not_change_the_policy_version(tmp_path: Path, country_db: Path) -> None:
    (tmp_path / "page.html").write_text("<p>$request_id</p>")
    plain = parse_policy(policy(country_db))
    dressed = parse_policy(policy(country_db, contact="help@example.com", template="page.html"), base_dir=tmp_path)
    assert dressed.response.contact == "help@example.com" and dressed.response.template is not None
    assert plain.version == dressed.version  # no decision changes: audit records stay comparable


def test_unknown_response_keys_are_still_reported(country_db: Path) -> None:
    with pytest.raises(PolicyError, match=r"response.contacts: unknown key; did you mean 'contact'\?"):
        parse_policy(policy(country_db, contacts="x"))
