"""Load config.toml into frozen dataclasses; bad values fail at start with the setting's name."""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config.toml"


class ConfigError(ValueError):
    """A setting is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    max_connections: int
    max_frame_bytes: int
    max_errors_per_connection: int
    send_queue_partials: int
    max_queued_replies: int
    send_timeout_s: float
    shutdown_grace_s: float
    tls_cert_file: str
    tls_key_file: str
    disconnect_flush_s: float
    session_keep_s: float
    session_max_finals: int
    max_subscribers: int
    max_stream_audio_s: float
    idle_timeout_s: float
    ping_interval_s: float
    max_sessions: int
    max_sessions_per_connection: int
    max_sessions_per_token: int
    max_sessions_per_address: int
    subscriber_idle_s: float
    keepalive_timeout_s: float
    body_timeout_s: float
    body_min_kb_s: float


@dataclass(frozen=True)
class AudioConfig:
    preroll_ms: int
    ring_buffer_s: float


@dataclass(frozen=True)
class EndpointingConfig:
    silence_ms: int
    long_silence_ms: int
    max_segment_s: float
    speech_onset_ms: int
    cut_search_ms: int
    energy_gate_dbfs: float
    webrtc_aggressiveness: int
    fsmn_speech_threshold: float


@dataclass(frozen=True)
class InferenceConfig:
    engine: str
    device: str
    max_batch_size: int
    max_wait_ms: int
    background_batch_size: int
    background_hold_ms: int
    partial_interval_ms: int
    vad_max_batch_size: int
    vad_max_wait_ms: int
    vad_process: bool
    vad_workers: int
    keep_decode_memory: bool  # glibc keeps what a CPU decode frees for the next (inference/allocator.py)
    overload_backlog_ms: int
    vad_overload_ms: int
    hotword_file: str
    backend: str  # "local" (this process's device) or "ray" (a shared Ray Serve pool: inference.ray_backend)
    ray_address: str
    ray_app: str
    ray_min_replicas: int
    ray_max_replicas: int
    ray_num_gpus: float
    ray_num_cpus: float
    ray_max_ongoing_requests: int
    ray_target_ongoing_requests: float
    ray_batches_in_flight: int
    ray_call_timeout_s: float
    ray_max_queued_finals: int


@dataclass(frozen=True)
class FunasrConfig:
    offline_model: str
    online_model: str
    vad_model: str
    punc_model: str
    hub: str
    model_cache_dir: str
    allow_download: bool
    encoder_chunk_look_back: int
    decoder_chunk_look_back: int
    fp16: bool
    language: str
    cut_context_s: float
    cut_lookahead_s: float
    long_segment_s: float


@dataclass(frozen=True)
class WhisperConfig:
    model_dir: str
    cache_dir: str
    compute_type: str
    cpu_threads: int
    language: str
    beam_size: int
    min_window_s: float
    partial_min_window_s: float
    no_speech_threshold: float
    auto_languages: tuple[str, ...]
    chinese_script: str
    context_s: float
    cut_lookahead_s: float
    long_segment_s: float
    context_max_segment_s: float


@dataclass(frozen=True)
class AuthConfig:
    tokens: tuple[str, ...]
    admin_tokens: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    max_connections_per_token: int
    max_connections_per_ip: int
    allowed_hosts: tuple[str, ...]
    stream_from_any_origin: bool
    failed_auth_per_minute: int
    trusted_proxies: tuple[str, ...]


@dataclass(frozen=True)
class JobsConfig:
    db_path: str
    upload_dir: str
    allowed_dir: str
    max_upload_mb: int
    max_file_audio_s: float
    concurrent_files: int
    record_live: bool
    engines: tuple[str, ...]


@dataclass(frozen=True)
class ClusterConfig:
    postgres_url: str  # "" = the embedded SQLite store at jobs.db_path
    lease_s: float
    redis_url: str  # "" = caption sessions and connection counts in this process only
    node_ttl_s: float
    max_queued_writes: int
    max_connections: int


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    audio: AudioConfig
    endpointing: EndpointingConfig
    inference: InferenceConfig
    whisper: WhisperConfig
    funasr: FunasrConfig
    auth: AuthConfig
    jobs: JobsConfig
    cluster: ClusterConfig

    def cut_joins(self, engine: str | None) -> tuple[float, float]:
        """(context_s, cut_lookahead_s) for segments decoded by `engine` (None: not decoded) at a
        cut for length: the audio before the segment after a cut, and after the cut segment (see
        streaming.cuts). Whisper also gives its context to every short segment of a live stream."""
        if engine == "whisper":
            return self.whisper.context_s, self.whisper.cut_lookahead_s
        if engine == "funasr":
            return self.funasr.cut_context_s, self.funasr.cut_lookahead_s
        return 0.0, 0.0

    def long_segment_s(self, engine: str | None) -> float:
        """How old a live segment decoded by `engine` must be for a pause of
        endpointing.long_silence_ms to close it (0: only silence_ms does). Such a close is joined
        like a cut for length, so it belongs to the engines that join cuts, each with its own
        measured setting (docs/performance.md)."""
        if engine == "whisper":
            return self.whisper.long_segment_s
        if engine == "funasr":
            return self.funasr.long_segment_s
        return 0.0


_SECTIONS = {
    "server": ServerConfig,
    "audio": AudioConfig,
    "endpointing": EndpointingConfig,
    "inference": InferenceConfig,
    "whisper": WhisperConfig,
    "funasr": FunasrConfig,
    "auth": AuthConfig,
    "jobs": JobsConfig,
    "cluster": ClusterConfig,
}

# (section, key) -> (low, high) inclusive; checked after types.
_RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("cluster", "lease_s"): (1, 3600),
    ("cluster", "node_ttl_s"): (1, 3600),
    ("cluster", "max_queued_writes"): (100, 10_000_000),
    ("cluster", "max_connections"): (0, 10_000_000),
    ("server", "port"): (0, 65535),
    ("server", "max_connections"): (1, 100_000),
    ("server", "max_frame_bytes"): (320, 64 * 1024 * 1024),
    ("server", "max_errors_per_connection"): (1, 1_000_000),
    ("server", "send_queue_partials"): (1, 1000),
    ("server", "max_queued_replies"): (1, 100_000),
    ("server", "send_timeout_s"): (0.1, 3600),
    ("inference", "overload_backlog_ms"): (10, 600_000),
    ("server", "shutdown_grace_s"): (0, 3600),
    ("server", "disconnect_flush_s"): (0, 3600),
    ("server", "session_keep_s"): (0, 7 * 24 * 3600),
    ("server", "session_max_finals"): (1, 1_000_000),
    ("server", "max_subscribers"): (0, 100_000),
    ("server", "max_stream_audio_s"): (1, 7 * 24 * 3600),
    ("server", "idle_timeout_s"): (0, 24 * 3600),
    ("server", "ping_interval_s"): (0, 3600),
    ("server", "max_sessions"): (1, 10_000_000),
    ("server", "max_sessions_per_connection"): (0, 10_000_000),
    ("server", "max_sessions_per_token"): (0, 10_000_000),
    ("server", "max_sessions_per_address"): (0, 10_000_000),
    ("server", "subscriber_idle_s"): (0, 7 * 24 * 3600),
    ("server", "keepalive_timeout_s"): (1, 3600),
    ("server", "body_timeout_s"): (1, 3600),
    ("server", "body_min_kb_s"): (0, 1_000_000),
    ("auth", "failed_auth_per_minute"): (0, 1_000_000),
    ("auth", "max_connections_per_token"): (0, 100_000),
    ("auth", "max_connections_per_ip"): (0, 100_000),
    ("jobs", "max_upload_mb"): (1, 1_000_000),
    ("jobs", "max_file_audio_s"): (1, 7 * 24 * 3600),
    ("jobs", "concurrent_files"): (1, 64),
    ("audio", "preroll_ms"): (0, 2000),
    ("audio", "ring_buffer_s"): (2, 600),
    ("endpointing", "silence_ms"): (50, 10_000),
    ("endpointing", "long_silence_ms"): (10, 10_000),
    ("endpointing", "max_segment_s"): (1, 60),
    ("endpointing", "speech_onset_ms"): (10, 1000),
    ("endpointing", "cut_search_ms"): (10, 5000),
    ("endpointing", "energy_gate_dbfs"): (-120, 0),
    ("endpointing", "webrtc_aggressiveness"): (0, 3),
    ("endpointing", "fsmn_speech_threshold"): (0.01, 0.99),
    ("inference", "max_batch_size"): (1, 256),
    ("inference", "max_wait_ms"): (0, 1000),
    ("inference", "background_batch_size"): (1, 256),
    ("inference", "background_hold_ms"): (0, 600_000),
    ("inference", "partial_interval_ms"): (100, 10_000),
    ("inference", "vad_max_batch_size"): (1, 4096),
    ("inference", "vad_max_wait_ms"): (0, 200),
    ("inference", "vad_workers"): (1, 8),
    ("inference", "vad_overload_ms"): (0, 600_000),
    ("inference", "ray_min_replicas"): (1, 1024),
    ("inference", "ray_max_replicas"): (1, 1024),
    ("inference", "ray_num_gpus"): (0, 64),
    ("inference", "ray_num_cpus"): (0, 256),
    ("inference", "ray_max_ongoing_requests"): (1, 100_000),
    ("inference", "ray_target_ongoing_requests"): (0.1, 10_000),
    ("inference", "ray_batches_in_flight"): (1, 1024),
    ("inference", "ray_call_timeout_s"): (1, 3600),
    ("inference", "ray_max_queued_finals"): (0, 10_000_000),
    ("whisper", "cpu_threads"): (0, 256),
    ("whisper", "beam_size"): (1, 16),
    ("whisper", "no_speech_threshold"): (0, 1),
    ("whisper", "min_window_s"): (5, 30),
    ("whisper", "partial_min_window_s"): (5, 30),
    ("whisper", "context_s"): (0, 10),
    ("whisper", "cut_lookahead_s"): (0, 5),
    ("whisper", "long_segment_s"): (0, 60),
    ("whisper", "context_max_segment_s"): (0, 60),
    ("funasr", "encoder_chunk_look_back"): (0, 64),
    ("funasr", "cut_context_s"): (0, 10),
    ("funasr", "cut_lookahead_s"): (0, 5),
    ("funasr", "long_segment_s"): (0, 60),
    ("funasr", "decoder_chunk_look_back"): (0, 64),
}

ENGINES = ("whisper", "funasr", "instant")

# A token shorter than this can be guessed (even throttled, a short one falls to a patient botnet).
MIN_TOKEN_CHARS = 16


def check_tokens(setting: str, tokens: Iterable[str]) -> None:
    """ConfigError naming `setting` if a token is too short (the token itself is never echoed)."""
    for index, token in enumerate(tokens):
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"{setting}: token #{index + 1} has {len(token)} characters, at least {MIN_TOKEN_CHARS} are needed "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )


def _coerce(section: str, field: dataclasses.Field[Any], value: Any) -> Any:
    name = f"{section}.{field.name}"
    kind = field.type
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        value = float(value)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
    elif kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
    elif kind == "tuple[int, ...]":
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise ConfigError(f"{name} must be a non-empty list of positive integers, got {value!r}")
        value = tuple(value)
    elif kind == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigError(f"{name} must be a list of non-empty strings")  # never echo: may hold tokens
        value = tuple(v.strip() for v in value)
    bounds = _RANGES.get((section, field.name))
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{name} must be between {bounds[0]} and {bounds[1]}, got {value!r}")
    return value


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config from parsed TOML; every section and key must be present and valid."""
    sections = {}
    for section, cls in _SECTIONS.items():
        table = raw.get(section)
        if not isinstance(table, dict):
            raise ConfigError(f"missing section [{section}]")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - set(fields))
        if unknown:
            raise ConfigError(f"unknown setting(s) in [{section}]: {', '.join(unknown)}")
        values = {}
        for name, field in fields.items():
            if name not in table:
                raise ConfigError(f"missing setting {section}.{name}")
            values[name] = _coerce(section, field, table[name])
        sections[section] = cls(**values)
    unknown_sections = sorted(set(raw) - set(_SECTIONS))
    if unknown_sections:
        raise ConfigError(f"unknown section(s): {', '.join(unknown_sections)}")
    config = Config(**sections)
    _check_cross_field(config)
    return config


def _check_cross_field(config: Config) -> None:
    check_tokens("auth.tokens", config.auth.tokens)
    check_tokens("auth.admin_tokens", config.auth.admin_tokens)
    for proxy in config.auth.trusted_proxies:
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            raise ConfigError(f"auth.trusted_proxies must list IP addresses, got {proxy[:60]!r}") from None
    context_s, _ = config.cut_joins(config.inference.engine)
    needed = config.endpointing.max_segment_s + config.audio.preroll_ms / 1000 + context_s + 1
    if config.audio.ring_buffer_s < needed:
        raise ConfigError(
            f"audio.ring_buffer_s must be at least max_segment_s + preroll + the engine's context_s + 1 s "
            f"({needed:g}), got {config.audio.ring_buffer_s:g}"
        )
    ep = config.endpointing
    if config.long_segment_s(config.inference.engine) and ep.long_silence_ms > ep.silence_ms:
        raise ConfigError(
            f"endpointing.long_silence_ms ({ep.long_silence_ms}) must not exceed silence_ms ({ep.silence_ms}): "
            f"it is the shorter pause that closes a long segment ({config.inference.engine}.long_segment_s)"
        )
    tls = (config.server.tls_cert_file, config.server.tls_key_file)
    if any(tls) and not all(tls):
        raise ConfigError("server.tls_cert_file and server.tls_key_file must be set together")
    for name, path in zip(("tls_cert_file", "tls_key_file"), tls):
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(f"server.{name} does not exist: {path}")
    if config.inference.backend not in ("local", "ray"):
        raise ConfigError(f"inference.backend must be 'local' or 'ray', got {config.inference.backend!r}")
    if config.inference.ray_max_replicas < config.inference.ray_min_replicas:
        raise ConfigError("inference.ray_max_replicas must be at least inference.ray_min_replicas")
    if not config.inference.ray_app.strip():
        raise ConfigError("inference.ray_app must name the pool's Ray Serve application")
    if config.inference.engine not in ENGINES:
        raise ConfigError(f"inference.engine must be one of {ENGINES}, got {config.inference.engine!r}")
    for name in config.jobs.engines:
        if name not in ENGINES:
            raise ConfigError(f"jobs.engines may list {ENGINES}, got {name[:40]!r}")
    if len(set(config.jobs.engines)) != len(config.jobs.engines):
        raise ConfigError(f"jobs.engines lists an engine twice: {list(config.jobs.engines)}")
    if not _valid_device(config.inference.device):
        raise ConfigError(f"inference.device must be auto, cpu, cuda, cuda:N or mps, got {config.inference.device!r}")
    if config.funasr.hub not in ("ms", "hf"):
        raise ConfigError(f"funasr.hub must be 'ms' (ModelScope) or 'hf' (Hugging Face), got {config.funasr.hub!r}")
    if not config.funasr.offline_model:
        raise ConfigError("funasr.offline_model must name a model (a hub id or a local directory)")
    if config.inference.hotword_file and not Path(config.inference.hotword_file).expanduser().is_file():
        raise ConfigError(f"inference.hotword_file does not exist: {config.inference.hotword_file}")
    if config.whisper.chinese_script not in ("simplified", "as_decoded"):
        raise ConfigError(
            f"whisper.chinese_script must be 'simplified' or 'as_decoded', got {config.whisper.chinese_script!r}"
        )
    for code in (config.whisper.language, *config.whisper.auto_languages):
        if not (code.isascii() and code.isalpha() and 2 <= len(code) <= 8):
            raise ConfigError(f"whisper.language and whisper.auto_languages take codes such as 'en', got {code[:20]!r}")
    code = config.funasr.language
    if not (code.isascii() and code.isalpha() and 2 <= len(code) <= 8):
        raise ConfigError(f"funasr.language takes a code such as 'zh' or 'auto', got {code[:20]!r}")
    url = config.cluster.postgres_url
    if url and not url.startswith(("postgresql://", "postgres://")):  # never echoed: it may hold a password
        raise ConfigError("cluster.postgres_url must be a postgresql:// URL, or empty for the embedded SQLite store")
    if config.cluster.redis_url and not config.cluster.redis_url.startswith(("redis://", "rediss://", "unix://")):
        # never echoed: it may hold a password
        raise ConfigError(
            "cluster.redis_url must be a redis://, rediss:// or unix:// URL, or empty (sessions in process)"
        )
    if config.whisper.compute_type not in ("auto", "int8", "int8_float16", "float16", "float32"):
        raise ConfigError(f"whisper.compute_type is not a CTranslate2 type: {config.whisper.compute_type!r}")


def _valid_device(device: str) -> bool:
    if device in ("auto", "cpu", "cuda", "mps"):
        return True
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def load(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Read a TOML file (config.toml by default) and apply {section: {key: value}} overrides."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    return from_dict(raw)
