"""PII redaction: e-mail addresses, IP addresses, keys and secrets become placeholders.

Replacements: `<EMAIL>`, `<IP_ADDRESS>`, `<KEY>` (the placeholders are plain text, not special
tokens). What is deliberately NOT redacted, because it is not personal data and removing it would
teach the model wrong code:
- IPv4 addresses that are not globally routable: loopback (127.0.0.1), private (10/8, 172.16/12,
  192.168/16), link-local, multicast, unspecified (0.0.0.0), broadcast, netmasks and the
  documentation ranges (192.0.2.0/24, ...): `ipaddress.ip_address(x).is_global` is False.
- Well-known public DNS resolvers (8.8.8.8, 1.1.1.1, 9.9.9.9, ...): configuration defaults.
- Dotted numbers that are versions, not addresses: a run of more than four numbers (1.2.3.4.5), or a
  quad preceded within a few characters by "version", "v", "release", a comparison operator
  (==, >=, <=, ~=, !=) or "@"-pinning. `1.2.3.4` alone in code is kept if it reads as a version
  by those rules, otherwise it is (correctly) treated as an address.
- E-mail-like strings whose domain is a reserved example domain (example.com/.org/.net, *.test,
  *.invalid, localhost) and git remotes such as `git@github.com:` (followed by ':').
- Keys: only well-known credential formats (AWS, GitHub, GitLab, Slack, Google, OpenAI, Stripe,
  private-key blocks) and values assigned to names like api_key / secret / token / password that
  look random (>= 16 chars, mixing letters and digits, no spaces). Hashes or UUIDs in other
  contexts are kept.
"""

from __future__ import annotations

import ipaddress
import re

from .document import Stats

EMAIL = "<EMAIL>"
IP_ADDRESS = "<IP_ADDRESS>"
KEY = "<KEY>"

# Found from the "@" (a literal, which the regex engine scans for quickly), then the local part is
# taken from the text before it.
_EMAIL_DOMAIN = re.compile(r"@((?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24})\b(?!:)")
_EMAIL_LOCAL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}\Z")
_EXAMPLE_DOMAINS = re.compile(r"(?:^|\.)(?:example\.(?:com|org|net)|[\w-]+\.(?:test|invalid|example|localhost))$|^localhost$", re.I)

_IPV4_RE = re.compile(r"(?<![\w.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\w]|\.\d)")
_VERSION_CONTEXT = re.compile(r"(?:(?<![a-z])(?:version|release|ver)\w*|(?<![a-z])v)\W{0,4}$|(?:==|>=|<=|~=|!=|@)\s*$", re.I)
# well-known public DNS resolvers: configuration defaults, not anybody's address
_PUBLIC_RESOLVERS = frozenset({"8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112",
                               "208.67.222.222", "208.67.220.220"})

# (literal that must occur, pattern): the literal check is a fast C substring search, so a file
# only pays for the patterns whose prefix it contains
_KEY_PATTERNS = [(lit, re.compile(rx)) for lit, rx in [
    ("AKIA", r"\bAKIA[0-9A-Z]{16}\b"),                           # AWS access key id
    ("gh", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b"),                # GitHub tokens
    ("glpat-", r"\bglpat-[A-Za-z0-9_-]{20,}\b"),                 # GitLab
    ("xox", r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),                # Slack
    ("AIza", r"\bAIza[0-9A-Za-z_-]{35}\b"),                      # Google API key
    ("sk-", r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}\b"),             # OpenAI-style
    ("k_live_", r"\b[rs]k_live_[A-Za-z0-9]{16,}\b"),             # Stripe
    ("PRIVATE KEY-----", r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z]+ )?PRIVATE KEY-----"),
]]
_GH_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")
# a quoted value of 16+ non-space characters assigned with = or : ...
_QUOTED_VALUE = re.compile(r"""[:=][ \t]*(["'])([^"'\s]{16,})\1""")
# ... counts as a secret when the name before it says so
_SECRET_NAME = re.compile(
    r"(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|passw(?:or)?d|private[_-]?key)"
    r"[\"']?[ \t]*$", re.I)
_SECRET_WORDS = ("key", "secret", "token", "passw")


def _looks_random(value: str) -> bool:
    has_alpha = any(c.isalpha() for c in value)
    has_digit = any(c.isdigit() for c in value)
    return has_alpha and has_digit and "<" not in value and "{" not in value and "$" not in value


def _is_version(text: str, start: int, end: int) -> bool:
    return bool(_VERSION_CONTEXT.search(text[max(0, start - 24):start]))


def redact_pii(text: str, stats: Stats | None = None) -> str:
    """`text` with e-mails, IP addresses and secrets replaced by placeholders (see module doc)."""
    counts = {"email": 0, "ip_address": 0, "key": 0}

    if "@" in text:
        pieces, last = [], 0
        for m in _EMAIL_DOMAIN.finditer(text):
            local = _EMAIL_LOCAL.search(text, max(last, m.start() - 64), m.start())
            if local is None or _EXAMPLE_DOMAINS.search(m.group(1)):
                continue
            pieces += [text[last:local.start()], EMAIL]
            last = m.end()
            counts["email"] += 1
        if pieces:
            text = "".join(pieces) + text[last:]

    def key(m):
        counts["key"] += 1
        return KEY
    for literal, pattern in _KEY_PATTERNS:
        if literal in text and (literal != "gh" or any(g in text for g in _GH_PREFIXES)):
            text = pattern.sub(key, text)

    lower = text.lower()
    if any(w in lower for w in _SECRET_WORDS):
        def assigned(m):
            value = m.group(2)
            if not _looks_random(value) or not _SECRET_NAME.search(m.string, max(0, m.start() - 40), m.start()):
                return m.group(0)
            counts["key"] += 1
            return m.group(0).replace(value, KEY)
        text = _QUOTED_VALUE.sub(assigned, text)

    def ip(m):
        if any(int(g) > 255 for g in m.groups()):
            return m.group(0)
        try:
            addr = ipaddress.ip_address(m.group(0))
        except ValueError:
            return m.group(0)
        if not addr.is_global or m.group(0) in _PUBLIC_RESOLVERS or _is_version(m.string, m.start(), m.end()):
            return m.group(0)
        counts["ip_address"] += 1
        return IP_ADDRESS
    text = _IPV4_RE.sub(ip, text)

    if stats is not None:
        for what, n in counts.items():
            if n:
                stats.changed(f"pii_{what}", n)
        if any(counts.values()):
            stats.changed("pii_files")
    return text
