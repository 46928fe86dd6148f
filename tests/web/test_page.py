"""The web page end to end in headless Chromium (the distribution's package, driven by Playwright)
against a live API, the embedded AWS and the simulator.

`.ci/run` installs Chromium, so CI always runs this; on a machine without it the test says so and
skips. Playwright never downloads a browser here: it launches the system's `chromium`.
Screenshots go to build/test-artifacts/web/.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, FilePayload, Page, expect, sync_playwright

from app.main import create_app
from app.settings import PROJECT_ROOT, Settings
from local.serving import ThreadedServer
from tests.support.stack import ADMIN, ADMIN_KEY, HeldCalls, lines_document, wait_for

ARTIFACTS = PROJECT_ROOT / "build" / "test-artifacts" / "web"
RULES = 'The file must not contain "secret".\nEvery row has an id.'
TIMEOUT_MS = 60_000  # a bound for a loaded machine, never an assertion of speed

# Every CSP violation the page causes, recorded by the page itself before any of its scripts run.
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI));
"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium not installed: .ci/run installs Debian's `chromium`; the page cannot be checked here")
    return found


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """The API over real HTTP; small parts (so one file has several), quick stream polls, and a
    DELETE that answers CANCELLING at once (the page reads until the stop settles)."""
    overrides = {"part_max_tokens": 60, "sse_poll_seconds": 0.2, "sse_retry_millis": 100, "cancel_settle_seconds": 0}
    server = ThreadedServer(create_app(settings.model_copy(update=overrides)), lifespan="on").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def page(served: str) -> Iterator[tuple[Page, list[str]]]:
    """A fresh browser page, and the console errors and uncaught exceptions it logs."""
    executable = chromium()
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            context.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            view = context.new_page()
            view.add_init_script(CSP_RECORDER)

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    errors.append(message.text)

            view.on("console", on_console)
            view.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
            view.goto(served + "/")
            try:
                yield view, errors
            finally:
                shot(view, "last.png")  # where the test ended, passed or not
                (ARTIFACTS / "console-errors.txt").write_text("\n".join(errors))
        finally:
            browser.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def fill_the_form(page: Page, files: dict[str, str]) -> None:
    """The page's form for a new validation, with these files and the rules."""
    page.get_by_role("link", name="New validation").click()
    payloads: list[FilePayload] = [
        {"name": name, "mimeType": "text/plain", "buffer": text.encode()} for name, text in files.items()
    ]
    page.get_by_label("Files").set_input_files(payloads)
    page.get_by_label("Rules").fill(RULES)


def submit_through_the_page(page: Page, files: dict[str, str], filled: bool = False) -> str:
    """Upload files and the rules with the page's form; the id of the validation it opens."""
    if not filled:
        fill_the_form(page, files)
    page.get_by_role("button", name="Validate").click()
    expect(page.locator("h2 code")).to_have_text(uuid_like(), timeout=TIMEOUT_MS)
    return page.locator("h2 code").inner_text()


def uuid_like() -> re.Pattern[str]:
    return re.compile(r"^[0-9a-f-]{8,}$")


def file_progress(page: Page) -> dict[str, tuple[str, int, int]]:
    """Per file row: (state, parts settled, parts) as the page shows them."""
    shown = {}
    for row in page.locator("#files-table tbody tr").all():
        bar = row.locator("progress")
        shown[row.get_attribute("data-file") or ""] = (
            row.get_attribute("data-state") or "",
            int(bar.get_attribute("value") or 0),
            int(bar.get_attribute("max") or 0),
        )
    return shown


@pytest.mark.slow(20)
def test_sign_in_upload_watch_live_progress_cancel_and_administer_in_chromium(
    served: str, page: tuple[Page, list[str]], hold_calls: Callable[[int], HeldCalls]
) -> None:
    view, errors = page
    api = httpx.Client(base_url=served, headers=ADMIN, timeout=60)

    # Sign in: the key is checked with GET /me; the admin's menu appears.
    view.get_by_label("API key").fill(ADMIN_KEY)
    view.get_by_role("button", name="Sign in").click()
    expect(view.locator("#whoami")).to_have_text("admin (admin)")
    expect(view.get_by_role("link", name="Admin")).to_be_visible()
    assert view.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie]") == [0, 0, ""]

    # Two files: first their estimate (a dry run of the same body: nothing starts), as the API gives it.
    leaky = lines_document(24, marker_every=10)  # "secret" on lines 10 and 20; several parts at 60 tokens
    files = {"clean.csv": "id,note\n1,fine\n2,also fine\n", "leaky.txt": leaky}
    fill_the_form(view, files)
    view.get_by_role("button", name="Estimate").click()
    expected = api.post(
        "/validations",
        params={"dry_run": "true"},
        files=[("files", (name, text.encode(), "text/plain")) for name, text in files.items()],
        data={"rules": json.dumps(RULES.split("\n"))},
    ).json()
    estimate = view.locator("#estimate")
    calls, standard = expected["model_calls"], expected["cost_usd"]["standard"]
    expect(estimate.locator('[data-estimate="model-calls"]')).to_have_text(
        f"{calls['total']} ({calls['parts']} for parts, {calls['combine']} to combine)"
    )
    expect(estimate.locator('[data-estimate="cost"]')).to_have_text(
        f"{dollars(standard['p50'])}–{dollars(standard['p90'])} at standard (p50–p90)"
    )
    expect(estimate.locator('[data-estimate="model"]')).to_have_text("simulator at the standard tier")
    expect(estimate.locator('[data-estimate="quota"]')).to_have_text("admit")  # the bootstrap admin: no quota
    expect(estimate.locator('[data-estimate="budget"]')).to_have_text("no budget")
    shot(view, "estimate.png")
    # The model and tier offered (GET /models): another tier is another estimate, priced at that tier.
    expect(view.get_by_label("Model").locator("option")).to_have_text(["simulator (default)"])
    expect(view.get_by_label("Tier").locator("option")).to_have_text(
        ["standard", "flex (half price, slower)", "batch (half price, within 24 h)"]
    )
    view.get_by_label("Tier").select_option("flex")
    expect(estimate).to_be_hidden()  # stale
    view.get_by_role("button", name="Estimate").click()
    flex = expected["cost_usd"]["flex"]
    expect(estimate.locator('[data-estimate="model"]')).to_have_text("simulator at the flex tier")
    expect(estimate.locator('[data-estimate="cost"]')).to_have_text(
        f"{dollars(flex['p50'])}–{dollars(flex['p90'])} at flex (p50–p90)"
    )
    view.get_by_label("Tier").select_option("standard")
    assert api.get("/validations").json()["items"] == []
    view.get_by_label("Rules").fill(RULES + "\n")  # an estimate of other input is stale: gone
    expect(estimate).to_be_hidden()

    # Start it; the model answers the first two part calls and holds the rest.
    held = hold_calls(2)
    vid = submit_through_the_page(view, files, filled=True)
    parts = {f["name"]: f["parts"] for f in api.get(f"/validations/{vid}").json()["files"]}
    total = sum(parts.values())
    assert parts["clean.csv"] == 1 and parts["leaky.txt"] >= 3

    # Live over the event stream (opened with a stream token): two parts settled, the rest held.
    expect(view.locator("#progress")).to_contain_text(f"2/{total}")
    wait_for(lambda: held.waiting >= 1, timeout=60, what="a held model call")
    shown = file_progress(view)
    assert {name: mx for name, (_, _, mx) in shown.items()} == parts
    assert sum(settled for _, settled, _ in shown.values()) == 2  # each file's bar from `file_parts_settled`
    assert any(state in ("waiting", "running") for state, _, _ in shown.values())
    expect(view.locator("#status")).to_have_text("RUNNING")
    shot(view, "validation-running.png")

    held.release()
    expect(view.locator("#status")).to_have_text("SUCCEEDED")
    expect(view.locator("#live")).to_have_text("Live: ended")
    assert file_progress(view) == {
        "clean.csv": ("pass", 1, 1),
        "leaky.txt": ("fail", parts["leaky.txt"], parts["leaky.txt"]),
    }
    leaky_rules = view.locator('[data-result="leaky.txt"] tbody tr')
    expect(leaky_rules.nth(0).locator(".verdict")).to_have_text("failed")
    findings = leaky_rules.nth(0).locator("li")
    expect(findings).to_have_count(2)
    expect(findings).to_contain_text(  # each followed by the snippet of the line it cites
        ["line 10 " + finding_at(api, vid, 10), "line 20 " + finding_at(api, vid, 20)]
    )
    expect(leaky_rules.nth(1).locator(".verdict")).to_have_text("passed")
    expect(view.locator('[data-result="clean.csv"] .verdict')).to_have_text(["passed", "passed"])
    usage = api.get(f"/validations/{vid}").json()["usage"]
    expect(view.locator("#cost")).to_have_text(f"{dollars(usage['cost_usd'])} (simulator)")
    expect(view.locator("#tokens")).to_contain_text(f"({usage['cached_prompt_tokens']} prompt tokens cached)")
    shot(view, "validation.png")

    # An export, fetched with the key and saved from a Blob.
    with view.expect_download() as download:
        view.get_by_role("button", name="CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert {(r["file"], r["line"]) for r in rows if r["verdict"] == "failed"} == {
        ("leaky.txt", "10"),
        ("leaky.txt", "20"),
    }

    # Another validation, cancelled while its model call is held; once the call returns the
    # execution stops and the page shows CANCELLED; then retry is offered.
    held = hold_calls(0)
    second = submit_through_the_page(view, {"later.txt": "row 1\nrow 2\n"})
    wait_for(lambda: held.waiting == 1, timeout=60, what="the held model call")
    view.get_by_role("button", name="Cancel").click()
    expect(view.locator("#status")).to_have_text(re.compile("^CANCELL(ING|ED)$"))  # answered at once
    held.release()
    expect(view.locator("#status")).to_have_text("CANCELLED")
    expect(view.get_by_role("button", name="Retry")).to_be_enabled()
    assert api.get(f"/validations/{second}").json()["status"] == "CANCELLED"

    # The list shows both, newest first.
    view.get_by_role("link", name="Validations").click()
    expect(view.locator("#validations tbody tr")).to_have_count(2)
    assert [r.get_attribute("data-validation") for r in view.locator("#validations tbody tr").all()] == [second, vid]
    expect(view.locator(f'[data-validation="{vid}"] .status')).to_have_text("SUCCEEDED")

    # Admin: parallelism shown and set live; a user created (its key shown once, and working), then disabled.
    view.get_by_role("link", name="Admin").click()
    expect(view.locator("#parallelism-now")).to_contain_text("max parallelism 5")
    view.get_by_label("Max parallelism").fill("7")
    view.get_by_role("button", name="Save").click()
    expect(view.locator("#parallelism-now")).to_contain_text("max parallelism 7")
    assert api.get("/admin/parallelism").json()["max_parallelism"] == 7
    user_id = f"web-{uuid.uuid4().hex[:6]}"
    view.get_by_label("User id").fill(user_id)
    view.get_by_role("button", name="Create user").click()
    expect(view.locator("#issued-key code")).to_have_text(uuid_like_key())
    key = view.locator("#issued-key code").inner_text()
    assert httpx.get(f"{served}/me", headers={"Authorization": f"Bearer {key}"}).json()["user_id"] == user_id
    view.locator(f'[data-user="{user_id}"]').get_by_role("button", name="Disable").click()
    expect(view.locator(f'[data-user="{user_id}"] .user-state')).to_have_text("disabled")
    assert httpx.get(f"{served}/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    shot(view, "admin.png")

    # An API refusal is shown with its problem detail: a second user of that id is 409.
    view.get_by_label("User id").fill(user_id)
    view.get_by_role("button", name="Create user").click()
    expect(view.get_by_role("alert")).to_contain_text(f"User '{user_id}' already exists.")

    assert view.evaluate("() => window.__cspViolations") == []
    # The 409 above is the one error the browser logs (a failed request); nothing else.
    assert [e for e in errors if "status of 409" not in e] == []
    api.close()


def dollars(amount: float) -> str:
    """An amount as the page shows it: to the millionth, trailing zeros dropped down to cents."""
    whole, _, fraction = f"{amount:.6f}".rstrip("0").partition(".")
    return f"${whole}.{fraction:0<2}"


def finding_at(api: httpx.Client, vid: str, line: int) -> str:
    """The simulator's message for the finding at `line` of leaky.txt, as the results API has it."""
    results = api.get(f"/validations/{vid}/results").json()["items"]
    (leaky,) = [r for r in results if r["file"] == "leaky.txt"]
    (message,) = [f["message"] for r in leaky["rules"] for f in r["findings"] if f["line"] == line]
    return str(message)


def uuid_like_key() -> re.Pattern[str]:
    return re.compile(r"^vk_[A-Za-z0-9_-]{40,}$")


@pytest.mark.slow(10)
def test_the_rule_sets_page_lists_each_set_with_its_last_tests_precision_and_recall(
    served: str, page: tuple[Page, list[str]]
) -> None:
    view, errors = page
    api = httpx.Client(base_url=served, headers=ADMIN, timeout=60)
    tested, untested = f"web-{uuid.uuid4().hex[:6]}", f"web-{uuid.uuid4().hex[:6]}"
    rules = [
        {
            "id": "no-secret",
            "text": 'The file must not contain "secret".',
            "examples": [
                {"text": "the secret\n", "violates": True, "lines": [1]},
                {"text": "fine\n", "violates": False},
            ],
        }
    ]
    assert api.post("/rulesets", json={"name": tested, "rules": rules}).status_code == 201
    assert api.post("/rulesets", json={"name": untested, "rules": rules, "shared": True}).status_code == 201
    validation = api.post(f"/rulesets/{tested}/versions/1/test").json()
    wait_for(
        lambda: api.get(f"/validations/{validation['id']}").json()["status"] == "SUCCEEDED",
        timeout=60,
        what="the rule test",
    )
    listed = {r["name"]: r for r in api.get("/rulesets").json()["items"]}
    assert listed[tested]["last_test"]["reported"] is False  # nobody has read its report yet

    view.get_by_label("API key").fill(ADMIN_KEY)
    view.get_by_role("button", name="Sign in").click()
    view.get_by_role("link", name="Rule sets").click()

    row = view.locator(f'[data-ruleset="admin/{tested}"]')
    expect(row.locator(".precision")).to_have_text("1.00")  # the page read the report: computed and stored
    expect(row.locator(".recall")).to_have_text("1.00")
    expect(row.locator(".tested")).to_have_text("v1")
    expect(row.locator(".shared")).to_have_text("private")
    other = view.locator(f'[data-ruleset="admin/{untested}"]')
    expect(other.locator(".tested")).to_have_text("never")
    expect(other.locator(".shared")).to_have_text("shared")
    expect(other.locator(".precision")).to_have_text("—")
    shot(view, "rulesets.png")

    listed = {r["name"]: r for r in api.get("/rulesets").json()["items"]}
    assert (listed[tested]["last_test"]["reported"], listed[tested]["last_test"]["precision"]) == (True, 1.0)
    assert view.evaluate("() => window.__cspViolations") == [] and errors == []
    api.close()
