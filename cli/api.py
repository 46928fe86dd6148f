"""The service's HTTP API as the CLI uses it (httpx), and the presigned S3 URLs it hands out. Every failure
becomes one CliError line: the problem+json `detail` for an answer the API refused, S3's error code and
message for a PUT it refused, the reason for a connection that failed."""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import httpx
from httpx_sse import EventSource, connect_sse

from cli.inputs import LocalFile, Submission
from cli.outcome import CliError

# The server sends a heartbeat comment every 15 s (SSE_HEARTBEAT_SECONDS): a stream silent for
# longer than this is dead, and is resumed.
STREAM_READ_TIMEOUT = 60.0


def problem_of(answer: httpx.Response) -> dict[str, Any]:
    """The answer's RFC 9457 problem (its JSON object), or {}."""
    try:
        body = answer.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def problem_message(answer: httpx.Response) -> str:
    """`<status> <title>: <detail>` from an RFC 9457 answer (or the status line and a little body)."""
    problem = problem_of(answer)
    if "detail" in problem:
        title = problem.get("title") or answer.reason_phrase
        return f"{answer.status_code} {title}: {problem['detail']}"
    return _status_line(answer)


def _status_line(answer: httpx.Response) -> str:
    """`<status> <reason>: <the body's first 200 characters>`, for an answer in no format we know."""
    text = answer.text.strip().replace("\n", " ")[:200]
    return f"{answer.status_code} {answer.reason_phrase}" + (f": {text}" if text else "")


_S3_ERROR = re.compile(r"<Code>([^<]*)</Code>.*?<Message>([^<]*)</Message>", re.DOTALL)


def storage_message(answer: httpx.Response) -> str:
    """`<status> <Code>: <Message>` from S3's XML error (or the status line and a little body)."""
    found = _S3_ERROR.search(answer.text)
    if found:
        return f"{answer.status_code} {found[1]}: {found[2]}"
    return _status_line(answer)


def _body(submission: Submission, inline: list[LocalFile], upload_ids: list[str]) -> dict[str, Any]:
    """The body `POST /validations` takes: multipart with the inline files, the rules as JSON, the rule set's
    name and one `uploads` field per upload; JSON when every file was uploaded (no file part to send)."""
    if not inline:
        body: dict[str, Any] = {"rules": submission.rules, "uploads": upload_ids, **submission.lane}
        if submission.ruleset is not None:
            body["ruleset"] = submission.ruleset
        return {"json": body}
    files = [
        ("files", (f.name, f.content, mimetypes.guess_type(f.name)[0] or "application/octet-stream")) for f in inline
    ]
    data: dict[str, Any] = {"rules": json.dumps(submission.rules)} if submission.rules else {}
    if submission.ruleset is not None:
        data["ruleset"] = submission.ruleset
    if upload_ids:
        data["uploads"] = upload_ids
    data.update({name: str(value) for name, value in submission.lane.items()})  # form fields are text
    return {"files": files, "data": data}


class ApiError(CliError):
    def __init__(self, answer: httpx.Response) -> None:
        super().__init__(problem_message(answer))
        self.status = answer.status_code
        self.problem = problem_of(answer)  # its members (`limit`, `field`, ...) say what was refused


class StorageError(CliError):
    """A PUT to a presigned URL that failed: refused by S3 (`status`), or no answer (`status` None)."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        """No answer, or S3 busy or failing (500, 503 SlowDown): the same PUT may go through."""
        return self.status is None or self.status >= 500


class Api:
    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "validate-cli"},
            timeout=timeout,
        )
        # Presigned URLs carry their own authorization: the API key never goes to S3.
        self.storage = httpx.Client(headers={"User-Agent": "validate-cli"}, timeout=timeout)

    def close(self) -> None:
        self.http.close()
        self.storage.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def unreachable(self, exc: httpx.TransportError) -> CliError:
        reason = str(exc) or type(exc).__name__
        return CliError(f"Cannot reach the service at {self.base_url}: {reason}.")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer of a request; an error answer or a failed connection raises CliError."""
        try:
            answer = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
        if answer.status_code >= 400:
            raise ApiError(answer)
        return answer

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of a request; an error answer or a failed connection raises CliError."""
        return self.request(method, path, **kwargs).json()

    # --- validations ------------------------------------------------------------------------
    def submit(
        self, submission: Submission, inline: list[LocalFile], upload_ids: list[str], key: str | None
    ) -> dict[str, Any]:
        """`POST /validations`: the inline files, then the uploads in the order given."""
        headers = {"Idempotency-Key": key} if key else {}
        created: dict[str, Any] = self.call(
            "POST", "/validations", headers=headers, **_body(submission, inline, upload_ids)
        )
        return created

    def estimate(self, submission: Submission, inline: list[LocalFile]) -> dict[str, Any]:
        """`POST /validations?dry_run=true`: what the inline files would cost and meet now; nothing is started
        (a dry run reads no upload)."""
        estimate: dict[str, Any] = self.call(
            "POST", "/validations", params={"dry_run": "true"}, **_body(submission, inline, [])
        )
        return estimate

    def validation(self, validation_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/validations/{validation_id}")
        return found

    def results(self, validation_id: str) -> Iterator[dict[str, Any]]:
        """Every file's result, page by page."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = self.call("GET", f"/validations/{validation_id}/results", params=params)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def report(self, validation_id: str, report_format: str, out: IO[bytes]) -> None:
        """Stream the export (jsonl, csv, sarif) into `out` as it arrives."""
        try:
            with self.http.stream(
                "GET", f"/validations/{validation_id}/report", params={"format": report_format}
            ) as answer:
                if answer.status_code >= 400:
                    answer.read()
                    raise ApiError(answer)
                for part in answer.iter_bytes():
                    out.write(part)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc

    def cancel(self, validation_id: str) -> dict[str, Any]:
        answered: dict[str, Any] = self.call("DELETE", f"/validations/{validation_id}")
        return answered

    def retry(self, validation_id: str) -> dict[str, Any]:
        answered: dict[str, Any] = self.call("POST", f"/validations/{validation_id}/retry")
        return answered

    @contextmanager
    def events(self, validation_id: str, last_event_id: str | None) -> Iterator[EventSource]:
        """The validation's event stream, after `last_event_id` (the SSE resume header) when given.
        A refused request raises ApiError; a failed connection raises httpx.TransportError (resumable)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        timeout = httpx.Timeout(self.http.timeout.connect, read=STREAM_READ_TIMEOUT)
        with connect_sse(
            self.http, "GET", f"/validations/{validation_id}/events", headers=headers, timeout=timeout
        ) as source:
            if source.response.status_code >= 400:
                source.response.read()
                raise ApiError(source.response)
            yield source

    # --- uploads straight to S3 ---------------------------------------------------------------
    def declare_uploads(self, files: list[LocalFile]) -> list[dict[str, Any]]:
        """`POST /uploads`: per file, in order, a presigned PUT or a multipart upload's part URLs."""
        declared = [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in files]
        tickets: list[dict[str, Any]] = self.call("POST", "/uploads", json={"files": declared})["uploads"]
        return tickets

    def complete_upload(self, upload_id: str, parts: list[dict[str, Any]] | None) -> dict[str, Any]:
        """A multipart upload's parts joined (`parts`: number and ETag each), or a single PUT's object checked."""
        body = {"json": {"parts": parts}} if parts is not None else {}
        completed: dict[str, Any] = self.call("POST", f"/uploads/{upload_id}/complete", **body)
        return completed

    def put(self, url: str, headers: dict[str, str], size: int, content: Iterable[bytes]) -> str:
        """PUT `size` bytes, streamed from `content`, to a presigned URL with the headers it was signed with;
        the answer's ETag. Content-Length is sent as such (S3 takes no chunked body)."""
        try:
            answer = self.storage.put(url, headers={**headers, "Content-Length": str(size)}, content=content)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise StorageError(f"Cannot reach the storage at {httpx.URL(url).host}: {reason}.", None) from exc
        if answer.status_code >= 400:
            raise StorageError(storage_message(answer), answer.status_code)
        return str(answer.headers.get("ETag", ""))

    # --- rule sets --------------------------------------------------------------------------
    def push_ruleset(self, name: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(version, created): the set's next version, or version 1 of a new set; an unchanged push
        answers with the latest version (created False)."""
        try:
            answer = self.request("POST", f"/rulesets/{name}/versions", json=body)
        except ApiError as exc:
            if exc.status != 404:
                raise
            answer = self.request("POST", "/rulesets", json={"name": name, **body})
        version: dict[str, Any] = answer.json()
        return version, answer.status_code == 201

    def ruleset(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/rulesets/{name}", params={"limit": 1})
        return found

    def ruleset_version(self, name: str, version: int) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/rulesets/{name}/versions/{version}")
        return found

    def start_test(self, name: str, version: int, key: str | None) -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        started: dict[str, Any] = self.call("POST", f"/rulesets/{name}/versions/{version}/test", headers=headers)
        return started

    def test_report(self, name: str, version: int) -> dict[str, Any]:
        report: dict[str, Any] = self.call("GET", f"/rulesets/{name}/versions/{version}/test")
        return report

    def usage(self, period: str) -> dict[str, Any]:
        """`GET /me/usage`: the caller's spend per period, newest first, and their budget's state."""
        usage: dict[str, Any] = self.call("GET", "/me/usage", params={"period": period})
        return usage

    # --- admin ------------------------------------------------------------------------------
    def create_user(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.call("POST", "/admin/users", json=body)
        return created

    def user(self, user_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/admin/users/{user_id}")
        return found

    def patch_user(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        patched: dict[str, Any] = self.call("PATCH", f"/admin/users/{user_id}", json=body)
        return patched

    def rotate_key(self, user_id: str) -> dict[str, Any]:
        rotated: dict[str, Any] = self.call("POST", f"/admin/users/{user_id}/keys")
        return rotated

    def parallelism(self) -> dict[str, Any]:
        shown: dict[str, Any] = self.call("GET", "/admin/parallelism")
        return shown

    def set_parallelism(self, changes: dict[str, Any]) -> dict[str, Any]:
        shown: dict[str, Any] = self.call("PATCH", "/admin/parallelism", json=changes)
        return shown

    def models(self) -> dict[str, Any]:
        shown: dict[str, Any] = self.call("GET", "/admin/models")
        return shown

    def set_models(self, models: list[dict[str, Any]]) -> dict[str, Any]:
        shown: dict[str, Any] = self.call("PATCH", "/admin/models", json={"models": models})
        return shown
