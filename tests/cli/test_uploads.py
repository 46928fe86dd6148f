"""Files sent straight to S3 by `validate submit` and left out of `validate estimate` (cli/uploads.py): which
files go (the threshold, the service's inline limits learned from its 413), the PUTs (sent again after a 5xx),
what is shown; then the installed script against a live API on the embedded AWS: a single PUT judged as the
same file inline, a multipart upload, and refusals shown as problems."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from app.main import create_app
from app.settings import Settings
from cli.api import Api, ApiError, StorageError
from cli.display import LiveView, UploadView
from cli.inputs import LocalFile, idempotency_key, read_files
from cli.uploads import (
    DEFAULT_THRESHOLD,
    MIB,
    InlineLimits,
    Piece,
    Plan,
    parse_size,
    pieces_of,
    plan,
    put_piece,
    within_inline_limits,
)
from local.serving import ThreadedServer
from tests.cli.conftest import Invoke, cli_env, run_cli
from tests.support.stack import ADMIN, lines_document, make_user

RULES: list[str | dict[str, str]] = ['The file must not contain "secret".']


# --- which files go straight to S3 ---------------------------------------------------------------------
def local(name: str, size: int, read: bool = True) -> LocalFile:
    return LocalFile(name, Path(name), size, "0" * 64, b"x" * size if read else None)


@pytest.mark.parametrize(
    ("given", "size"),
    [("4194304", 4 * MIB), ("4M", 4 * MIB), ("4MiB", 4 * MIB), ("512k", 512 * 1024), ("1 GB", 1024**3), ("0", 0)],
)
def test_a_size_is_bytes_or_a_number_with_a_binary_unit(given: str, size: int) -> None:
    assert parse_size(given) == size


@pytest.mark.parametrize("given", ["", "4.5M", "-1", "4T", "M"])
def test_anything_else_is_not_a_size(given: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(given)


def test_files_above_the_threshold_go_to_s3_and_the_rest_inline_in_order() -> None:
    files = [local("a.txt", 10), local("big.log", 5 * MIB, read=False), local("b.txt", 4 * MIB)]

    chosen = plan(files, DEFAULT_THRESHOLD)

    assert [f.name for f in chosen.inline] == ["a.txt", "b.txt"]  # 4 MiB is not above 4 MiB
    assert [f.name for f in chosen.uploaded] == ["big.log"]
    assert [f.name for f in plan(files, 0).uploaded] == ["a.txt", "big.log", "b.txt"]


def test_the_services_inline_limits_send_more_files_to_s3_the_largest_first() -> None:
    files = [local("a.txt", 300), local("b.txt", 900), local("c.txt", 500), local("d.txt", 100)]

    per_file = plan(files, DEFAULT_THRESHOLD, InlineLimits(file_bytes=500))
    per_request = plan(files, DEFAULT_THRESHOLD, InlineLimits(request_bytes=800))

    assert [f.name for f in per_file.uploaded] == ["b.txt"]
    assert [f.name for f in per_request.inline] == ["a.txt", "d.txt"]  # 1800 bytes: b, then c, went
    assert sum(f.size for f in per_request.inline) <= 800


def refusal(status: int, **problem: Any) -> ApiError:
    body = {"title": "Payload too large", "detail": "too much", **problem}
    return ApiError(httpx.Response(status, json=body, request=httpx.Request("POST", "http://api/validations")))


def test_a_413_naming_an_inline_limit_uploads_what_it_leaves_out_and_sends_again() -> None:
    files = [local("a.txt", 300), local("b.txt", 900)]
    sent: list[Plan] = []
    moves: list[tuple[str, list[str]]] = []

    def send(chosen: Plan) -> str:
        sent.append(chosen)
        if any(f.size > 500 for f in chosen.inline):
            raise refusal(413, limit="max_file_bytes", limit_value=500)
        return "created"

    assert within_inline_limits(files, DEFAULT_THRESHOLD, send, lambda *move: moves.append(move)) == "created"
    assert [[f.name for f in p.uploaded] for p in sent] == [[], ["b.txt"]]
    assert moves == [("413 Payload too large: too much", ["b.txt"])]


@pytest.mark.parametrize(
    "refused",
    [
        refusal(413, limit="max_files", limit_value=1),  # not an inline limit: uploads count too
        refusal(413, limit="max_file_bytes", limit_value=1000),  # names a limit no inline file is above
        refusal(422, limit="max_file_bytes", limit_value=1),
    ],
)
def test_any_other_refusal_is_the_commands_error(refused: ApiError) -> None:
    def send(chosen: Plan) -> str:
        raise refused

    with pytest.raises(ApiError) as raised:
        within_inline_limits([local("a.txt", 300)], DEFAULT_THRESHOLD, send, lambda *_: None)
    assert raised.value is refused


def test_a_submission_with_uploads_gets_a_key_of_its_own_run(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("row 1\n")
    (tmp_path / "big.log").write_text("row\n" * 100)
    files = read_files([tmp_path / "a.txt", tmp_path / "big.log"], read_up_to=10)

    assert files[0].content == b"row 1\n" and files[1].content is None  # hashed a chunk at a time, not held
    assert files[1].sha256 == hashlib.sha256(b"row\n" * 100).hexdigest() and files[1].size == 400
    inline_key = idempotency_key(files, RULES)
    assert inline_key == idempotency_key(read_files([tmp_path / "a.txt", tmp_path / "big.log"]), RULES)
    with_uploads = {idempotency_key(files, RULES, None, [upload_id]) for upload_id in ("u1", "u2")}
    assert len(with_uploads) == 2 and inline_key not in with_uploads


# --- the PUTs -------------------------------------------------------------------------------------------
class Recorded:
    """A Progress that adds up what it hears."""

    def __init__(self) -> None:
        self.sent: dict[int, int] = {}
        self.lock = threading.Lock()

    def advance(self, index: int, sent: int) -> None:
        with self.lock:
            self.sent[index] = self.sent.get(index, 0) + sent

    def done(self, index: int, ticket: dict[str, Any]) -> None:
        pass


def storage(answers: list[httpx.Response], seen: list[httpx.Request]) -> Api:
    """An Api whose PUTs get `answers`, one each, in order."""

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return answers[len(seen) - 1]

    api = Api("http://api", "key")
    api.storage = httpx.Client(transport=httpx.MockTransport(handler))
    return api


def test_a_part_is_read_from_its_offset_and_put_again_after_a_5xx(tmp_path: Path) -> None:
    data = b"0123456789" * 300_000  # 3 MB: a few read chunks
    (tmp_path / "big.log").write_bytes(data)
    file = LocalFile("big.log", tmp_path / "big.log", len(data), "0" * 64, None)
    piece = Piece(0, 2, 1_000_000, 2_000_000, "http://bucket/big.log?partNumber=2", {})
    slow_down = httpx.Response(503, text="<Error><Code>SlowDown</Code><Message>Reduce your rate.</Message></Error>")
    seen: list[httpx.Request] = []
    progress = Recorded()

    etag = put_piece(
        storage([slow_down, httpx.Response(200, headers={"ETag": '"e2"'})], seen), file, piece, progress,
        threading.Event(), sleep=lambda _: None,
    )  # fmt: skip

    assert etag == '"e2"' and len(seen) == 2
    assert seen[1].content == data[1_000_000:3_000_000] and seen[1].headers["content-length"] == "2000000"
    assert "authorization" not in seen[1].headers  # the API key never goes to S3
    assert progress.sent == {0: 2_000_000}  # the first attempt's bytes taken back


def test_a_put_s3_refuses_is_not_sent_again_and_names_the_file_and_s3s_reason(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"abc")
    file = LocalFile("a.log", tmp_path / "a.log", 3, "0" * 64, None)
    piece = Piece(0, None, 0, 3, "http://bucket/a.log", {"x-amz-tagging": "upload=pending"})
    bad_digest = httpx.Response(
        400, text="<Error><Code>BadDigest</Code><Message>The SHA256 you specified did not match.</Message></Error>"
    )
    seen: list[httpx.Request] = []

    with pytest.raises(StorageError) as raised:
        put_piece(storage([bad_digest], seen), file, piece, Recorded(), threading.Event(), sleep=lambda _: None)

    assert len(seen) == 1 and seen[0].headers["x-amz-tagging"] == "upload=pending"
    assert raised.value.message == ("Cannot upload a.log to S3: 400 BadDigest: The SHA256 you specified did not match.")


def test_a_multipart_tickets_parts_are_consecutive_slices_of_the_file() -> None:
    ticket = {
        "kind": "multipart",
        "parts": [{"number": 1, "size": 5, "url": "u1"}, {"number": 2, "size": 5, "url": "u2"},
                  {"number": 3, "size": 2, "url": "u3"}],
    }  # fmt: skip

    assert [(p.number, p.offset, p.size, p.url) for p in pieces_of(4, ticket)] == [
        (1, 0, 5, "u1"),
        (2, 5, 5, "u2"),
        (3, 10, 2, "u3"),
    ]


# --- what is shown --------------------------------------------------------------------------------------
def test_outside_a_terminal_an_upload_is_a_line_when_it_starts_and_when_it_is_complete() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=False, width=160)

    with UploadView(console, [("big.log", 12 * MIB), ("b.csv", 5 * MIB)]) as view:
        view.advance(0, 12 * MIB)
        view.done(0, {"kind": "multipart", "upload_id": "u1", "parts": [{}, {}]})
        view.done(1, {"kind": "single", "upload_id": "u2"})

    assert view.progress is None
    assert screen.getvalue().splitlines() == [
        "Uploading 2 files (17.0 MiB) straight to S3",
        "Uploaded big.log (12.0 MiB, 2 parts): upload u1",
        "Uploaded b.csv (5.0 MiB): upload u2",
    ]


def test_in_a_terminal_each_upload_has_a_bar_of_bytes_sent() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=120)

    with UploadView(console, [("big.log", 12 * MIB)]) as view:
        view.advance(0, 5 * MIB)
        assert view.progress is not None
        (task,) = view.progress.tasks
        assert (task.completed, task.total, task.visible) == (5 * MIB, 12 * MIB, True)
        view.done(0, {"kind": "single", "upload_id": "u1"})
        assert task.visible is False  # its line replaces it


def test_an_uploaded_files_bar_counts_parts_it_does_not_know_yet() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system=None, width=120)
    validation = {
        "id": "0123456789abcdef",
        "status": "RUNNING",
        "files": [{"name": "a.txt", "parts": 1}, {"name": "big.log", "parts": 0, "planned": False}],
    }

    with LiveView(console, validation) as view:
        assert view.progress is not None
        assert [t.total for t in view.progress.tasks] == [1, 1, None]
        assert "1 parts (and those of 1 uploaded file, counted as the run starts)" in screen.getvalue()


# --- the installed script against a live API ------------------------------------------------------------
@pytest.fixture
def serve(settings: Settings) -> Iterator[Callable[..., str]]:
    """`serve(**overrides)`: the API over real HTTP with these settings; its URL. Quick stream polls."""
    servers: list[ThreadedServer] = []

    def start(**overrides: Any) -> str:
        fast = {"sse_poll_seconds": 0.2, "sse_retry_millis": 100}
        server = ThreadedServer(create_app(settings.model_copy(update={**fast, **overrides})), lifespan="on").start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def user(url: str) -> tuple[str, dict[str, str]]:
    """A user of its own (uploads are their owner's only), with room for a few MiB of text; (key, headers)."""
    quota = {"capacity_tokens": 5_000_000, "refill_tokens_per_minute": 5_000_000, "max_running": 5}
    with httpx.Client(base_url=url, headers=ADMIN) as admin:
        _, headers = make_user(admin, quota=quota)
    return headers["Authorization"].removeprefix("Bearer "), headers


def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(RULES))
    return path


def uploaded_line(err: str, name: str) -> re.Match[str]:
    found = re.search(rf"^Uploaded {re.escape(name)} \(([^)]*)\): upload (\w+)$", err, re.MULTILINE)
    assert found, err
    return found


@pytest.mark.slow(25)
def test_a_file_above_the_threshold_is_put_to_s3_and_judged_as_the_same_file_inline(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    url = serve()
    key, headers = user(url)
    log = tmp_path / "app.log"
    log.write_text(lines_document(300, marker_every=100))  # "secret" on lines 100, 200 and 300; several parts
    rules = rules_file(tmp_path)

    inline = run_cli("submit", str(log), "--rules", str(rules), "--wait", "-f", "json", env=cli_env(url, key))
    env = {**cli_env(url, key), "VALIDATE_UPLOAD_THRESHOLD": "1K"}
    uploaded = run_cli("submit", str(log), "--rules", str(rules), "--wait", "-f", "json", env=env)

    assert (inline.returncode, uploaded.returncode) == (1, 1), uploaded.stderr  # a rule failed, in both
    assert "straight to S3" not in inline.stderr
    sent = uploaded_line(uploaded.stderr, "app.log")
    upload_id = sent[2]
    assert uploaded.stderr.startswith(f"Uploading 1 file ({sent[1]}) straight to S3\n")
    first, second = json.loads(inline.stdout), json.loads(uploaded.stdout)  # stdout: the results alone
    assert first["validation"]["files"][0].get("upload_id") is None
    assert second["validation"]["files"][0]["upload_id"] == upload_id
    assert first["validation"]["id"] != second["validation"]["id"]
    assert [r["rules"] for r in second["results"]] == [r["rules"] for r in first["results"]]
    assert [f["line"] for f in second["results"][0]["rules"][0]["findings"]] == [100, 200, 300]
    shown = httpx.get(f"{url}/uploads/{upload_id}", headers=headers).json()
    assert (shown["kind"], shown["state"], shown["size"]) == ("single", "uploaded", log.stat().st_size)
    assert shown["sha256"] == hashlib.sha256(log.read_bytes()).hexdigest()

    # A dry run covers the inline files only: the file above the threshold is left out, and named.
    small = tmp_path / "small.txt"
    small.write_text("row 1: plain\n")
    estimated = run_cli("estimate", str(small), str(log), "--rules", str(rules), "--json", env=env)
    assert estimated.returncode == 0, estimated.stderr
    assert json.loads(estimated.stdout)["files"] == 1
    assert estimated.stderr.startswith(f"Not estimated: app.log ({sent[1]}). A dry run covers files sent inline")
    alone = run_cli("estimate", str(log), "--rules", str(rules), env=env)
    assert alone.returncode == 3 and alone.stdout == ""
    assert alone.stderr.startswith("validate: Nothing to estimate: a dry run covers files sent inline only")


@pytest.mark.slow(35)
def test_a_file_above_the_services_multipart_threshold_goes_up_in_parts(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    # Parts of 5 MiB (S3's smallest); long runs of spaces keep the text to few tokens, big model parts to few calls.
    url = serve(upload_multipart_threshold_bytes=5 * MIB, upload_part_bytes=5 * MIB, part_max_tokens=8000)
    key, headers = user(url)
    line = " " * 1000 + "x\n"
    count = 5 * MIB // len(line) + 100  # just over one part
    secret_at = count - 20  # in the second part
    big = tmp_path / "big.log"
    big.write_text("".join("the secret\n" if i == secret_at else line for i in range(1, count + 1)))

    done = run_cli(
        "submit", str(big), "--rules", str(rules_file(tmp_path)), "--upload-threshold", "1M", "--wait",
        "-f", "json", env=cli_env(url, key), timeout=300,
    )  # fmt: skip

    assert done.returncode == 1, done.stderr
    sent = uploaded_line(done.stderr, "big.log")
    assert sent[1].endswith(", 2 parts")
    shown = httpx.get(f"{url}/uploads/{sent[2]}", headers=headers).json()
    assert (shown["kind"], shown["state"], shown["size"]) == ("multipart", "uploaded", big.stat().st_size)
    answer = json.loads(done.stdout)
    assert answer["validation"]["status"] == "SUCCEEDED"
    (result,) = answer["results"]
    assert [f["line"] for f in result["rules"][0]["findings"]] == [secret_at]  # the parts joined in order


@pytest.mark.slow(12)
def test_refusals_of_the_upload_path_are_shown_as_problems_and_inline_limits_are_honoured(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    url = serve(max_file_bytes=1024, max_upload_bytes=4096)
    key, headers = user(url)
    rules = rules_file(tmp_path)
    big = tmp_path / "big.log"
    big.write_text(lines_document(200))  # about 5 KB: above MAX_UPLOAD_BYTES
    size = big.stat().st_size
    medium = tmp_path / "medium.log"
    medium.write_text(lines_document(60))  # about 1.4 KB: above MAX_FILE_BYTES, under MAX_UPLOAD_BYTES

    refused = run_cli("submit", str(big), "--rules", str(rules), "--upload-threshold", "1K", env=cli_env(url, key))

    assert (refused.returncode, refused.stdout) == (3, "")
    assert refused.stderr.splitlines()[-1] == (
        f"validate: 413 Payload too large: File 'big.log' is {size} bytes; the limit is 4096 bytes per uploaded file."
    )

    # Under the default threshold medium.log goes inline, which this service refuses (413 naming
    # max_file_bytes): the CLI uploads it instead and submits again.
    honoured = run_cli("submit", str(medium), "--rules", str(rules), env=cli_env(url, key))

    assert honoured.returncode == 0, honoured.stderr
    vid = honoured.stdout.strip()
    lines = honoured.stderr.splitlines()
    assert re.fullmatch(
        r"The service refused the inline files \(413 Payload too large: File 'medium\.log' is \d+ bytes; the limit "
        r"is 1024 bytes per file\.\); uploading medium\.log instead\.",
        lines[0],
    ), lines
    upload_id = uploaded_line(honoured.stderr, "medium.log")[2]
    validation = httpx.get(f"{url}/validations/{vid}", headers=headers).json()
    assert [f.get("upload_id") for f in validation["files"]] == [upload_id]

    # An estimate leaves such a file out, and says so.
    small = tmp_path / "small.txt"
    small.write_text("row 1: plain\n")
    estimated = run_cli("estimate", str(small), str(medium), "--rules", str(rules), "--json", env=cli_env(url, key))
    assert estimated.returncode == 0, estimated.stderr
    assert json.loads(estimated.stdout)["files"] == 1
    refusal, left_out = estimated.stderr.splitlines()[:2]
    assert refusal.endswith("bytes per file.); leaving medium.log out.")
    assert left_out.startswith("Not estimated: medium.log (1.4 KiB).")


def test_an_s3_refusal_of_a_put_is_shown_with_s3s_reason(
    serve: Callable[..., str], invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file changes between the SHA-256 the CLI declared and its PUT: S3 refuses the bytes (BadDigest)."""
    url = serve()
    key, _ = user(url)
    log = tmp_path / "app.log"
    log.write_text("row 1: plain\n" * 200)
    declare = Api.declare_uploads

    def declared_then_changed(api: Api, files: list[LocalFile]) -> list[dict[str, Any]]:
        tickets = declare(api, files)
        log.write_text(log.read_text().replace("plain", "other"))  # the same size, other bytes
        return tickets

    monkeypatch.setattr(Api, "declare_uploads", declared_then_changed)

    code, out, err = invoke(
        "--url", url, "--api-key", key, "submit", str(log), "--rules", str(rules_file(tmp_path)),
        "--upload-threshold", "1K",
    )  # fmt: skip

    assert code == 3
    assert err.splitlines()[-1] == (
        "validate: Cannot upload app.log to S3: 400 BadDigest: "
        "The SHA256 you specified did not match the calculated checksum."
    )
