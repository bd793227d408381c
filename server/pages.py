"""The pages and files browsers get: the captions page (at "/", where FunASR's clients open their
socket), the overlay, the files and admin pages, the status page and the JS library."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from server.guard import FD_ERRORS, is_upgrade

STATUS_PAGE = Path(__file__).with_name("status.html")
CLIENT_DIR = Path(__file__).resolve().parent.parent / "client_js"  # the page, overlay and JS library
PRIVATE_CLIENT_DIRS = ("node_modules", "test", "examples")  # under client_js/ but not for browsers
PRIVATE_CLIENT_FILES = ("package.json", "package-lock.json", "tsconfig.json")  # the JS tooling's, not the pages'
PUBLIC_SUFFIXES = (".js", ".css", ".html", ".ts", ".svg", ".png", ".ico", ".json")


def file_response(path: Path) -> web.FileResponse:
    """A file to send. aiohttp answers 404 for a file it cannot open, even one that is there when
    the server is out of file descriptors: opening it here first makes that the guard's 503."""
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        if exc.errno in FD_ERRORS:
            raise
    return web.FileResponse(path)


def client_page(name: str) -> web.FileResponse:
    page = CLIENT_DIR / name
    if not page.is_file():
        raise web.HTTPNotFound(text=f"page not installed (client_js/{name})")
    return file_response(page)


class Pages:
    def __init__(self, websocket: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        """`websocket`: the caption socket's handler, for upgrades to "/"."""
        self._websocket = websocket

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.root)
        app.router.add_get("/status", self.status_page)
        app.router.add_get("/overlay", self.overlay)
        app.router.add_get("/files", self.files_page)
        app.router.add_get("/admin", self.admin_page)
        app.router.add_get("/client_js/{path:.+}", self.client_file)

    async def root(self, request: web.Request) -> web.StreamResponse:
        # FunASR's clients connect to "/" with no path; browsers get the captions page there.
        if is_upgrade(request):
            return await self._websocket(request)
        page = CLIENT_DIR / "index.html"
        return file_response(page if page.is_file() else STATUS_PAGE)

    async def client_file(self, request: web.Request) -> web.StreamResponse:
        """The page's and overlay's own files and the JS library; nothing else under client_js/."""
        name = request.match_info["path"]
        if "\x00" in name:  # %00: no file has it, and Path would raise
            raise web.HTTPNotFound()
        relative = Path(name)
        target = (CLIENT_DIR / relative).resolve()
        if (
            not target.is_relative_to(CLIENT_DIR)
            or relative.parts[0] in PRIVATE_CLIENT_DIRS
            or relative.name in PRIVATE_CLIENT_FILES
            or any(part.startswith(".") for part in relative.parts)
            or target.suffix not in PUBLIC_SUFFIXES
            or not target.is_file()
        ):
            raise web.HTTPNotFound()
        return file_response(target)

    async def status_page(self, request: web.Request) -> web.StreamResponse:
        return file_response(STATUS_PAGE)

    async def overlay(self, request: web.Request) -> web.StreamResponse:
        return client_page("overlay.html")

    async def files_page(self, request: web.Request) -> web.StreamResponse:
        return client_page("files.html")

    async def admin_page(self, request: web.Request) -> web.StreamResponse:
        return client_page("admin.html")
