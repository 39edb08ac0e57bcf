"""Bearer tokens: ``Authorization: Bearer <token>``, or ``?access_token=`` (RFC 6750
2.3) for browsers' ``EventSource``, which cannot set headers."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

TOKEN_PARAMETER = "access_token"


def parse_tokens(text: str) -> tuple[str, ...]:
    """The tokens of a comma-separated setting."""
    return tuple(t for t in (part.strip() for part in text.split(",")) if t)


def presented(authorization: str | None, query_token: str | None) -> str | None:
    """The token a request carries, if any."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return None
    return query_token or None


def valid(token: str | None, tokens: Sequence[str]) -> bool:
    """Whether ``token`` is one of ``tokens``. Every token is compared, in constant time
    each: the answer's timing says neither which token nor how much of one matched."""
    if token is None:
        return False
    given = token.encode()
    matched = False
    for candidate in tokens:
        matched |= hmac.compare_digest(given, candidate.encode())
    return matched
