"""Who may connect: API tokens and admin tokens (compared in constant time, never logged), the
browser Origin allowlist for WebSocket upgrades, and per-token / per-IP connection counts."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import Counter
from dataclasses import dataclass

from aiohttp import web

TOKEN_SUBPROTOCOL = "token."  # browsers cannot set headers on a WebSocket: "token.<t>" subprotocol or ?token=


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `name` is a short digest of the token: safe to log and to count by.
    `owner_id` is what owns sessions, jobs and history rows: a longer digest of the token (never the
    token), stable across restarts; "anonymous" with auth off, where one caller owns everything."""

    name: str
    admin: bool
    owner_id: str = "anonymous"

    def may_access(self, owner_id: str | None) -> bool:
        """Whether this caller may read/follow/change something owned by `owner_id` (admins: all)."""
        return self.admin or owner_id is None or owner_id == self.owner_id


ANONYMOUS = Principal("anonymous", admin=False)


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _digest(token: str) -> str:
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:8]


def owner_id_of(token: str) -> str:
    """The stable owner id of a token: 64 bits of a domain-separated SHA-256, safe to store and log."""
    return "owner-" + hashlib.sha256(b"livecaption owner\0" + token.encode()).hexdigest()[:16]


def _env_list(env, name: str) -> list[str]:
    return [t.strip() for t in env.get(name, "").split(",") if t.strip()]


class Gate:
    def __init__(self, auth_config, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        tokens = [*auth_config.tokens, *_env_list(env, "LIVECAPTION_TOKENS")]
        admin = [*auth_config.admin_tokens, *_env_list(env, "LIVECAPTION_ADMIN_TOKENS")]
        self._tokens = [t.encode() for t in tokens]
        self._admin = [t.encode() for t in admin]
        self.enabled = bool(self._tokens or self._admin)
        self.allowed_origins = tuple(o.rstrip("/").lower() for o in auth_config.allowed_origins)
        self.per_token = auth_config.max_connections_per_token
        self.per_ip = auth_config.max_connections_per_ip
        self._by_token: Counter[str] = Counter()
        self._by_ip: Counter[str] = Counter()

    # --- tokens ------------------------------------------------------------------------------
    def identify(self, request: web.Request, admin: bool = False) -> Principal:
        """The caller behind this request, or AuthError (401 no/invalid token, 403 not an admin)."""
        if not self.enabled:
            return ANONYMOUS if not admin else Principal("anonymous", admin=True)
        token = presented_token(request)
        if token is None:
            raise AuthError(401, "unauthorized", "this server needs an API token (Authorization: Bearer, ?token=)")
        raw = token.encode()
        is_admin = _matches(raw, self._admin)
        if not (is_admin or _matches(raw, self._tokens)):
            raise AuthError(401, "unauthorized", "the API token is not valid")
        if admin and not is_admin:
            raise AuthError(403, "forbidden", "this endpoint needs an admin token")
        return Principal(_digest(token), admin=is_admin, owner_id=owner_id_of(token))

    # --- browsers ----------------------------------------------------------------------------
    def origin_allowed(self, request: web.Request) -> bool:
        """Browsers send Origin on WebSocket upgrades; other clients do not and are not limited by it.
        With no allowlist, only this server's own pages (same host) may open sockets."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        return not self.allowed_origins and origin.split("://", 1)[-1] == request.host.lower()

    # --- connection counts -------------------------------------------------------------------
    def admit(self, principal: Principal, ip: str) -> str | None:
        """Count a new connection in; the reason it is refused, or None."""
        if self.per_ip and self._by_ip[ip] >= self.per_ip:
            return f"too many connections from {ip} (max_connections_per_ip = {self.per_ip})"
        if self.per_token and self.enabled and self._by_token[principal.name] >= self.per_token:
            return f"too many connections for this token (max_connections_per_token = {self.per_token})"
        self._by_ip[ip] += 1
        self._by_token[principal.name] += 1
        return None

    def release(self, principal: Principal, ip: str) -> None:
        self._by_ip[ip] -= 1
        self._by_token[principal.name] -= 1
        self._by_ip += Counter()  # drop zero counts
        self._by_token += Counter()


def presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    if request.query.get("token"):
        return request.query["token"]
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(TOKEN_SUBPROTOCOL) and len(protocol) > len(TOKEN_SUBPROTOCOL):
            return protocol[len(TOKEN_SUBPROTOCOL) :]
    return None


def _matches(candidate: bytes, tokens: list[bytes]) -> bool:
    # compare_digest against every token, without stopping at the first match: timing says nothing.
    found = False
    for token in tokens:
        found |= hmac.compare_digest(candidate, token)
    return found
