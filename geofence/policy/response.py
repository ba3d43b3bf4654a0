"""``[response]`` in the policy file: how denials look (see README "Denials").

Also the denial page's template: ``string.Template`` text with ``$placeholders`` (no code runs, no format
strings on operator data), checked when the policy loads — an unknown placeholder, an unreadable, non-UTF-8 or
oversized file is a policy error, never a failure at request time. The bundled default page goes through the
same check (:func:`default_template`), so operators can copy it as a starting point.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Final

from .checks import Checker

__all__ = [
    "MAX_CONTACT",
    "MAX_TEMPLATE_BYTES",
    "PLACEHOLDERS",
    "ResponseSettings",
    "TemplateError",
    "default_template",
    "read_template",
    "response_settings",
]

MAX_CONTACT: Final = 200
MAX_TEMPLATE_BYTES: Final = 64 * 1024
PLACEHOLDERS: Final = (
    "status",
    "title",
    "heading",
    "message",
    "next_steps",
    "export_class",
    "reasons",
    "policy_version",
    "request_id",
    "contact",
    "contact_html",
    "blocked_by",
    "blocked_by_html",
)
"""What a denial page template may use (README "The denial page" says what each holds)."""
_KEYS: Final = ("blocked_by", "private_cache", "contact", "template")
_DEFAULT: Final = Path(__file__).resolve().parent / "templates" / "denial.html"


class TemplateError(ValueError):
    """A denial page template that cannot be used (the message says why, for the policy's problem list)."""


@dataclass(frozen=True)
class ResponseSettings:
    """The validated ``[response]`` table."""

    blocked_by: str | None = None
    private_cache: bool = True
    contact: str | None = None
    template: Template | None = None
    """The operator's denial page (None: the bundled one)."""
    template_path: Path | None = None
    """Its file, watched like the policy file: an edited page is picked up without a restart."""


def response_settings(raw: Any, base_dir: Path | None, check: Checker) -> ResponseSettings:
    """The validated ``[response]`` table; problems go to *check*."""
    table = check.table(raw, "response", _KEYS)
    blocked_by = check.string(table.get("blocked_by"), "response.blocked_by")
    if blocked_by is not None and not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*:[!#-;=?-~]+", blocked_by):
        check.error(
            "response.blocked_by", f"{blocked_by!r} is not an absolute URI (ASCII: percent-encode other characters)"
        )
    private_cache = table.get("private_cache", True)
    if not isinstance(private_cache, bool):
        check.error("response.private_cache", "must be true or false")
        private_cache = True
    contact = check.string(table.get("contact"), "response.contact")
    if contact is not None:
        contact = contact.strip()
        if not contact:
            check.error("response.contact", "must not be empty (omit the key for no contact)")
        elif len(contact) > MAX_CONTACT:
            check.error("response.contact", f"must be at most {MAX_CONTACT} characters, not {len(contact)}")
        elif not contact.isprintable():
            check.error("response.contact", "must be one line of printable text (no control characters)")
    template = path = None
    name = check.string(table.get("template"), "response.template")
    if name is not None:
        path = base_dir / name if base_dir is not None and not Path(name).is_absolute() else Path(name)
        try:
            template = read_template(path)
        except TemplateError as exc:
            check.error("response.template", str(exc))
    return ResponseSettings(blocked_by, private_cache, contact or None, template, path if template else None)


def read_template(path: Path) -> Template:
    """The denial page template at *path*, checked: UTF-8, at most ``MAX_TEMPLATE_BYTES``, only known
    ``$placeholders`` (``$$`` is a literal dollar sign). Raises :class:`TemplateError`."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise TemplateError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"{path} is larger than {MAX_TEMPLATE_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    template = Template(text)
    if not template.is_valid():
        for match in template.pattern.finditer(text):
            if match.group("invalid") is not None:
                line = text.count("\n", 0, match.start("invalid")) + 1
                hint = "'$' must start a placeholder ($name or ${name}); write $$ for a dollar sign"
                raise TemplateError(f"{path}, line {line}: {hint}")
    for name in template.get_identifiers():
        if name not in PLACEHOLDERS:
            close = difflib.get_close_matches(name, PLACEHOLDERS, n=1, cutoff=0.6)
            hint = f"; did you mean ${close[0]}?" if close else f" (known: {', '.join('$' + p for p in PLACEHOLDERS)})"
            raise TemplateError(f"{path}: unknown placeholder ${name}{hint}")
    return template


@functools.cache
def default_template() -> Template:
    """The bundled denial page (``geofence/policy/templates/denial.html``), read and checked once."""
    return read_template(_DEFAULT)
