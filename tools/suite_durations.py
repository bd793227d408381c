"""Write tests/durations.json, the measured seconds of each test file, from a run's JUnit XML:

    .venv/bin/python -m pytest -q -n 3 --dist loadfile --junitxml=/tmp/suite.xml
    .venv/bin/python tools/suite_durations.py /tmp/suite.xml [/tmp/rerun.xml ...]

A file in a later XML (a rerun of some files alone) replaces what an earlier one said of it.

tests/conftest.py hands the files to the test workers longest first from this table (a file missing
from it counts as an average one), so the run does not end with one worker finishing a long file
alone. Times measured under `-n 3` include waiting for the other workers' CPU; only their order
matters. Rerun this when files are added or get much faster or slower.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

TABLE = Path(__file__).resolve().parent.parent / "tests" / "durations.json"


def file_seconds(junit_xml: str) -> dict[str, float]:
    """{"tests/test_x.py": seconds} summed over each file's test cases (setup and teardown included)."""
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit_xml).iter("testcase"):
        module = case.get("classname", "").split(".")
        if len(module) < 2 or not module[1].startswith("test_"):
            continue
        seconds[f"{module[0]}/{module[1]}.py"] += float(case.get("time") or 0.0)
    return dict(seconds)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    seconds: dict[str, float] = {}
    for junit_xml in argv:
        measured = file_seconds(junit_xml)
        if not measured:
            print(f"error: no test cases in {junit_xml}", file=sys.stderr)
            return 1
        seconds.update(measured)
    ordered = dict(sorted(((name, round(s, 1)) for name, s in seconds.items()), key=lambda kv: -kv[1]))
    TABLE.write_text(json.dumps(ordered, indent=1) + "\n")
    print(f"{TABLE}: {len(ordered)} files, {sum(ordered.values()):.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
