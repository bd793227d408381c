"""Start the live caption server: python run_server.py [--config F] [--host H] [--port P] [--device D]
[--certfile C --keyfile K]."""

from __future__ import annotations

import argparse
import logging
import sys

from inference.allocator import pays_here, reuse_freed_memory
from inference.threads import one_blas_thread
from settings import config

log = logging.getLogger("run_server")


def main(argv: list[str] | None = None) -> int:
    one_blas_thread()  # before numpy loads (inference/threads.py)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=None, help="TOML config file (default: config.toml)")
    parser.add_argument("--host", default=None, help="interface to listen on")
    parser.add_argument("--port", type=int, default=None, help="TCP port (default 10095)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--certfile", default=None, help="PEM certificate: serve https/wss (server.tls_cert_file)")
    parser.add_argument("--keyfile", default=None, help="PEM private key for --certfile (server.tls_key_file)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config.load(
            args.config,
            {
                "server": {
                    "host": args.host,
                    "port": args.port,
                    "tls_cert_file": args.certfile,
                    "tls_key_file": args.keyfile,
                },
                "inference": {"device": args.device},
            },
        )
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Before anything starts a thread (the server's imports do: numpy's BLAS pool, torch; then the
    # decode thread), so that glibc keeps what one decode frees for the next (inference/allocator.py).
    if pays_here(cfg.inference) and reuse_freed_memory():
        log.info("memory: decode buffers are kept for reuse (glibc: one arena, no mmap; inference/allocator.py)")
    from server import app

    try:
        app.run(cfg)
    except Exception as exc:  # startup failures (device missing, port taken) get one clear line
        from inference.devices import DeviceUnavailable
        from inference.model_hub import ModelUnavailable
        from jobs.store import StoreError
        from text.hotwords import HotwordFileError

        if isinstance(exc, (DeviceUnavailable, ModelUnavailable, HotwordFileError, StoreError, OSError)):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
