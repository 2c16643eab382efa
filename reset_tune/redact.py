"""Masking of credentials in URIs before the tool prints, logs or records them.

A tracking URI such as ``http://user:password@host`` or ``postgresql://u:pw@db/optuna`` and a
query such as ``?token=...`` carry secrets; every URI reset-tune shows a person or writes to a
record goes through `redact_uri` first, so a password is never on a terminal, in a log or in
``search.json``.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

# Query parameter names whose value is a credential (case-insensitive, matched as a substring of
# the name so that ``access_token``, ``api_key``, ``X-Auth-Token`` are all caught).
_SECRET_PARAM = re.compile(r"token|passw|pwd|secret|key|auth|credential|signature|sig$", re.I)

# ``scheme://user:password@host`` inside a longer text (a message, a log line).
_USERINFO_IN_TEXT = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):(?P<pw>[^/\s@]*)@")


def redact_uri(uri: str) -> str:
    """`uri` with its password (or token in the user part) and secret query values masked.

    ``http://user:pw@host`` becomes ``http://user:***@host``; ``http://tok@host`` (a bare token
    as the user part) becomes ``http://***@host``; ``?token=abc&x=1`` becomes
    ``?token=***&x=1``. Anything that is not a URI (a plain path) comes back unchanged; this
    function never raises.
    """
    if not isinstance(uri, str) or "://" not in uri and "?" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return _USERINFO_IN_TEXT.sub(rf"\g<head>:{MASK}@", uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        if has_password:
            netloc = f"{user}:{MASK}@{hostport}"
        elif userinfo:
            # A lone user part in an http(s) URI is usually a token (https://TOKEN@host).
            netloc = f"{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(name) for name, _ in pairs):
            query = urlencode(
                [(name, MASK if _SECRET_PARAM.search(name) else value) for name, value in pairs],
                safe="*",
            )
    if netloc == parts.netloc and query == parts.query:
        return uri
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """`text` with the password of every ``scheme://user:password@`` in it masked."""
    return _USERINFO_IN_TEXT.sub(rf"\g<head>:{MASK}@", text)
