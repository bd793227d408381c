"""The real server process on a stand-in engine: run_server.py's main (its argument parsing, config
loading, app.run, signal handling) with tests.job_engines.WholePhrasesEngine as the live engine.

    python -m tests.stand_in_server --phrases-file F [--decode-s S] <run_server.py arguments>

A stand-in, for the server-process tests (tests/test_lifecycle.py, test_jobs_resume.py,
test_jobs_cluster.py) whose point is the process - SIGTERM, SIGHUP, SIGKILL, leases, resume - and
where the words only show that each segment arrives once and in order: the stand-in hears the known
phrases whole, in milliseconds, where Whisper base takes 1.5-2 s of CPU a segment. Nothing of the
product is replaced but which engine object inference.loading.live_engine returns (the VAD, the
executor, the jobs, the store are the real ones). `F`: an .npz written by `write_phrases` - the
phrases' samples as the test's own audio has them, so the child hears exactly what the test sends."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tests.job_engines import WholePhrasesEngine


def write_phrases(path: Path, engine: WholePhrasesEngine) -> None:
    """`engine`'s known phrases, sample for sample, for --phrases-file."""
    texts = list(engine.phrases)
    clips = {f"clip_{i}": engine.phrases[text] for i, text in enumerate(texts)}
    np.savez(path, texts=np.array(texts), **clips)


def read_phrases(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as saved:
        return {str(text): saved[f"clip_{i}"] for i, text in enumerate(saved["texts"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, add_help=False)
    parser.add_argument("--phrases-file", required=True, help="known phrases (.npz from write_phrases)")
    parser.add_argument("--decode-s", type=float, default=0.0, help="seconds each model call takes")
    ours, rest = parser.parse_known_args(argv)
    engine = WholePhrasesEngine(read_phrases(ours.phrases_file), ours.decode_s)

    import run_server
    from inference import loading

    loading.live_engine = lambda config: engine  # the one thing replaced: no model is loaded
    return run_server.main(rest)


if __name__ == "__main__":
    sys.exit(main())
