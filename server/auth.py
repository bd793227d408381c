"""Who may do what: API and admin tokens (compared in constant time, never logged), failed-token
throttling, the per-route origin policy for browsers (ROUTE_ACCESS), the Host allowlist against DNS
rebinding, and per-token / per-IP connection counts."""

from __future__ import annotations

import enum
import errno
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from settings.config import check_tokens

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
    def __init__(self, status: int, code: str, message: str, retry_after_s: int = 0) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after_s = retry_after_s


def _digest(token: str) -> str:
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:8]


def owner_id_of(token: str) -> str:
    """The stable owner id of a token: 64 bits of a domain-separated SHA-256, safe to store and log."""
    return "owner-" + hashlib.sha256(b"livecaption owner\0" + token.encode()).hexdigest()[:16]


def _env_list(env, name: str) -> list[str]:
    return [t.strip() for t in env.get(name, "").split(",") if t.strip()]


# --- the origin policy, one row per route ------------------------------------------------------
class Access(enum.Enum):
    PUBLIC = "public"  # no data: any origin, no token
    LIVE_AUDIO = "live audio"  # token if auth is on; any origin may stream into a new session of its own
    PRIVATE = "private"  # reads captions or changes state: token if auth is on; browsers of trusted origins only
    ADMIN = "admin"  # PRIVATE, and an admin token (auth off: this host only, see Gate.admin_reachable)


# (path, request, access): a path ending in "/" is a prefix; request is "socket" (a WebSocket
# upgrade), "GET" (also HEAD) or "*"; the first row that matches decides. README "Security and
# limits" explains the policy; tests/test_auth_limits.py checks every row.
ROUTE_ACCESS: tuple[tuple[str, str, Access], ...] = (
    ("/", "socket", Access.LIVE_AUDIO),  # FunASR's clients (HTML5 page from anywhere, file://) and ours
    ("/ws", "socket", Access.LIVE_AUDIO),
    ("/subscribe", "socket", Access.PRIVATE),  # follows a session's captions
    ("/", "GET", Access.PUBLIC),  # the pages ask for a token themselves
    ("/overlay", "GET", Access.PUBLIC),
    ("/status", "GET", Access.PUBLIC),
    ("/files", "GET", Access.PUBLIC),
    ("/vad", "GET", Access.PUBLIC),
    ("/client_js/", "GET", Access.PUBLIC),
    ("/admin", "GET", Access.ADMIN),  # the admin page itself: only an admin token opens it
    ("/admin/", "*", Access.ADMIN),
    ("*", "*", Access.PRIVATE),  # the rest: history, exports, jobs, uploads, OpenAI API, /healthz, /metrics
)


def route_access(path: str, method: str, upgrade: bool) -> Access:
    """The ROUTE_ACCESS row that decides this request."""
    request = "socket" if upgrade else "GET" if method.upper() in ("GET", "HEAD") else method.upper()
    for pattern, kind, access in ROUTE_ACCESS:
        if kind not in ("*", request):
            continue
        if pattern in ("*", path) or (len(pattern) > 1 and pattern.endswith("/") and path.startswith(pattern)):
            return access
    return Access.PRIVATE


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Host")
# Addresses whose failures are remembered at once (the oldest is forgotten first): memory stays bounded.
MAX_TRACKED_ADDRESSES = 10_000
FAILURE_WINDOW_S = 60.0


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """The name in a Host header, without port and brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class Gate:
    def __init__(
        self,
        auth_config,
        environ: dict[str, str] | None = None,
        bound_host: str = "127.0.0.1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if environ is None else environ
        env_tokens, env_admin = _env_list(env, "LIVECAPTION_TOKENS"), _env_list(env, "LIVECAPTION_ADMIN_TOKENS")
        check_tokens("LIVECAPTION_TOKENS", env_tokens)
        check_tokens("LIVECAPTION_ADMIN_TOKENS", env_admin)
        tokens = [*auth_config.tokens, *env_tokens]
        admin = [*auth_config.admin_tokens, *env_admin]
        self._tokens = [t.encode() for t in tokens]
        self._admin = [t.encode() for t in admin]
        self.enabled = bool(self._tokens or self._admin)
        self.allowed_origins = tuple(o.rstrip("/").lower() for o in auth_config.allowed_origins)
        self.stream_from_any_origin = auth_config.stream_from_any_origin
        self.per_token = auth_config.max_connections_per_token
        self.per_ip = auth_config.max_connections_per_ip
        self.bound_host = bound_host
        names = {"localhost", _host_name(bound_host)}
        machine = socket.gethostname().lower()
        names |= {machine, machine.split(".")[0], machine.split(".")[0] + ".local"}
        names |= {h.strip().lower().rstrip(".") for h in auth_config.allowed_hosts}
        self.allowed_hosts = frozenset(n for n in names if n)
        self.failed_per_minute = auth_config.failed_auth_per_minute
        self.trusted_proxies = frozenset(_host_name(p) for p in auth_config.trusted_proxies)
        self._failures: OrderedDict[str, list[float]] = OrderedDict()  # address -> [window start, count]
        self._clock = clock
        self._by_token: Counter[str] = Counter()
        self._by_ip: Counter[str] = Counter()

    @property
    def secrets(self) -> list[bytes]:
        """Every configured token, for the log redactor (never for logging)."""
        return [*self._tokens, *self._admin]

    # --- tokens ------------------------------------------------------------------------------
    def identify(self, request: web.Request, admin: bool = False) -> Principal:
        """The caller behind this request, or AuthError (401 no/invalid token, 403 not an admin,
        429 too many invalid tokens from this address lately)."""
        if not self.enabled:
            return ANONYMOUS if not admin else Principal("anonymous", admin=True)
        address = self.client_address(request)
        wait_s = self._throttled_for(address)
        if wait_s:
            raise AuthError(
                429,
                "too_many_failures",
                f"too many invalid tokens from this address; try again in {wait_s} s (auth.failed_auth_per_minute)",
                retry_after_s=wait_s,
            )
        token = presented_token(request)
        if token is None:
            raise AuthError(401, "unauthorized", "this server needs an API token (Authorization: Bearer, ?token=)")
        raw = token.encode("utf-8", "surrogateescape")  # undecodable header bytes are just a wrong token
        is_admin = _matches(raw, self._admin)
        if not (is_admin or _matches(raw, self._tokens)):
            self._count_failure(address)
            raise AuthError(401, "unauthorized", "the API token is not valid")
        if admin and not is_admin:
            raise AuthError(403, "forbidden", "this endpoint needs an admin token")
        return Principal(_digest(token), admin=is_admin, owner_id=owner_id_of(token))

    def _throttled_for(self, address: str) -> int:
        """Seconds until this address may try tokens again (0 = now)."""
        if not self.failed_per_minute:
            return 0
        entry = self._failures.get(address)
        if entry is None:
            return 0
        left = entry[0] + FAILURE_WINDOW_S - self._clock()
        if left <= 0:
            del self._failures[address]
            return 0
        return int(left) + 1 if entry[1] >= self.failed_per_minute else 0

    def _count_failure(self, address: str) -> None:
        if not self.failed_per_minute:
            return
        now = self._clock()
        entry = self._failures.get(address)
        if entry is None or entry[0] + FAILURE_WINDOW_S <= now:
            entry = self._failures[address] = [now, 0]
            while len(self._failures) > MAX_TRACKED_ADDRESSES:
                self._failures.popitem(last=False)
        entry[1] += 1

    # --- browsers ----------------------------------------------------------------------------
    def host_allowed(self, request: web.Request) -> bool:
        """With auth off, the network position is the credential: a page of another site that made
        its own name resolve to this machine (DNS rebinding) must not be served. IP addresses cannot
        be rebound; names must be this machine's, localhost or auth.allowed_hosts."""
        if self.enabled or "*" in self.allowed_hosts:
            return True
        host = request.headers.get("Host")
        if host is None:
            return True  # HTTP/1.0 without Host: not a browser
        name = _host_name(host)
        return _is_ip(name) or _is_loopback(name) or name in self.allowed_hosts

    def origin_trusted(self, request: web.Request) -> bool:
        """A request that no foreign page made: no browser (no Origin, no cross-site fetch metadata),
        this server's own pages, or an origin in auth.allowed_origins."""
        origin = request.headers.get("Origin")
        if origin is None:
            return request.headers.get("Sec-Fetch-Site", "same-origin").lower() in ("same-origin", "none")
        origin = origin.rstrip("/").lower()
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        return origin.split("://", 1)[-1] == request.host.lower()

    def client_address(self, request: web.Request) -> str:
        """The client's address for per-address limits and throttling: the peer, or behind a proxy
        in auth.trusted_proxies the address that proxy reports (the last X-Forwarded-For hop, which
        it appended itself, or X-Real-IP). Other peers' forwarding headers are ignored."""
        peer = request.remote or ""
        if peer not in self.trusted_proxies:
            return peer
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        forwarded = forwarded or request.headers.get("X-Real-IP", "").strip()
        return forwarded[:64] if _is_ip(_host_name(forwarded)) else peer

    def admin_reachable(self, request: web.Request) -> bool:
        """With auth off, admin is for this host's own users: a loopback peer, on a server bound to
        loopback, with no proxy header (behind a same-host proxy every visitor is a loopback peer)."""
        if self.enabled:
            return True
        return (
            _is_loopback(request.remote or "")
            and _is_loopback(self.bound_host)
            and not any(header in request.headers for header in PROXY_HEADERS)
        )

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


# --- logs never carry a token ----------------------------------------------------------------
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s'\",\\]+"),
    re.compile(r"(?i)((?:\?|&|\b)token=)[^&\s'\"\\]+"),
    re.compile(r"(?i)(\btoken\.)[^,\s'\"\\]+"),
)
REDACTED = "[redacted]"


def redact(text: str, secrets: Sequence[bytes] = ()) -> str:
    """The text with anything that looks like a presented token, and every configured one, masked."""
    for secret in secrets:
        text = text.replace(secret.decode("utf-8", "replace"), REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class LogRedactor(logging.Filter):
    """On aiohttp's and asyncio's loggers: a malformed request (aiohttp logs the bad line or header,
    which may hold a token, with a traceback) becomes one redacted line; any other record is redacted."""

    def __init__(self, secrets: Callable[[], list[bytes]] = list) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        if record.name == "aiohttp.websocket" and "overlap" in str(record.msg):
            # Subprotocols we do not speak (only "token.<t>", or bytes that are none) are harmless: the
            # socket goes on without one. The refusal, if any, is the request's access-log line.
            return False
        secrets = self._secrets()
        message = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        out_of_descriptors = isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE)
        if isinstance(exc, (HttpProcessingError, UnicodeError)) or out_of_descriptors:
            # the client's fault, or the stdlib loop's accept() at the open-file limit (it retries each
            # second; uvloop closes such connections quietly): one line, no traceback
            reason = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, secrets)
            message = f"{message}: {type(exc).__name__}: {reason[:300]}"
            record.exc_info, record.exc_text = None, None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        elif record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), secrets)
        record.msg, record.args = redact(message, secrets), None
        return True


def install_log_redactor(gate: Gate) -> LogRedactor:
    """Attach one redactor to every logger of the HTTP stack; returned so it can be removed."""
    redactor = LogRedactor(lambda: gate.secrets)
    for name in REDACTED_LOGGERS:
        logging.getLogger(name).addFilter(redactor)
    return redactor


def remove_log_redactor(redactor: LogRedactor) -> None:
    for name in REDACTED_LOGGERS:
        logging.getLogger(name).removeFilter(redactor)


REDACTED_LOGGERS = (
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.access",
    "aiohttp.websocket",
    "aiohttp.internal",
    "asyncio",
)
