"""Token authentication.  Pure; a side module.

``--auth-tokens FILE`` names a file of tokens, one per line, optionally
followed by a name (``s3cr3t web-frontend``); blank lines and ``#``
comments are skipped.  A token without a name is known as ``token-<line>``.
The name, never the token, identifies the client in rate limits and logs.

A request authenticates with ``Authorization: Bearer <token>`` or
``Authorization: Token <token>`` (what InfluxDB clients send), or with HTTP
Basic whose password is the token (InfluxDB v1 clients with a username and
password).  Presented tokens are hashed and compared with every known
digest by `hmac.compare_digest`, so the time taken says nothing about how
much of a token was right.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


class Tokens:
    def __init__(self, names: dict[bytes, str]) -> None:
        """`names` maps the SHA-256 digest of each token to its name."""
        self._names = list(names.items())

    def __len__(self) -> int:
        return len(self._names)

    def __eq__(self, other: object) -> bool:
        """The same tokens with the same names (a reload compares the token file's old and new contents)."""
        if not isinstance(other, Tokens):
            return NotImplemented
        return sorted(self._names) == sorted(other._names)

    __hash__ = None  # type: ignore[assignment]  # equal by contents, and mutable in principle

    @classmethod
    def from_text(cls, text: str) -> Tokens:
        """Parse a tokens file; raises ValueError for a file with no token."""
        names: dict[bytes, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            token, *name = line.split(None, 1)  # any whitespace: a tab separates as a space does
            names[_digest(token.encode("utf-8"))] = name[0] if name else f"token-{number}"
        if not names:
            raise ValueError("the tokens file holds no token")
        return cls(names)

    def identify(self, authorization: bytes | None) -> str | None:
        """The client's name for an Authorization header value, or None if it is missing or wrong."""
        token = _presented_token(authorization) if authorization else None
        if token is None:
            return None
        digest = _digest(token)
        found = None
        for known, name in self._names:
            if hmac.compare_digest(known, digest):
                found = name
        return found


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def _presented_token(authorization: bytes) -> bytes | None:
    scheme, _, credentials = authorization.strip().partition(b" ")
    scheme = scheme.lower()
    credentials = credentials.strip()
    if not credentials:
        return None
    if scheme in (b"bearer", b"token"):
        return credentials
    if scheme == b"basic":
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2] or None
    return None
