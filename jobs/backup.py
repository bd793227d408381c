"""Consistent copy of the history database while the server runs: python -m jobs.backup DEST [--config F]."""

from __future__ import annotations

import argparse
import sys

from jobs.store import Store
from server import config as config_module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("destination", help="file to write (an SQLite database)")
    parser.add_argument("--config", default=None, help="config.toml naming jobs.db_path")
    args = parser.parse_args(argv)
    try:
        store = Store(config_module.load(args.config).jobs.db_path)
        store.backup(args.destination)
    except Exception as exc:  # one clear line for the operator
        print(f"error: backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {store.path} to {args.destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
