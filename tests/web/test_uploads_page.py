"""The page sends files larger than its threshold straight to S3 (app/web/static/uploads.js), in headless
Chromium against a live API on the embedded AWS: a bar per file fed by the PUTs' upload progress, a
single PUT and a multipart upload, the validation then judging them beside the inline file; an
estimate that leaves them out and says so; and what the page says when the bucket hides ETag.

Multipart uploads start at 5 MiB here (S3's smallest part), so the multipart file is just over 5 MiB;
the browser's upload speed is throttled (DevTools network conditions) so the bars show bytes in flight.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, FilePayload, Page, expect, sync_playwright

from app.main import create_app
from app.settings import Settings
from local.serving import ThreadedServer
from tests.support.stack import ADMIN, Aws, make_user
from tests.web.test_page import CSP_RECORDER, TIMEOUT_MS, chromium, shot

MIB = 1024 * 1024
RULES = 'The file must not contain "secret".'
LINE = " " * 1000 + "x\n"  # long runs of spaces: megabytes of text in few tokens, so few model calls
UPLOAD_BYTES_PER_SECOND = 4 * MIB


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """The API over real HTTP with multipart uploads from 5 MiB and parts of 5 MiB; big model parts."""
    overrides = {
        "upload_multipart_threshold_bytes": 5 * MIB,
        "upload_part_bytes": 5 * MIB,
        "part_max_tokens": 8000,
        "sse_poll_seconds": 0.2,
        "sse_retry_millis": 100,
    }
    server = ThreadedServer(create_app(settings.model_copy(update=overrides)), lifespan="on").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def page(served: str) -> Iterator[tuple[Page, list[str]]]:
    """A fresh page with its upload speed throttled; the console errors and uncaught exceptions it logs."""
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            view = context.new_page()
            view.add_init_script(CSP_RECORDER)
            devtools = context.new_cdp_session(view)
            devtools.send("Network.enable")
            devtools.send(
                "Network.emulateNetworkConditions",
                {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": UPLOAD_BYTES_PER_SECOND},
            )

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    errors.append(message.text)

            view.on("console", on_console)
            view.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
            view.goto(served + "/")
            try:
                yield view, errors
            finally:
                shot(view, "uploads-last.png")
        finally:
            browser.close()


def text_of_lines(count: int, secret_at: int | None = None) -> bytes:
    return "".join("the secret\n" if i == secret_at else LINE for i in range(1, count + 1)).encode()


def choose(view: Page, files: dict[str, bytes]) -> None:
    view.get_by_role("link", name="New validation").click()
    payloads: list[FilePayload] = [{"name": n, "mimeType": "text/plain", "buffer": b} for n, b in files.items()]
    view.get_by_label("Files").set_input_files(payloads)
    view.get_by_label("Rules").fill(RULES)


def expose_etag_to(aws: Aws, bucket: str, origin: str) -> None:
    """The bucket's CORS rule as Terraform writes it for `api_origin`."""
    rule = {
        "AllowedMethods": ["PUT"],
        "AllowedOrigins": [origin],
        "AllowedHeaders": ["content-type", "x-amz-checksum-sha256", "x-amz-tagging"],
        "ExposeHeaders": ["ETag"],
        "MaxAgeSeconds": 3600,
    }
    aws.client("s3").put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})


@pytest.mark.slow(30)
def test_large_files_go_straight_to_s3_with_a_bar_each_then_are_judged_beside_the_inline_one(
    served: str, page: tuple[Page, list[str]], settings: Settings, aws: Aws
) -> None:
    view, errors = page
    with httpx.Client(base_url=served, headers=ADMIN, timeout=60) as admin:
        _, headers = make_user(
            admin, quota={"capacity_tokens": 5_000_000, "refill_tokens_per_minute": 5_000_000, "max_running": 5}
        )
    api = httpx.Client(base_url=served, headers=headers, timeout=60)
    single = text_of_lines(9 * MIB // 2 // len(LINE))  # 4.5 MiB: above the page's 4 MiB, one PUT
    parts = 5 * MIB // len(LINE) + 100
    multipart = text_of_lines(parts, secret_at=parts - 20)  # just over 5 MiB: two parts, the secret in the second
    files = {"notes.txt": b"row 1: plain\nrow 2: a secret\n", "single.log": single, "multipart.log": multipart}
    view.get_by_label("API key").fill(headers["Authorization"].removeprefix("Bearer "))
    view.get_by_role("button", name="Sign in").click()
    expect(view.locator("#whoami")).to_contain_text("(user)")

    # The estimate covers the inline file only (a dry run reads no upload), and names the others.
    choose(view, files)
    view.get_by_role("button", name="Estimate").click()
    expected = api.post(
        "/validations",
        params={"dry_run": "true"},
        files=[("files", ("notes.txt", files["notes.txt"], "text/plain"))],
        data={"rules": json.dumps([RULES])},
    ).json()
    calls = expected["model_calls"]
    expect(view.locator('#estimate [data-estimate="model-calls"]')).to_have_text(
        f"{calls['total']} ({calls['parts']} for parts, {calls['combine']} to combine)"
    )
    expect(view.locator("#not-estimated")).to_have_text(
        "Not estimated: single.log (4.5 MiB), multipart.log (5.1 MiB). An estimate covers files sent inline only; "
        "these go straight to storage."
    )

    # Without a CORS rule exposing ETag (the embedded AWS then answers any origin, exposing nothing), the
    # PUTs go through but a multipart upload cannot be completed: the page says why, and starts nothing.
    # (Local provisioning writes the rule for the API's own origin: taken off here.)
    rules = aws.client("s3").get_bucket_cors(Bucket=settings.bucket)["CORSRules"]
    assert [r["ExposeHeaders"] for r in rules] == [["ETag"]]
    aws.client("s3").delete_bucket_cors(Bucket=settings.bucket)
    view.get_by_role("button", name="Validate").click()
    expect(view.get_by_role("alert")).to_contain_text("shows no ETag: the bucket's CORS rule must expose it")
    assert api.get("/validations").json()["items"] == []

    # With Terraform's rule for the page's origin: each file's bar fills as its bytes go (throttled), then
    # the validation opens.
    expose_etag_to(aws, settings.bucket, served)
    view.get_by_role("button", name="Validate").click()
    bars = view.locator("#uploads progress")
    expect(bars).to_have_count(2)
    view.wait_for_function(  # bytes in flight, as upload.onprogress reports them
        "() => [...document.querySelectorAll('#uploads progress')].some(b => b.value > 0 && b.value < b.max)",
        polling=50,
    )
    shot(view, "uploading.png")
    expect(view.locator("h2 code")).to_have_text(re.compile(r"^[0-9a-f]{32}$"))
    vid = view.locator("h2 code").inner_text()

    validation = api.get(f"/validations/{vid}").json()
    assert [f["name"] for f in validation["files"]] == ["notes.txt", "single.log", "multipart.log"]  # inline first
    upload_ids = [f.get("upload_id") for f in validation["files"]]
    assert upload_ids[0] is None and None not in upload_ids[1:]
    shown = [api.get(f"/uploads/{upload_id}").json() for upload_id in upload_ids[1:]]
    assert [(u["kind"], u["state"], u["size"]) for u in shown] == [
        ("single", "uploaded", len(single)),
        ("multipart", "uploaded", len(multipart)),
    ]

    expect(view.locator("#status")).to_have_text("SUCCEEDED")
    states = {row.get_attribute("data-file"): row.get_attribute("data-state") for row in file_rows(view)}
    assert states == {"notes.txt": "fail", "single.log": "pass", "multipart.log": "fail"}
    finding = view.locator('[data-result="multipart.log"] .findings li')
    expect(finding).to_have_count(1)
    expect(finding).to_contain_text(f"line {parts - 20}")  # the parts joined in order
    shot(view, "uploaded-validation.png")

    assert view.evaluate("() => window.__cspViolations") == []
    assert errors == [], errors
    api.close()


def file_rows(view: Page) -> list[Any]:
    return list(view.locator("#files-table tbody tr").all())
