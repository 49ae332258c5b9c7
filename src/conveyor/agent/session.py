"""The dashboard's session: the same tokens as the API, carried by a cookie.

A browser cannot put ``Authorization: Bearer`` on a page load or an EventSource, so the login
page keeps the token in an HttpOnly, SameSite=Strict cookie (Secure when served over https),
and every request the page makes names its caller from it. A cookie is sent by the browser on
its own, so every request that changes something must also carry the session's CSRF token in
the ``X-Conveyor-CSRF`` header (a form: its ``csrf`` field): a value derived from the session's
token that a page of another site can neither read nor compute.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import HTTPConnection

from .errors import ApiError

COOKIE = "conveyor_session"
CSRF_HEADER = "x-conveyor-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(token: str) -> str:
    """The CSRF token of the session that holds ``token``."""
    return hmac.new(token.encode(), b"conveyor dashboard csrf", hashlib.sha256).hexdigest()


def csrf_matches(token: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(csrf_token(token), given)


def session_token(conn: HTTPConnection) -> str | None:
    """The token of the request's session cookie (a plain HTTP request only: a WebSocket opened by
    another site would carry the cookie too, and has no header to prove otherwise)."""
    if conn.scope["type"] != "http":
        return None
    return conn.cookies.get(COOKIE) or None


def session_authorization(conn: HTTPConnection) -> str | None:
    """An ``Authorization`` header value made from the session cookie; a request that changes
    something without the session's CSRF token is refused."""
    token = session_token(conn)
    if token is None:
        return None
    if conn.scope.get("method", "GET") not in SAFE_METHODS and not csrf_matches(token, conn.headers.get(CSRF_HEADER)):
        raise ApiError(403, "csrf", "this request changes something and came without the page's CSRF token "
                                    f"(header {CSRF_HEADER.title()}): reload the dashboard page and try again", CSRF_HEADER)
    return f"Bearer {token}"
