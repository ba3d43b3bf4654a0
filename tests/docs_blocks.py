"""The fenced blocks of the project's Markdown files, and how each is checked (used by ``test_docs.py``).

A block is checked by its language unless the line right above its fence says otherwise with a marker,
``<!-- doc: DIRECTIVE; DIRECTIVE -->``:

* ``console`` — every ``$ command`` runs (in a scratch folder, with this venv's ``geofence`` on ``PATH``) and
  its output must match the lines under it. ``...`` in a line matches any text, a line of only ``...`` any
  number of lines; policy versions and a database's age match loosely. The exit status must be 0, or the
  ``# exit N`` that the command's comment states; statuses and reason codes after it (``# exit 1: 451
  not_us_person``) must appear in the output. A command with no lines under it is checked by those alone.
* ``python`` — runs as a script in a scratch folder holding ``geofence.toml`` (the bundled example policy);
  with ``requests=GET /path from IP -> STATUS, ...`` each request is then sent to the ``app`` it built (in
  process, real ASGI, from that client address) and must get that status.
* ``toml`` — a policy fragment: merged over the example policy, it must load with ``parse_policy``.
* ``json`` — must parse.
* ``bash``, ``ini``, ``text`` — must carry a marker.

Directives:

* ``fragment`` — a JSON block whose syntax alone is checked; ``{...}`` and ``[...]`` stand for elided JSON
  (a python example always runs as pasted).
* ``continues`` — a python block that runs after the python block before it.
* ``requests=GET /path from IP -> STATUS, ...`` — see ``python`` above.
* ``policy`` — a whole policy file, not a fragment.
* ``argv`` — every ``geofence`` command in the block must parse with the CLI's own parser; the other commands
  are not run, and output shown under a command is not compared: the marker says so.
* ``demo`` — every ``curl`` runs against a real ``geofence demo`` server and must get the status, and the
  whole reason codes, that its ``# comment`` states.
* ``setup=NAME`` — files a console block's commands need, made by the test.
* ``output=NAME`` — a json or text block showing what geofence writes: the test makes geofence write it and
  compares (text as console output is compared; JSON key by key and item by item, with values that depend on
  the moment or the machine loosened).
* ``skip: WHY`` — not run; the reason is required.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = (
    "README.md",
    "data/README.md",
    "SECURITY.md",
    "benchmarks/README.md",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
)

_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!-- doc: (.+?) -->$")
DIRECTIVES = ("fragment", "continues", "policy", "argv", "demo", "setup", "output", "requests", "skip")
LANGUAGES = ("console", "python", "toml", "json", "bash", "ini", "text")


@dataclass(frozen=True)
class Block:
    document: str
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    directives: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}:{self.language}"


def read_blocks(document: str) -> list[Block]:
    """Every fenced block of *document* (relative to the repository root), in order."""
    lines = (ROOT / document).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{document}:{index + 1}: the block is never closed")
        marker = _MARKER.match(lines[index - 1]) if index else None
        directives = parse_directives(marker.group(1)) if marker else {}
        body = "\n".join(lines[index + 1 : end]) + "\n"
        found.append(Block(document, index + 1, opening.group(1), body, directives))
        index = end + 1
    return found


def parse_directives(text: str) -> dict[str, str]:
    """``"setup=replay; skip: why"`` -> ``{"setup": "replay", "skip": "why"}``; unknown names are kept (and
    refused by the test that every block is checked)."""
    directives: dict[str, str] = {}
    text, skip, why = text.partition("skip:")  # a reason may hold anything, and always comes last
    if skip:
        directives["skip"] = why.strip()
    for part in filter(str.strip, text.split(";")):
        name, _, value = part.strip().partition("=" if "=" in part.split(":")[0] else ":")
        directives[name.strip()] = value.strip()
    return directives


def all_blocks() -> list[Block]:
    return [block for document in DOCUMENTS for block in read_blocks(document)]


def logical_lines(text: str) -> list[str]:
    """Shell lines with ``\\`` continuations joined."""
    joined: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    if pending:
        joined.append(pending)
    return joined


@dataclass(frozen=True)
class ConsoleCommand:
    command: str
    expected: list[str]  # the lines shown under the command
    status: int
    claims: list[str]  # statuses and reason codes the comment says the output shows: "# exit 1: 451 not_us_person"


_EXIT = re.compile(r"#\s*exit (\d+)(.*)")
_CLAIM = re.compile(r"\b\d{3}\b|\b[a-z0-9]+(?:_[a-z0-9]+)+\b")  # an HTTP status, a reason code


def shows(text: str, word: str) -> bool:
    """*word* appears in *text* as a whole word (``us_person`` is not in ``not_us_person``)."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None


def console_commands(text: str) -> list[ConsoleCommand]:
    """The ``$ command`` lines of a console block, each with the output shown under it."""
    commands: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"output before any command: {line!r}")
    result = []
    for command, expected in commands:
        while expected and not expected[-1].strip():
            expected.pop()
        status = _EXIT.search(command)
        claims = _CLAIM.findall(status.group(2)) if status else []
        result.append(ConsoleCommand(command, expected, int(status.group(1)) if status else 0, claims))
    return result


_VOLATILE = (
    (re.compile(r"\b[0-9a-f]{16}\b"), "<version>"),  # policy versions: a hash of the effective policy
    (re.compile(r"(age days\s+)\d+"), r"\1<days>"),  # a database's age, which grows every day
    (re.compile(r"(request_id=)\S+"), r"\1<id>"),  # a new id per request, random per process
)


def normalise(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def output_matches(expected: list[str], actual: str) -> bool:
    """True when *actual* is what the *expected* lines show (``...`` wildcards; volatile values loosened)."""
    parts = []
    for line in normalise("\n".join(expected)).splitlines():
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
            continue
        pieces = [re.escape(piece) for piece in line.split("...")]
        parts.append("[^\\n]*".join(pieces) + r"\n")
    pattern = "".join(parts)
    return re.fullmatch(pattern, normalise(actual) + "\n") is not None
