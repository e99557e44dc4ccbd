"""
The bearer token that mutating admin calls need.

The token is read from C{admin.token_file} at every request, so that it can
be rotated by rewriting the file, and compared in constant time. It never
appears in an answer or a log. A file that users other than its owner may
read or write is refused.
"""

from __future__ import annotations

import hmac
import os
import stat

import attrs
from twisted.logger import Logger

__all__ = ["Refusal", "checkBearer", "exposure", "tokenFileProblem"]

log = Logger(namespace="netsupervisor.admin")

CHALLENGE = b'Bearer realm="netsupervisor"'


@attrs.frozen
class Refusal:
    """
    Why a request is not allowed, as an HTTP answer.

    @ivar code: the HTTP status.
    @ivar error: the message of the JSON error body.
    @ivar challenge: the C{WWW-Authenticate} header to send, if any.
    """

    code: int
    error: str
    challenge: bytes | None = None


def exposure(mode: int) -> str | None:
    """
    What a file's mode lets users other than its owner do, in words
    (C{"readable by group and others"}), or L{None} if nothing.
    """
    kinds = []
    for verb, bits in (
        ("readable", (stat.S_IRGRP, stat.S_IROTH)),
        ("writable", (stat.S_IWGRP, stat.S_IWOTH)),
    ):
        who = [name for name, bit in zip(("group", "others"), bits, strict=True) if mode & bit]
        if who:
            kinds.append(f"{verb} by {' and '.join(who)}")
    return " and ".join(kinds) or None


def tokenFileProblem(tokenFile: str) -> str | None:
    """
    Why C{admin.token_file} may not be used, or L{None}: it is refused when
    users other than its owner may read or write it. A file that does not
    exist (yet) or cannot be examined is not refused here; a request finds
    out.
    """
    if not tokenFile:
        return None
    try:
        mode = os.stat(tokenFile).st_mode
    except OSError:
        return None
    return _modeProblem(tokenFile, mode)


def _modeProblem(tokenFile: str, mode: int) -> str | None:
    exposed = exposure(mode)
    if exposed is None:
        return None
    return (
        f"expected a file only its owner can read, got {tokenFile}, which is {exposed} "
        f"(mode {stat.S_IMODE(mode):04o}; chmod 600 it)"
    )


def checkBearer(tokenFile: str, authorization: bytes | None) -> Refusal | None:
    """
    Check an C{Authorization} header against the token in C{tokenFile}.

    @param tokenFile: C{admin.token_file}; C{""} disables the actions.
    @param authorization: the request's C{Authorization} header, if any.
    @return: L{None} when the request carries the right token, else why not:
        403 when no token is configured (or the file holds none), 500 when
        the file cannot be read or others than its owner may read or write
        it, 401 (with a challenge) when the header is missing or not
        C{Bearer <token>}, 403 when the token is wrong.
    """
    if not tokenFile:
        return Refusal(403, "admin actions are disabled: admin.token_file is not set")
    try:
        with open(tokenFile, "rb") as f:
            problem = _modeProblem(tokenFile, os.fstat(f.fileno()).st_mode)
            token = b"" if problem else f.read().strip()
    except OSError as e:
        log.warn(
            "cannot read admin.token_file {path}: {reason}",
            path=tokenFile,
            reason=e.strerror or type(e).__name__,
        )
        return Refusal(500, "cannot read admin.token_file")
    if problem is not None:
        log.warn("admin.token_file refused: {problem}", problem=problem)
        return Refusal(500, "admin.token_file may be read or written by others than its owner")
    if not token:
        return Refusal(403, "admin actions are disabled: admin.token_file is empty")
    if authorization is None:
        return Refusal(401, "this action needs an Authorization: Bearer header", CHALLENGE)
    parts = authorization.split()
    if len(parts) != 2 or parts[0].lower() != b"bearer":
        return Refusal(
            401,
            "malformed Authorization header: expected Bearer <token>",
            CHALLENGE + b', error="invalid_request"',
        )
    if not hmac.compare_digest(parts[1], token):
        return Refusal(403, "invalid bearer token")
    return None
