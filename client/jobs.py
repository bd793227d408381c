"""Transcribe files through the server's batch queue, with progress bars:

    python -m client.jobs talk1.mp3 talk2.m4a --url http://127.0.0.1:10095 --out results/ --format srt
    python -m client.jobs lecture.mp3 --engine funasr      # an engine the server loaded for files
    python -m client.jobs --list-engines
    python -m client.jobs --cancel JOB_ID                 # stop a queued or running job (what is done stays)

Uploads the files as one job, shows one tqdm bar per file (percent of audio done) and one for the
job, then writes each file's transcript to --out. A job survives a server restart: run
`python -m client.jobs --job ID` to follow (and download) it again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
from tqdm import tqdm

from text.hotwords import DEFAULT_WEIGHT, HotwordError, HotwordFileError, load_hotword_file, parse_hotwords_value

FORMATS = ("txt", "srt", "vtt", "json")


async def submit(session: aiohttp.ClientSession, url: str, files: list[Path], options: dict) -> str:
    # quote_fields=False: file names go as RFC 7578 says (UTF-8 in `filename`); aiohttp's default
    # percent-encodes them, and a server that keeps names as sent stored "%E4%BC%9A..." for "会...".
    form = aiohttp.FormData(quote_fields=False)
    for path in files:
        form.add_field("file", path.open("rb"), filename=path.name)
    form.add_field("options", json.dumps(options))
    async with session.post(f"{url}/api/jobs", data=form) as response:
        body = await response.json(content_type=None)
        if response.status != 201:
            raise SystemExit(f"error: the server refused the job ({response.status}): {body.get('error', body)}")
    print(f"job {body['job_id']}: transcribed by {body.get('engine') or 'the server default engine'}", file=sys.stderr)
    for name in body.get("duplicates", []):
        print(f"note: {name} is a duplicate of another file in this job; transcribed once", file=sys.stderr)
    return body["job_id"]


def parse_hotwords(text: str) -> dict[str, int]:
    """--hotwords as the server reads it (text/hotwords.py), so both may be combined."""
    try:
        parsed = parse_hotwords_value(text)
    except HotwordError as exc:
        raise SystemExit(f"error: --hotwords: {exc}") from None
    return {word: DEFAULT_WEIGHT if weight is None else weight for word, weight in parsed.items()}


async def follow(session: aiohttp.ClientSession, url: str, job_id: str) -> dict:
    bars: dict[int, tqdm] = {}
    overall = tqdm(total=100.0, desc=f"job {job_id}", unit="%", position=0, bar_format="{l_bar}{bar}| {n:.0f}%")
    try:
        while True:
            async with session.get(f"{url}/api/jobs/{job_id}") as response:
                if response.status != 200:
                    raise SystemExit(f"error: cannot read job {job_id} ({response.status})")
                job = await response.json()
            for index, file in enumerate(job["files"]):
                bar = bars.get(file["id"])
                if bar is None:
                    bar = bars[file["id"]] = tqdm(
                        total=100.0, desc=file["name"][:30], position=index + 1, bar_format="{l_bar}{bar}| {n:.0f}%"
                    )
                bar.n = file["percent"]
                bar.set_postfix_str(file["status"] if not file["error"] else f"failed: {file['error'][:60]}")
            overall.n = job["percent"]
            overall.set_postfix_str(f"ETA {job['eta_s']:.0f} s" if job.get("eta_s") else job["status"])
            for bar in (overall, *bars.values()):
                bar.refresh()
            if job["status"] in ("done", "failed", "cancelled"):
                return job
            await asyncio.sleep(0.5)
    finally:
        for bar in (*bars.values(), overall):
            bar.close()


async def download(session: aiohttp.ClientSession, url: str, job: dict, out: Path, fmt: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for file in job["files"]:
        if file["status"] != "done":
            print(f"{file['name']}: {file['error']}", file=sys.stderr)
            continue
        async with session.get(f"{url}/api/files/{file['id']}/export.{fmt}") as response:
            if response.status != 200:
                print(f"{file['name']}: the server answered {response.status}", file=sys.stderr)
                continue
            stem = Path(file["name"]).stem or "file"
            name, n = f"{stem}.{fmt}", 1
            while name.casefold() in used:  # two files of one name keep two transcripts
                n += 1
                name = f"{stem} ({n}).{fmt}"
            used.add(name.casefold())
            target = out / name
            target.write_bytes(await response.read())
            print(f"wrote {target}")


async def list_engines(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(f"{url}/api/engines") as response:
        body = await response.json(content_type=None)
        if response.status != 200:
            raise SystemExit(f"error: cannot list engines ({response.status}): {body.get('error', body)}")
    for engine in body["engines"]:
        default = "  (default: the live captions' engine)" if engine["name"] == body["default"] else ""
        print(f"{engine['name']}\t{engine['model']}{default}")


async def cancel(session: aiohttp.ClientSession, url: str, job_id: str) -> int:
    async with session.post(f"{url}/api/jobs/{job_id}/cancel") as response:
        body = await response.json(content_type=None)
        if response.status != 200:
            print(f"error: job {job_id} was not cancelled ({response.status}): {body.get('error', body)}",
                  file=sys.stderr)  # fmt: skip
            return 1
    done = sum(f["status"] == "done" for f in body["files"])
    print(f"job {job_id} cancelled; {done} of {len(body['files'])} file(s) had finished and keep their transcripts")
    return 0


async def run(args) -> int:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    url = args.url.rstrip("/")
    async with aiohttp.ClientSession(headers=headers) as session:
        if args.list_engines:
            await list_engines(session, url)
            return 0
        if args.cancel:
            return await cancel(session, url, args.cancel)
        if args.job:
            job_id = args.job
        else:
            missing = [f for f in args.files if not Path(f).is_file()]
            if missing or not args.files:
                raise SystemExit(f"error: no such file: {', '.join(missing)}" if missing else "error: name some files")
            options: dict[str, Any] = {"itn": not args.no_itn}
            if args.no_vad:
                options["vad"] = False
            if args.engine:
                options["engine"] = args.engine
            if args.language:
                options["language"] = args.language
            if args.hotwords_file:
                try:
                    options["hotwords"] = dict(load_hotword_file(args.hotwords_file))
                except HotwordFileError as exc:
                    raise SystemExit(f"error: {exc}") from None
            if args.hotwords:
                options["hotwords"] = {**options.get("hotwords", {}), **parse_hotwords(args.hotwords)}
            job_id = await submit(session, url, [Path(f) for f in args.files], options)
        job = await follow(session, url, job_id)
        if args.out:
            await download(session, url, job, Path(args.out), args.format)
    return 0 if all(f["status"] == "done" for f in job["files"]) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", help="audio or video files")
    parser.add_argument("--url", default="http://127.0.0.1:10095")
    parser.add_argument("--job", help="follow an existing job instead of submitting")
    parser.add_argument("--cancel", metavar="ID", help="cancel a queued or running job, then exit")
    parser.add_argument("--engine", help="engine for these files (see --list-engines); default: the live engine")
    parser.add_argument("--list-engines", action="store_true", help="print the engines the server offers, then exit")
    parser.add_argument("--language")
    parser.add_argument("--hotwords", help='"word1 word2", "word 30" (word and weight) or \'{"word": 30}\'')
    parser.add_argument(
        "--hotwords-file",
        metavar="PATH",
        help='FunASR\'s hotword file: "word" or "word weight" lines; UTF-8 (BOM or not) or GBK',
    )
    parser.add_argument("--no-itn", action="store_true")
    parser.add_argument(
        "--no-vad", action="store_true", help="clips cut beforehand: each file is one segment (cut at max_segment_s)"
    )
    parser.add_argument("--token", help="API token, when the server requires one")
    parser.add_argument("--out", help="folder for the transcripts")
    parser.add_argument("--format", choices=FORMATS, default="srt")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except aiohttp.ClientError as exc:
        print(f"error: cannot reach the server at {args.url}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
