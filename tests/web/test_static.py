"""The web page's files: public, with a strict CSP and the other security headers, and written
so that CSP can stay strict (no inline script or style) and no key is ever stored."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.web import CONTENT_SECURITY_POLICY, PAGE_PREFIX, PUBLIC_PATHS, STATIC_DIR
from tests.support.stack import settings_of

TYPES = {".html": "text/html", ".js": "javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@pytest.fixture(scope="module")
def anonymous() -> Any:
    """The app without its lifespan (no AWS): the page's routes need none, and no key is sent."""
    return TestClient(create_app(settings_of()))


def assert_page_headers(answer: Any) -> None:
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == directives["script-src"] == directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"


def test_the_page_is_served_at_the_root_without_a_key_with_its_security_headers(anonymous: Any) -> None:
    answer = anonymous.get("/")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert_page_headers(answer)
    assert '<script type="module" src="/web/app.js">' in answer.text


@pytest.mark.parametrize("path", sorted(PUBLIC_PATHS - {"/"}))
def test_each_file_of_the_page_is_public_typed_and_carries_the_headers(anonymous: Any, path: str) -> None:
    answer = anonymous.get(path)

    assert answer.status_code == 200, answer.text
    assert TYPES[re.sub(r".*(\.\w+)$", r"\1", path)] in answer.headers["content-type"]
    assert_page_headers(answer)
    again = anonymous.get(path, headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304  # StaticFiles' revalidation (Cache-Control: no-cache)


def test_nothing_else_is_public(anonymous: Any) -> None:
    for path in (f"{PAGE_PREFIX}/missing.js", f"{PAGE_PREFIX}/", "/index.html", "/validations"):
        refused = anonymous.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["content-type"] == "application/problem+json"


def test_the_page_does_not_shadow_the_api_or_its_documents(anonymous: Any) -> None:
    paths = anonymous.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith(PAGE_PREFIX) for p in paths)
    assert anonymous.get("/docs").status_code == 200
    assert anonymous.get("/healthz").json() == {"status": "ok"}


class Markup(HTMLParser):
    """What in the page's HTML a strict CSP would block: inline scripts, styles, handlers; and every URL."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "style" or "style" in names or any(n.startswith("on") for n in names):
            self.inline.append(f"<{tag} {attrs}>")
        if tag == "script" and not names.get("src"):
            self.inline.append("<script> without src")
        self._in_script = tag == "script"
        self.urls += [v for n, v in attrs if n in ("src", "href") and v]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline script text")


def test_the_page_has_no_inline_script_or_style_and_loads_only_its_own_files() -> None:
    markup = Markup()
    markup.feed((STATIC_DIR / "index.html").read_text())

    assert markup.inline == []
    assert set(markup.urls) - {"#/validations", "#/new", "#/rulesets", "#/admin"} <= PUBLIC_PATHS
    imports = set()
    for script in STATIC_DIR.glob("*.js"):
        imports |= {f"{PAGE_PREFIX}/{name}" for name in re.findall(r'from "\./([\w.]+)"', script.read_text())}
    assert imports and imports <= PUBLIC_PATHS


def test_the_scripts_never_store_the_key_or_write_markup_from_strings() -> None:
    for script in STATIC_DIR.glob("*.js"):
        text = script.read_text()
        for banned in ("localStorage", "sessionStorage", "document.cookie", "indexedDB", "innerHTML", "eval("):
            assert banned not in text, f"{script.name} uses {banned}"
