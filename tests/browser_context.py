"""A Playwright browser context that fails the test if the page throws (shared by the page tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def checked_context(browser, **options) -> Iterator:
    # The pages speak the browser's language (client_js/i18n.js): English unless a test asks.
    options.setdefault("locale", "en-US")
    context = browser.new_context(**options)
    errors: list[str] = []
    context.on("weberror", lambda error: errors.append(str(error.error)))
    yield context
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
