"""The audit record format, its hash chain, and the checks ``geofence audit verify`` runs.

One JSON object per line. Every record carries ``chain`` (a random id per writer), ``seq`` (0, 1, 2... within
the chain), ``prev`` (the previous record's ``hash``; :data:`GENESIS` for seq 0) and ``hash`` — SHA-256, or
HMAC-SHA256 with a secret key, of the line's bytes up to the ``,"hash":`` suffix. So an edited line fails its
own hash, and a deleted, inserted or reordered line breaks the next record's ``prev``/``seq``; with a key, an
attacker cannot recompute the chain after an edit. A truncated tail leaves an intact chain: only a head hash
kept elsewhere (``--head``) can show it.

Records also carry everything :func:`geofence.policy.decision.decide` needs to re-decide them (``audit replay``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ..geoip.location import Anonymizer, Location
from ..identity.claims import Identity
from ..policy.decision import CLIENT_ADDRESS_INVALID, ERROR, EXEMPT, IDENTITY_INVALID, Decision, decide
from ..policy.load import Policy

__all__ = [
    "GENESIS",
    "ChainHead",
    "Problem",
    "Verification",
    "decision_facts",
    "identity_from_facts",
    "location_from_facts",
    "read_records",
    "seal",
    "verify_files",
]

GENESIS: Final = "0" * 64
FORMAT_VERSION: Final = 1
_MAX_REQUEST_ID: Final = 128
_HASH_SUFFIX: Final = re.compile(r',"hash":"([0-9a-f]{64})"}\r?\n?\Z')


def line_hash(body: bytes, key: bytes | None) -> str:
    """SHA-256 of *body*, or its HMAC-SHA256 under *key* (a keyed chain cannot be rebuilt after an edit)."""
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def seal(record: dict[str, Any], key: bytes | None) -> tuple[str, str]:
    """The line (with newline) for *record* (which holds ``prev``, not ``hash``) and its hash."""
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=True)  # ASCII: no CR/LF/U+2028 in a line
    digest = line_hash(body[:-1].encode(), key)
    return f'{body[:-1]},"hash":"{digest}"}}\n', digest


def decision_facts(
    when: float, outcome: str, decision: Decision, request_id: str, client_ip: str | None
) -> dict[str, Any]:
    """The record for one decision, without chain fields. Pure, so the writer thread can run it."""
    loc, ident = decision.location, decision.identity
    location = None
    if loc is not None:
        location = {
            "country": loc.country,
            "registered_country": loc.registered_country,
            "represented_country": loc.represented_country,
            "represented_country_type": loc.represented_country_type,
            "subdivisions": list(loc.subdivisions),
            "other_countries": list(loc.other_countries),
            "anonymizer": None if loc.anonymizer is None else loc.anonymizer.as_dict(),
            "network": loc.network,
            "reason": loc.reason,
        }
    identity = None
    if ident is not None:
        identity = {
            "subject_hash": ident.subject_hash,
            "us_person": ident.us_person,
            "nationalities": list(ident.nationalities),
            "residence": ident.residence,
            "permanent_residence": ident.permanent_residence,
            "most_recent_country": ident.most_recent_country,
            "assurance_level": ident.assurance_level,
            "trust_framework": ident.trust_framework,
        }
    facts: dict[str, Any] = {"location": location, "identity": identity}
    if client_ip is not None:
        facts["client_ip"] = client_ip
    return {
        "v": FORMAT_VERSION,
        "time": datetime.fromtimestamp(when, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "request_id": request_id[:_MAX_REQUEST_ID],  # client-influenced: bounded, and JSON-escaped below
        "outcome": outcome,
        "allowed": decision.allowed,
        "status": decision.status,
        "class": decision.export_class,
        "mode": decision.mode,
        "reasons": [r.as_dict() for r in decision.reasons],
        "policy": decision.policy_version,
        "facts": facts,
        "databases": []
        if loc is None
        else [{"type": d.type, "build_date": d.build_date.isoformat()} for d in loc.databases],
    }


def location_from_facts(facts: dict[str, Any] | None) -> Location | None:
    """Rebuild the :class:`Location` a record describes (without database infos, which no rule reads)."""
    if facts is None:
        return None
    flags = facts.get("anonymizer")
    return Location(
        network=facts.get("network") or "",
        country=facts.get("country"),
        registered_country=facts.get("registered_country"),
        represented_country=facts.get("represented_country"),
        represented_country_type=facts.get("represented_country_type"),
        subdivisions=tuple(facts.get("subdivisions") or ()),
        other_countries=tuple(facts.get("other_countries") or ()),
        anonymizer=None if flags is None else Anonymizer(**{k: bool(v) for k, v in flags.items()}),
        reason=facts.get("reason"),
    )


def identity_from_facts(facts: dict[str, Any] | None) -> Identity | None:
    """Rebuild the :class:`Identity` a record describes: the facts the person rules read."""
    if facts is None:
        return None
    return Identity(
        us_person=bool(facts.get("us_person")),
        nationalities=tuple(facts.get("nationalities") or ()),
        residence=facts.get("residence"),
        permanent_residence=facts.get("permanent_residence"),
        most_recent_country=facts.get("most_recent_country"),
        subject_hash=facts.get("subject_hash"),
        assurance_level=facts.get("assurance_level"),
        trust_framework=facts.get("trust_framework"),
    )


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class ChainHead:
    chain: str
    seq: int
    hash: str
    file: str
    line: int


@dataclass
class Verification:
    """What ``verify`` found: every problem, and the last record of each chain."""

    problems: list[Problem] = field(default_factory=list)
    heads: dict[str, ChainHead] = field(default_factory=dict)
    records: int = 0

    @property
    def intact(self) -> bool:
        return not self.problems and self.records > 0


def read_records(files: Iterable[str | Path]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(file, line number, record) for every parseable line; unparseable lines are skipped (verify names them)."""
    for name in files:
        with open(name, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield str(name), number, record


@dataclass
class _Entry:
    file: str
    line: int
    seq: int
    prev: str
    hash: str


def verify_files(files: Iterable[str | Path], key: bytes | None, head: str | None = None) -> Verification:
    """Check every line's hash, then each chain's ``seq``/``prev`` continuity.

    Within a file, records are checked in file order (so a reordered line is found); a chain's segments in
    several files (rotation) are put in ``seq`` order, so the files may be named in any order."""
    result = Verification()
    segments: dict[str, list[list[_Entry]]] = {}
    for name in files:
        last_chain_in_file: dict[str, list[_Entry]] = {}
        with open(name, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                entry, chain = _check_line(str(name), number, raw, key, result.problems)
                if entry is None or chain is None:
                    continue
                result.records += 1
                if chain not in last_chain_in_file:
                    last_chain_in_file[chain] = []
                    segments.setdefault(chain, []).append(last_chain_in_file[chain])
                last_chain_in_file[chain].append(entry)
    known = {e.hash for parts in segments.values() for part in parts for e in part}
    for chain, parts in segments.items():
        parts.sort(key=lambda part: part[0].seq)
        previous: _Entry | None = None
        for entry in (e for part in parts for e in part):
            _check_link(chain, previous, entry, result.problems, known)
            if previous is None or entry.seq > previous.seq:  # a record out of order is named, then passed over
                previous = entry
        if previous is not None:
            result.heads[chain] = ChainHead(chain, previous.seq, previous.hash, previous.file, previous.line)
    if head is not None and not any(e.hash == head for parts in segments.values() for part in parts for e in part):
        result.problems.append(Problem("-", 0, f"head {head[:16]}... not found: records after it were removed"))
    if result.records == 0 and not result.problems:
        result.problems.append(Problem("-", 0, "no audit records"))
    return result


def _check_line(
    name: str, number: int, raw: bytes, key: bytes | None, problems: list[Problem]
) -> tuple[_Entry | None, str | None]:
    text = raw.decode("utf-8", errors="replace")
    if not text.strip():
        problems.append(Problem(name, number, "blank line"))
        return None, None
    match = _HASH_SUFFIX.search(text)
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if match is None or not isinstance(record, dict):
        problems.append(Problem(name, number, "not an audit record (malformed or edited)"))
        return None, None
    chain, seq, prev = record.get("chain"), record.get("seq"), record.get("prev")
    if not isinstance(chain, str) or not isinstance(seq, int) or not isinstance(prev, str):
        problems.append(Problem(name, number, "record without chain/seq/prev"))
        return None, None
    keyed = record.get("alg") == "hmac-sha256"
    if keyed and key is None:
        problems.append(Problem(name, number, "keyed (HMAC) chain: pass --key-env to verify it"))
        return None, None
    if not keyed and key is not None:
        problems.append(Problem(name, number, "unkeyed record in a keyed audit log (rewritten without the key?)"))
        return None, None
    digest = match.group(1)
    if not hmac.compare_digest(line_hash(text[: match.start()].encode(), key if keyed else None), digest):
        problems.append(Problem(name, number, f"record edited: hash mismatch (chain {chain[:8]} seq {seq})"))
    return _Entry(name, number, seq, prev, digest), chain


def _check_link(chain: str, previous: _Entry | None, entry: _Entry, problems: list[Problem], known: set[str]) -> None:
    where = f"chain {chain[:8]} seq {entry.seq}"
    if previous is None:
        if entry.seq != 0:
            problems.append(
                Problem(entry.file, entry.line, f"{where}: chain starts mid-way (records before it deleted)")
            )
        elif entry.prev != GENESIS and entry.prev not in known:  # a chain starts from the file's last record
            problems.append(
                Problem(entry.file, entry.line, f"{where}: the records this chain continues from were deleted")
            )
        return
    if entry.seq != previous.seq + 1:
        if entry.seq <= previous.seq:
            what = "out of order or duplicated"
        else:
            what = f"{entry.seq - previous.seq - 1} record(s) missing before it"
        problems.append(Problem(entry.file, entry.line, f"{where}: {what} (previous seq {previous.seq})"))
    elif entry.prev != previous.hash:
        problems.append(
            Problem(entry.file, entry.line, f"{where}: does not follow the previous record (inserted or replaced)")
        )


def redecide(record: dict[str, Any], policy: Policy, trace: list[str] | None = None) -> Decision | None:
    """The decision *policy* makes on a record's facts (location, identity, the problems the record names);
    None for a record that cannot be replayed (a 503 error, whose facts may be incomplete)."""
    reasons = record.get("reasons") or []
    codes = {r.get("code"): r.get("detail", "") for r in reasons if isinstance(r, dict)}
    if ERROR in codes or not isinstance(record.get("class"), str):
        return None
    facts = record.get("facts") or {}
    client_problem = codes.get(CLIENT_ADDRESS_INVALID)
    return decide(
        policy,
        record["class"],
        location_from_facts(facts.get("location")),
        identity_from_facts(facts.get("identity")),
        identity_problem=codes.get(IDENTITY_INVALID),
        client_problem=client_problem.removeprefix("client address cannot be trusted: ") if client_problem else None,
        exempt=codes.get(EXEMPT),
        trace=trace,
    )
