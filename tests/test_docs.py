"""Every example in README.md and data/README.md runs as pasted (see ``docs_blocks.py`` for the rules)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from geofence.cli.main import _parser
from geofence.policy.load import parse_policy
from geofence.resources import data_path

from .conftest import wait_until
from .docs_blocks import (
    DIRECTIVES,
    LANGUAGES,
    Block,
    all_blocks,
    console_commands,
    logical_lines,
    output_matches,
    shows,
)

BLOCKS = all_blocks()
BIN = Path(sys.executable).parent
EXAMPLE_POLICY = data_path("example-policy.toml")


def blocks(language: str, *, directive: str | None = None) -> list[Any]:
    chosen = [
        b
        for b in BLOCKS
        if b.language == language
        and "skip" not in b.directives
        and (directive in b.directives if directive else not set(b.directives) - {"setup", "requests"})
    ]
    return [pytest.param(b, id=b.id) for b in chosen]


def environment(home: Path) -> dict[str, str]:
    """This venv's ``geofence`` first on PATH, a scratch HOME (demo keys), no colour or pager surprises."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOFENCE_", "GEOIPUPDATE_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A working folder with ``geofence.toml``: the bundled example policy, as the README's examples assume."""
    shutil.copy(EXAMPLE_POLICY, tmp_path / "geofence.toml")
    (tmp_path / "home").mkdir()
    return tmp_path


# -- every block is checked or explicitly marked ----------------------------------------------------------------


def test_every_block_is_checked_or_marked() -> None:
    problems = []
    for block in BLOCKS:
        if block.language not in LANGUAGES:
            problems.append(f"{block.id}: no checker for {block.language or 'a block without a language'}")
        unknown = set(block.directives) - set(DIRECTIVES)
        if unknown:
            problems.append(f"{block.id}: unknown directive {sorted(unknown)}")
        if "skip" in block.directives and not block.directives["skip"]:
            problems.append(f"{block.id}: skip needs a reason")
        if block.language == "python" and "fragment" in block.directives:
            problems.append(f"{block.id}: a python example runs as pasted: no fragments")
        if block.language in ("bash", "ini", "text") and not block.directives:
            problems.append(f"{block.id}: a {block.language} block must say how it is checked (argv, demo, skip, ...)")
    assert not problems, "\n".join(problems)
    assert len(BLOCKS) > 30  # the extraction itself still finds the examples


def test_output_matching_is_loose_only_where_it_says() -> None:
    assert output_matches(["path .../data/x.mmdb", "..."], "path /a/b/data/x.mmdb\nmore\nlines\n")
    assert output_matches(["policy version 712404caa76f01d4"], "policy version debb98408593016b")
    assert output_matches(["age days   174"], "age days   181")
    assert not output_matches(["routes[2] POST"], "routes[4] POST")
    assert not output_matches(["one", "two"], "two\none")  # order matters
    assert not output_matches(["one"], "one\ntwo")  # nothing unshown, without a "..." line
    assert not output_matches(["status 401"], "status 451")
    commands = console_commands("$ a   # exit 1\nout\n\n$ b\n")
    assert [(c.command, c.expected, c.status) for c in commands] == [("a   # exit 1", ["out"], 1), ("b", [], 0)]


# -- console: run, compare ----------------------------------------------------------------------------------------


def _demo_policy(**tables: Any) -> dict[str, Any]:
    """The example policy, trusting 127.0.0.1 as a proxy (``X-Forwarded-For`` picks the client), plus *tables*."""
    policy = tomllib.loads(EXAMPLE_POLICY.read_text())
    policy["proxies"] = {"trusted": ["127.0.0.1/32"], "header": "x-forwarded-for"}
    policy.update(tables)
    return policy


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _middleware(policy: dict[str, Any]) -> Any:
    from geofence import GeofenceMiddleware

    return GeofenceMiddleware(_ok, config=policy)


def _request(middleware: Any, path: str, client: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Any:
    """One GET through *middleware* (in process, real ASGI messages) from *client* via the trusted proxy:
    (status, headers, body)."""
    import asyncio

    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode("latin-1"), "root_path": "",
             "query_string": b"", "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"api"), (b"x-forwarded-for", client.encode()), *headers]}  # fmt: skip
    asyncio.run(middleware(scope, receive, send))
    return sent[0]["status"], sent[0]["headers"], sent[1]["body"]


def _setup_replay(folder: Path) -> None:
    """``audit.jsonl`` with four allowed EAR99 requests (US, GB, DE, JP), written by the real middleware, and
    ``new-policy.toml``: the example policy with GB added to EAR99's denied destinations."""
    middleware = _middleware(_demo_policy(audit={"path": str(folder / "audit.jsonl")}))
    for address in ("8.8.8.8", "81.2.69.142", "2a00:1450:4001:81b::200e", "133.11.0.1"):
        assert _request(middleware, "/v1/models", address)[0] == 200
    middleware.close()
    new = EXAMPLE_POLICY.read_text().replace(
        'deny_destinations = ["embargoed"]       # CU', 'deny_destinations = ["embargoed", "GB"]       # CU', 1
    )
    assert new != EXAMPLE_POLICY.read_text()
    (folder / "new-policy.toml").write_text(new)


def _setup_invalid_policy(folder: Path) -> None:
    """``geofence.toml`` with the three mistakes the README's ``policy validate`` example shows."""
    text = EXAMPLE_POLICY.read_text()
    text = text.replace('mode = "enforce" ', 'mode = "enforse" ', 1)
    text = text.replace('deny_destinations = ["embargoed"]       # CU', 'deny_destinations = ["IRN"]       # CU', 1)
    text = text.replace('unknown_location = "allow"', 'unknown_location = "allow"\nanonymisers = "deny"', 1)
    (folder / "geofence.toml").write_text(text)


SETUPS: dict[str, Callable[[Path], None]] = {"replay": _setup_replay, "invalid-policy": _setup_invalid_policy}


@pytest.mark.parametrize("block", blocks("console"))
def test_console_example(block: Block, scratch: Path) -> None:
    setup = block.directives.get("setup")
    if setup is not None:
        SETUPS[setup](scratch)
    for command in console_commands(block.text):
        done = subprocess.run(
            ["bash", "-c", command.command], cwd=scratch, env=environment(scratch / "home"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
        )  # fmt: skip
        where = f"{block.id}: $ {command.command}"
        assert done.returncode == command.status, f"{where}\nexit {done.returncode}\n{done.stdout}"
        missing = [claim for claim in command.claims if not shows(done.stdout, claim)]
        assert not missing, f"{where}\nthe comment says {missing}, the output does not:\n{done.stdout}"
        if command.expected:
            shown = "\n".join(command.expected)
            assert output_matches(command.expected, done.stdout), (
                f"{where}\nREADME shows:\n{shown}\n\ngot:\n{done.stdout}"
            )


# -- python: run as a script --------------------------------------------------------------------------------------


def _script(block: Block) -> str:
    if "continues" not in block.directives:
        return block.text
    earlier = [b for b in BLOCKS if b.document == block.document and b.language == "python" and b.line < block.line]
    assert earlier, f"{block.id}: continues, but no python block comes before it"
    return _script(earlier[-1]) + block.text


_REQUESTS = """
import asyncio as _asyncio, httpx as _httpx

async def _check(checks):
    for method, path, client, status in checks:
        transport = _httpx.ASGITransport(app=app, client=(client, 40000))
        async with _httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            got = await http.request(method, path)
        assert got.status_code == status, f"{method} {path} from {client}: {got.status_code}, not {status}: {got.text}"

_asyncio.run(_check(%r))
"""


def _requests(text: str) -> list[tuple[str, str, str, int]]:
    """``GET /v1/weights from 8.8.8.8 -> 401, ...`` -> [("GET", "/v1/weights", "8.8.8.8", 401), ...]."""
    checks = []
    for item in text.split(","):
        method, path, _, client, _, status = item.split()
        checks.append((method, path, client, int(status)))
    return checks


@pytest.mark.parametrize("block", blocks("python") + blocks("python", directive="continues"))
def test_python_example(block: Block, scratch: Path) -> None:
    script = _script(block)
    if "requests" in block.directives:
        script += _REQUESTS % (_requests(block.directives["requests"]),)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=scratch, env=environment(scratch / "home"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"{block.id}\n{done.stdout}\n{done.stderr}"


# -- toml: a policy fragment, or a whole policy ---------------------------------------------------------------------


def _merge(base: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in fragment.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value  # fmt: skip
    return merged


def _stand_in_databases(policy: dict[str, Any], city: Path, anonymous: Path) -> None:
    """Production paths (``/var/lib/GeoIP/...``) are replaced by test databases of the same kind."""
    geoip = policy.get("geoip", {})
    if "databases" in geoip:
        geoip["databases"] = [
            path if Path(path).exists() else str(anonymous if "Anonymous" in path else city)
            for path in geoip["databases"]
        ]


@pytest.mark.parametrize("block", blocks("toml") + blocks("toml", directive="policy"))
def test_toml_example_loads(block: Block, scratch: Path, city_db: Path, anonymous_db: Path) -> None:
    fragment = tomllib.loads(block.text)
    base = {} if "policy" in block.directives else tomllib.loads(EXAMPLE_POLICY.read_text())
    policy = _merge(base, fragment)
    _stand_in_databases(policy, city_db, anonymous_db)
    reference = policy.get("reference", {}).get("file")
    if reference:  # the README's own replacement file: a copy of the bundled reference data
        shutil.copy(data_path("country-groups.toml"), scratch / reference)
    parse_policy(policy, source=block.id, base_dir=scratch)


# -- json and text: examples of geofence's own output -------------------------------------------------------------


def _decision_log(folder: Path, log_format: str, path: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> str:
    """The decision log line for a request from Russia (5.255.255.5) on an EAR99 route."""
    import logging

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("geofence.decision")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        middleware = _middleware(_demo_policy(logging={"format": log_format}))
        assert _request(middleware, path, "5.255.255.5", headers)[0] == 451
        middleware.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert len(lines) == 1, lines
    return lines[0]


def _health(folder: Path) -> str:
    """The health report after a refused reload (the policy file broken while the service runs)."""
    from geofence import GeofenceMiddleware

    policy = folder / "geofence.toml"
    tables = '\n[health]\npath = "/_geofence/health"\n[audit]\npath = "audit.jsonl"\n'
    policy.write_text(EXAMPLE_POLICY.read_text() + tables)
    middleware = GeofenceMiddleware(_ok, config=str(policy), reload_interval=3600)
    policy.write_text("[defaults\n")
    middleware.reload()
    status, _, body = _request(middleware, "/_geofence/health", "8.8.8.8")
    middleware.close()
    assert status == 200
    return str(body.decode())


def _denial(folder: Path) -> str:
    """The problem JSON for a request from Russia on an EAR99 route (the example policy names a contact)."""
    middleware = _middleware(_demo_policy())
    status, _, body = _request(middleware, "/anything", "5.255.255.5")
    middleware.close()
    assert status == 451
    return str(body.decode())


def _check_json(folder: Path) -> str:
    command = ["geofence", "check", "--ip", "8.8.8.8", "--class", "4E091", "--claims", '{"nationalities": ["DEU"]}']
    done = subprocess.run([*command, "--json"], env=environment(folder), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    return done.stdout


OUTPUTS: dict[str, Callable[[Path], str]] = {
    "check-json": _check_json,
    "denial": _denial,
    "log-text": lambda folder: _decision_log(folder, "text", "/x\r\ndeny GET /forged"),
    "log-json": lambda folder: _decision_log(folder, "json", "/x", ((b"x-request-id", b"req-42"),)),
    "health": _health,
}
SHAPE_ONLY = frozenset({"health"})  # the example shows another moment of a service's life: keys are compared
# Values an example may show differently from a run: they depend on the moment, the machine or the policy file.
VOLATILE = frozenset({"policy", "policy_version", "request_id", "time", "build_date", "age_days"})


def _same(shown: Any, actual: Any, where: str = "", values: bool = True) -> list[str]:
    """Where *shown* differs from *actual*: every key the same, every value too (with *values*) unless VOLATILE
    or elided."""
    if shown == {} or shown == []:  # {...} / [...]: elided in the example
        return []
    if isinstance(shown, dict) and isinstance(actual, dict):
        problems = [f"{where}: keys {sorted(shown)} shown, {sorted(actual)} given"] if shown.keys() != actual.keys() \
            else []  # fmt: skip
        for key in shown.keys() & actual.keys():
            if key not in VOLATILE:
                problems += _same(shown[key], actual[key], f"{where}.{key}", values)
        return problems
    if isinstance(shown, list) and isinstance(actual, list):
        if len(shown) != len(actual) and (values or not shown or not actual):
            return [f"{where}: {len(shown)} items shown, {len(actual)} given"]
        return [
            p for i, (s, a) in enumerate(zip(shown, actual, strict=False)) for p in _same(s, a, f"{where}[{i}]", values)
        ]
    if not values and (shown is None) == (actual is None):
        return []
    if shown == actual or (isinstance(shown, str) and "..." in shown):
        return []
    return [f"{where}: {shown!r} != {actual!r}"]


def _json_text(block: Block) -> str:
    return block.text.replace("{...}", "{}").replace("[...]", "[]")


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in BLOCKS if b.language == "json"])
def test_json_example_parses(block: Block) -> None:
    json.loads(_json_text(block))


@pytest.mark.parametrize("block", blocks("json", directive="output") + blocks("text", directive="output"))
def test_output_example_is_what_geofence_writes(block: Block, scratch: Path) -> None:
    actual = OUTPUTS[block.directives["output"]](scratch)
    if block.language == "text":
        assert output_matches(block.text.splitlines(), actual), f"{block.id}\nshown:\n{block.text}\ngot:\n{actual}"
        return
    output = block.directives["output"]
    problems = _same(json.loads(_json_text(block)), json.loads(actual), values=output not in SHAPE_ONLY)
    assert not problems, f"{block.id}\n" + "\n".join(problems) + f"\ngot: {actual}"


# -- argv: geofence commands parse with the CLI's own parser ---------------------------------------------------------


def geofence_commands(text: str, console: bool) -> Iterator[list[str]]:
    for line in logical_lines(text):
        if console and not line.startswith("$ "):
            continue  # output
        words = shlex.split(line.removeprefix("$ "), comments=True)
        for index, word in enumerate(words):
            if os.path.basename(word) == "geofence":
                argv = words[index + 1 :]
                cut = [i for i, w in enumerate(argv) if w in (">", ">>", "<", "|", "&&", "||", ";", "&")]
                yield argv[: cut[0]] if cut else argv
                break


@pytest.mark.parametrize("block", [p for lang in ("bash", "ini", "console") for p in blocks(lang, directive="argv")])
def test_geofence_commands_parse(block: Block) -> None:
    commands = list(geofence_commands(block.text, block.language == "console"))
    assert commands, f"{block.id}: marked argv, but has no geofence command"
    for argv in commands:
        try:
            _parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{block.id}: geofence {shlex.join(argv)} does not parse (exit {exc.code})")


# -- demo: curl against a real `geofence demo` --------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, dict[str, str]]]:
    home = tmp_path_factory.mktemp("demo-home")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = environment(home)
    server = subprocess.Popen(
        [str(BIN / "geofence"), "demo", "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def listening() -> bool:
        with socket.socket() as client:
            return client.connect_ex(("127.0.0.1", port)) == 0

    try:
        assert wait_until(listening, timeout=20), "geofence demo did not start"
        yield port, env
    finally:
        server.terminate()
        server.wait(timeout=10)


def _expectations(comment: str) -> tuple[str, list[str]]:
    """``# 451 destination_denied (Russia)`` -> ("451", ["destination_denied"])."""
    words = comment.split("(")[0].replace(",", " ").split()
    return words[0], words[1:]


@pytest.mark.parametrize("block", blocks("bash", directive="demo"))
def test_demo_requests(block: Block, demo_server: tuple[int, dict[str, str]]) -> None:
    port, env = demo_server
    checked = 0
    for line in logical_lines(block.text):
        if not line.startswith("curl "):
            assert line.startswith("geofence demo"), f"{block.id}: only curl commands and the server: {line!r}"
            continue
        command, _, comment = line.rpartition("#")
        status, words = _expectations(comment)
        command = command.replace("localhost:8000", f"127.0.0.1:{port}") + " -w '\\n%{http_code}'"
        done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
        body, _, got = done.stdout.rpartition("\n")
        assert got == status, f"{block.id}: {line}\ngot {got}: {body}"
        for word in words:
            assert shows(body, word), f"{block.id}: {line}\n{word!r} not in {body}"
        checked += 1
    assert checked, f"{block.id}: marked demo, but has no curl command"
