"""Consistent copy of the history database while the server runs: python -m jobs.backup DEST [--config F].
The SQLite store only: a PostgreSQL store (cluster.postgres_url) is backed up with pg_dump."""

from __future__ import annotations

import argparse
import sys

from jobs.storage import open_store
from settings import config as config_module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("destination", help="file to write (an SQLite database)")
    parser.add_argument("--config", default=None, help="config.toml naming jobs.db_path")
    args = parser.parse_args(argv)
    try:
        store = open_store(config_module.load(args.config))  # PostgreSQL: refused, naming pg_dump
        store.backup(args.destination)
    except Exception as exc:  # one clear line for the operator
        print(f"error: backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {store.path} to {args.destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
