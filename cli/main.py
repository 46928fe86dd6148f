"""The `validate` commands (typer). Thin: parse, call the API, show the answer, return the exit code."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from cli import inputs, uploads
from cli.api import Api
from cli.display import (
    LiveView,
    UploadView,
    budget_line,
    estimate_table,
    failing_examples,
    report_line,
    results_table,
    rule_test_table,
    size_text,
    spend_table,
    status_table,
    usage_line,
    usd,
    verdict_line,
)
from cli.follow import follow
from cli.outcome import (
    PASSED,
    RULE_FAILED,
    TERMINAL,
    UNDECIDED,
    USAGE,
    VALIDATION_FAILED,
    CliError,
    below_thresholds,
    verdict_code,
)

try:  # typer >= 0.2x carries its own copy of click; its exceptions are these
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on the real click
    from click import ClickException  # type: ignore[assignment]  # the same class, from where older typer has it

DEFAULT_URL = "http://127.0.0.1:8000"
_VALIDATION_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_RULESET = re.compile(r"^[a-z0-9_-]{1,64}$")
_REFERENCE = re.compile(r"^([a-z0-9_-]{1,64})(?:@([1-9][0-9]{0,5}))?$")

app = typer.Typer(
    name="validate",
    help="Validate files against rules with the validation service. Exit codes: 0 every rule passed in every "
    "file, 1 some rule failed (`rules test`: a rule below a threshold), 2 the validation failed or was cancelled, "
    "3 usage, auth or connection errors, 4 no rule failed but some rule is undecided (the model's findings were "
    "not found in the text).",
    no_args_is_help=True,
    add_completion=False,
)
users_app = typer.Typer(help="Admin: users and their API keys.", no_args_is_help=True)
parallelism_app = typer.Typer(help="Admin: model-call parallelism and the TPM target (live, no redeploy).")
models_app = typer.Typer(help="Admin: the models validations may ask for, each with its own budget (live).")
rules_app = typer.Typer(help="Stored, versioned rule sets and their tests.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(parallelism_app, name="parallelism", no_args_is_help=True)
app.add_typer(models_app, name="models", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"
    SARIF = "sarif"


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class OnLimit(StrEnum):
    QUEUE = "queue"
    REJECT = "reject"


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"


class Tier(StrEnum):
    STANDARD = "standard"
    FLEX = "flex"
    BATCH = "batch"


class FlexFallback(StrEnum):
    STANDARD = "standard"
    FAIL = "fail"


@dataclass(frozen=True)
class Config:
    url: str
    api_key: str | None
    timeout: float

    def api(self) -> Api:
        if not self.api_key:
            raise CliError("No API key: set VALIDATE_API_KEY or pass --api-key.")
        if not self.url.startswith(("http://", "https://")):
            raise CliError(f"The service URL must start with http:// or https://, not {self.url!r}.")
        return Api(self.url, self.api_key, self.timeout)


def _validation_id(value: str) -> str:
    if not _VALIDATION_ID.match(value):
        raise typer.BadParameter("a validation id is 1-64 letters, digits and dashes")
    return value


def _user_id(value: str) -> str:
    if not _USER_ID.match(value):
        raise typer.BadParameter("a user id is 1-64 letters, digits and _ . @ -")
    return value


def _ruleset_name(value: str) -> str:
    if not _RULESET.match(value):
        raise typer.BadParameter("a rule set's name is 1-64 of a-z, 0-9, - and _")
    return value


def _reference(value: str | None) -> str | None:
    if value is not None and not _REFERENCE.match(value):
        raise typer.BadParameter("NAME or NAME@VERSION (name: 1-64 of a-z, 0-9, - and _; version from 1)")
    return value


ValidationIdArg = Annotated[
    str, typer.Argument(help="The validation's id.", callback=_validation_id, show_default=False)
]
UserIdArg = Annotated[str, typer.Argument(help="The user's id.", callback=_user_id, show_default=False)]
FormatOpt = Annotated[
    Format, typer.Option("--format", "-f", help="table, json, or the service's exports jsonl, csv, sarif.")
]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write the results here instead of stdout.", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="The API's answer as JSON.")]

stderr = Console(stderr=True, soft_wrap=True)  # messages stay one line each in a CI log


def _config(ctx: typer.Context) -> Config:
    config: Config = ctx.obj
    return config


@app.callback()
def configure(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", envvar="VALIDATE_URL", help="The service's base URL.")] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="VALIDATE_API_KEY", help="Your API key.", show_default=False),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for an answer.", min=1)] = 60.0,
) -> None:
    """Configuration comes from VALIDATE_URL and VALIDATE_API_KEY, or these options (before the command)."""
    ctx.obj = Config(url, api_key, timeout)


# --- showing results ------------------------------------------------------------------------------
def _open(path: Path, mode: str) -> IO[Any]:
    try:
        return path.open(mode, encoding=None if "b" in mode else "utf-8")
    except OSError as exc:
        raise CliError(f"Cannot write {path}: {exc.strerror or exc}.") from exc


def _write_results(api: Api, validation: dict[str, Any], report_format: Format, output: Path | None) -> int:
    """Results in `report_format` to stdout or `output`; the validation's exit code."""
    vid = str(validation["id"])
    results = list(api.results(vid))
    code = verdict_code(str(validation["status"]), results)
    with ExitStack() as stack:
        if report_format in (Format.TABLE, Format.JSON):
            text: IO[str] = stack.enter_context(_open(output, "w")) if output else sys.stdout
            if report_format is Format.TABLE:
                console = Console(file=text) if output else Console()
                console.print(results_table(validation, results))
                console.print(verdict_line(validation, results), highlight=False)
                console.print(usage_line(validation), highlight=False, soft_wrap=True)
            else:
                json.dump({"validation": validation, "results": results}, text, indent=2, ensure_ascii=False)
                text.write("\n")
        else:
            binary: IO[bytes] = stack.enter_context(_open(output, "wb")) if output else sys.stdout.buffer
            api.report(vid, report_format.value, binary)
            binary.flush()
    if code == UNDECIDED:  # otherwise only the table says why a job that found no failure exits non-zero
        stderr.print(
            f"Validation {vid}: no rule failed, but some rules are undecided (the model's findings could not be "
            "found in the text): exit 4.",
            highlight=False,
        )
    if validation["status"] not in TERMINAL:
        stderr.print(
            f"Validation {vid} is {validation['status']}: these results are partial. "
            f"`validate watch {vid}` waits for the verdict.",
            highlight=False,
        )
    return code


def _follow_and_report(
    api: Api, validation: dict[str, Any], report_format: Format, output: Path | None, quiet_before_run: int = 1
) -> int:
    vid = str(validation["id"])
    with LiveView(stderr, validation, quiet_before_run) as view:
        follow(api, vid, view.handle, lambda message: view.line(f"[yellow]{escape(message)}[/]"))
    return _write_results(api, api.validation(vid), report_format, output)


# --- validations ----------------------------------------------------------------------------------
PathsArg = Annotated[list[str], typer.Argument(help="Files, directories or globs.", show_default=False)]
RulesOpt = Annotated[
    str | None, typer.Option("--rules", "-r", help="Rules file, YAML or JSON.", show_default=False, metavar="FILE")
]
RulesetOpt = Annotated[
    str | None,
    typer.Option(
        "--ruleset",
        help="A stored rule set: NAME (its latest version) or NAME@VERSION; with --rules, both apply.",
        show_default=False,
        metavar="NAME[@V]",
        callback=_reference,
    ),
]


def _size(value: str | int) -> int:
    try:
        return uploads.parse_size(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="A model of `validate models show` (default: its default).", show_default=False),
]
TierOpt = Annotated[
    Tier | None,
    typer.Option(
        "--tier", help="The service tier (default: your quota's): flex and batch cost half.", show_default=False
    ),
]
FlexDeadlineOpt = Annotated[
    int | None,
    typer.Option(
        "--flex-deadline",
        min=1,
        metavar="SECONDS",
        help="flex: how long a call waits for capacity before --flex-fallback.",
        show_default=False,
    ),
]
FlexFallbackOpt = Annotated[
    FlexFallback | None,
    typer.Option(
        "--flex-fallback", help="flex past its deadline: ask at standard, or fail the part.", show_default=False
    ),
]


def _lane(
    model: str | None, tier: Tier | None, flex_deadline: int | None, flex_fallback: FlexFallback | None
) -> dict[str, str | int]:
    """The body's lane fields (none given: the service's defaults)."""
    if (flex_deadline is not None or flex_fallback is not None) and tier is not Tier.FLEX:
        raise CliError("--flex-deadline and --flex-fallback go with --tier flex.")
    fields = {
        "model": model,
        "tier": tier.value if tier else None,
        "flex_deadline_seconds": flex_deadline,
        "flex_fallback": flex_fallback.value if flex_fallback else None,
    }
    return {name: value for name, value in fields.items() if value is not None}


UploadThresholdOpt = Annotated[
    int,
    typer.Option(
        "--upload-threshold",
        envvar="VALIDATE_UPLOAD_THRESHOLD",
        parser=_size,
        metavar="SIZE",
        show_default=size_text(uploads.DEFAULT_THRESHOLD),
        help="Files larger than this go straight to S3 (POST /uploads) instead of inline: bytes, or with K, M, G "
        "(binary). 0: every file.",
    ),
]


def _say(message: str) -> None:
    stderr.print(message, markup=False, highlight=False)


def _refused_inline(then: str) -> Callable[[str, list[str]], None]:
    """What a command says when the service's inline limits move files to S3: `then` with their {names}."""
    return lambda refusal, names: _say(
        f"The service refused the inline files ({refusal}); {then.format(names=', '.join(names))}."
    )


def _submit(api: Api, submission: inputs.Submission, threshold: int, key: str | None) -> dict[str, Any]:
    """`POST /validations` with the small files inline and the others uploaded straight to S3 first (each
    once, even when the service's inline limits send more of them there: uploads.within_inline_limits)."""
    upload_ids: dict[str, str] = {}  # file name → its upload's id

    def send(plan: uploads.Plan) -> dict[str, Any]:
        new = [f for f in plan.uploaded if f.name not in upload_ids]
        if new:
            with UploadView(stderr, [(f.name, f.size) for f in new]) as view:
                upload_ids.update(zip((f.name for f in new), uploads.upload(api, new, view), strict=True))
        ids = [upload_ids[f.name] for f in plan.uploaded]
        return api.submit(submission, plan.inline, ids, key or submission.idempotency_key(ids))

    return uploads.within_inline_limits(submission.files, threshold, send, _refused_inline("uploading {names} instead"))


@app.command()
def submit(
    ctx: typer.Context,
    paths: PathsArg,
    rules: RulesOpt = None,
    ruleset: RulesetOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Show live progress until it ends; exit by verdict.")
    ] = False,
    report_format: FormatOpt = Format.TABLE,
    output: OutputOpt = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Default: a hash of the files and rules, so the same submission is one validation for 24 h "
            "(files uploaded straight to S3 add their new upload ids: one run's).",
            show_default=False,
        ),
    ] = None,
    upload_threshold: UploadThresholdOpt = uploads.DEFAULT_THRESHOLD,
    model: ModelOpt = None,
    tier: TierOpt = None,
    flex_deadline: FlexDeadlineOpt = None,
    flex_fallback: FlexFallbackOpt = None,
) -> int:
    """Submit files and rules (--rules, --ruleset or both); files above --upload-threshold are uploaded straight
    to S3 first. Prints the validation's id; with --wait, follows it and prints only the results."""
    lane = _lane(model, tier, flex_deadline, flex_fallback)
    submission = inputs.read_submission(paths, rules, ruleset, read_up_to=upload_threshold, lane=lane)
    with _config(ctx).api() as api:
        created = _submit(api, submission, upload_threshold, idempotency_key)
        vid = str(created["id"])
        if not wait:  # the id alone on stdout, for `ID=$(validate submit ...)`
            print(vid, flush=True)
            stderr.print(f"Submitted: {created['status']}. Follow it with `validate watch {vid}`.", highlight=False)
            return PASSED
        # With --wait stdout carries the results only (a SARIF or CSV redirected to a file stays valid).
        return _follow_and_report(api, created, report_format, output)


def _estimate(api: Api, submission: inputs.Submission, threshold: int) -> tuple[dict[str, Any], uploads.Plan]:
    """The dry run of the files `submit` would send inline (the API reads no upload in a dry run), and the plan;
    a CliError when every file would go straight to S3."""

    def send(plan: uploads.Plan) -> tuple[dict[str, Any], uploads.Plan]:
        if not plan.inline:
            raise CliError(
                "Nothing to estimate: a dry run covers files sent inline only, and `submit` uploads every one of "
                f"these straight to S3 (--upload-threshold {size_text(threshold)}, or the service's inline limits)."
            )
        return api.estimate(submission, plan.inline), plan

    return uploads.within_inline_limits(submission.files, threshold, send, _refused_inline("leaving {names} out"))


@app.command()
def estimate(
    ctx: typer.Context,
    paths: PathsArg,
    rules: RulesOpt = None,
    ruleset: RulesetOpt = None,
    as_json: JsonOpt = False,
    upload_threshold: UploadThresholdOpt = uploads.DEFAULT_THRESHOLD,
    model: ModelOpt = None,
    tier: TierOpt = None,
    flex_deadline: FlexDeadlineOpt = None,
    flex_fallback: FlexFallbackOpt = None,
) -> int:
    """What `submit` with these files and rules would cost and meet now (parts, calls, tokens, cost per tier,
    the quota and the budget, the time); nothing is stored, started or charged. A dry run covers the files sent
    inline only: those above --upload-threshold are left out, and named."""
    lane = _lane(model, tier, flex_deadline, flex_fallback)
    submission = inputs.read_submission(paths, rules, ruleset, read_up_to=upload_threshold, lane=lane)
    with _config(ctx).api() as api:
        answer, plan = _estimate(api, submission, upload_threshold)
    if as_json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        Console().print(estimate_table(answer))
    if plan.uploaded:
        left_out = ", ".join(f"{f.name} ({size_text(f.size)})" for f in plan.uploaded)
        _say(
            f"Not estimated: {left_out}. A dry run covers files sent inline only, and `submit` uploads these "
            f"straight to S3 (--upload-threshold {size_text(upload_threshold)}, or the service's inline limits): "
            f"the estimate is of the other {len(plan.inline)} of {len(submission.files)} files."
        )
    return PASSED


@app.command()
def watch(ctx: typer.Context, validation_id: ValidationIdArg, report_format: FormatOpt = Format.TABLE,
          output: OutputOpt = None) -> int:  # fmt: skip
    """Live progress of a validation until it ends, then its results; exit by verdict."""
    with _config(ctx).api() as api:
        return _follow_and_report(api, api.validation(validation_id), report_format, output)


@app.command()
def status(ctx: typer.Context, validation_id: ValidationIdArg, as_json: JsonOpt = False) -> int:
    """Status, progress, token usage and cost; once ended, the exit code says the verdict."""
    with _config(ctx).api() as api:
        validation = api.validation(validation_id)
        if as_json:
            print(json.dumps(validation, indent=2, ensure_ascii=False))
        else:
            Console().print(status_table(validation))
        if validation["status"] != "SUCCEEDED":
            return verdict_code(str(validation["status"]), [])
        return verdict_code("SUCCEEDED", api.results(validation_id))


@app.command()
def results(ctx: typer.Context, validation_id: ValidationIdArg, report_format: FormatOpt = Format.TABLE,
            output: OutputOpt = None) -> int:  # fmt: skip
    """Per-file, per-rule verdicts with findings: a table, JSON, or the service's JSON Lines, CSV and SARIF."""
    with _config(ctx).api() as api:
        return _write_results(api, api.validation(validation_id), report_format, output)


@app.command()
def cancel(ctx: typer.Context, validation_id: ValidationIdArg) -> int:
    """Cancel a queued or running validation (results already stored are kept)."""
    with _config(ctx).api() as api:
        validation = api.cancel(validation_id)
    print(f"{validation['id']} {validation['status']}")
    return PASSED


@app.command()
def retry(ctx: typer.Context, validation_id: ValidationIdArg,
          wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow the new run; exit by verdict.")] = False,
          report_format: FormatOpt = Format.TABLE, output: OutputOpt = None) -> int:  # fmt: skip
    """Rerun only the parts and files without a result, as a new run of the same validation."""
    with _config(ctx).api() as api:
        validation = api.retry(validation_id)
        started = f"{validation['id']} {validation['status']} (run {validation['run']})"
        if not wait:
            print(started, flush=True)
            return PASSED
        stderr.print(started, highlight=False)
        return _follow_and_report(api, validation, report_format, output, quiet_before_run=int(validation["run"]))


# --- cost -------------------------------------------------------------------------------------------
@app.command()
def usage(
    ctx: typer.Context,
    period: Annotated[Period, typer.Option(help="Spend per UTC day or month.")] = Period.MONTH,
    as_json: JsonOpt = False,
) -> int:
    """What you spent per UTC day or month (newest first) and your spend budget: max, what is left, when it
    resets, whether the 80% alert was sent."""
    with _config(ctx).api() as api:
        answer = api.usage(period.value)
    if as_json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
        return PASSED
    console = Console()
    if answer["items"]:
        console.print(spend_table(answer, period.value))
    else:
        console.print(f"No spend recorded per {period.value} yet.", highlight=False)
    console.print(budget_line(answer["budget"]), highlight=False, soft_wrap=True)
    return PASSED


# --- rule sets --------------------------------------------------------------------------------------
@rules_app.command("push")
def rules_push(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="Rules file (YAML or JSON) with ids and examples.", metavar="FILE")],
    name: Annotated[
        str, typer.Option("--name", "-n", help="The rule set's name.", show_default=False, callback=_ruleset_name)
    ],
    shared: Annotated[
        bool | None,
        typer.Option("--shared/--private", help="Admins: share the set with every user, or stop.", show_default=False),
    ] = None,
    as_json: JsonOpt = False,
) -> int:
    """Create a rule set (version 1) or add its next version; the same content as the latest is that version."""
    content = inputs.load_ruleset(path)
    body: dict[str, Any] = {"description": content.description, "rules": content.rules}
    if shared is not None:
        body["shared"] = shared
    with _config(ctx).api() as api:
        version, created = api.push_ruleset(name, body)
    if as_json:
        print(json.dumps(version, indent=2, ensure_ascii=False))
        return PASSED
    examples = sum(len(r["examples"]) for r in version["rules"])
    what = "created" if created else "unchanged (the same content as the latest version)"
    print(f"{version['reference']} {what}: {len(version['rules'])} rules, {examples} examples")
    return PASSED


def _version_of(api: Api, reference: str) -> dict[str, Any]:
    """The version NAME@V names, or NAME's latest."""
    match = _REFERENCE.match(reference)
    assert match is not None  # checked by the argument's callback
    name, number = match.group(1), match.group(2)
    if number is None:
        number = api.ruleset(name)["latest_version"]
    return api.ruleset_version(name, int(number))


@rules_app.command("test")
def rules_test(
    ctx: typer.Context,
    reference: Annotated[
        str,
        typer.Argument(help="NAME (its latest version) or NAME@VERSION.", metavar="NAME[@V]", callback=_reference),
    ],
    min_precision: Annotated[
        float | None,
        typer.Option(help="Exit 1 when a rule's precision is below this (0-1).", min=0, max=1, show_default=False),
    ] = None,
    min_recall: Annotated[
        float | None,
        typer.Option(help="Exit 1 when a rule's recall is below this (0-1).", min=0, max=1, show_default=False),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Default: one per version, so the same test within 24 h is answered by the first run.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> int:
    """Judge every example of a version, follow the test to its end, print each rule's counts, precision and
    recall; exit 1 when a rule is below a threshold."""
    with _config(ctx).api() as api:
        version = _version_of(api, reference)
        name, number = str(version["name"]), int(version["version"])
        key = idempotency_key or inputs.rule_test_key(str(version["owner"]), str(version["reference"]))
        validation = api.start_test(name, number, key)
        stderr.print(f"Testing {version['reference']}: validation {validation['id']}", highlight=False)
        with LiveView(stderr, validation) as view:
            follow(api, str(validation["id"]), view.handle, lambda m: view.line(f"[yellow]{escape(m)}[/]"))
        tested = api.test_report(name, number)
    report = tested.get("report")
    if report is None:
        raise CliError(f"The test of {version['reference']} has no report (status {tested.get('status')}).")
    if as_json:
        print(json.dumps(tested, indent=2, ensure_ascii=False))
    else:
        console = Console()
        console.print(rule_test_table(report))
        for line in failing_examples(report):
            console.print(line, highlight=False)
        console.print(report_line(report), highlight=False)
    if report["status"] != "SUCCEEDED":
        stderr.print(f"The test's validation {report['validation_id']} is {report['status']}: exit 2.", highlight=False)
        return VALIDATION_FAILED
    below = below_thresholds(report, min_precision, min_recall)
    for line in below:
        stderr.print(f"Below the threshold: {escape(line)}", highlight=False)
    return RULE_FAILED if below else PASSED


# --- admin: users -----------------------------------------------------------------------------------
def _show_user(user: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(user, indent=2))
        return
    quota = user["quota"]
    budget = quota.get("max_spend_usd")
    print(
        f"{user['user_id']}: role {user['role']}, {'disabled' if user['disabled'] else 'enabled'}, "
        f"quota {quota['capacity_tokens']} tokens (refill {quota['refill_tokens_per_minute']}/min, "
        f"{quota['max_running']} running), on limit {user['on_limit']}, "
        + (f"budget {usd(budget)} per {quota.get('spend_period', 'month')}" if budget is not None else "no budget")
    )
    if "api_key" in user:
        print(f"API key (shown once): {user['api_key']}")


def _max_spend(value: str | None) -> str | None:
    if value is None or value.lower() == "none":
        return value
    try:
        amount = float(value)
    except ValueError:
        amount = 0.0
    if not 0 < amount < float("inf"):
        raise typer.BadParameter("USD per period (more than 0), or `none` for no budget")
    return value


CapacityOpt = Annotated[int | None, typer.Option(help="Token bucket size.", show_default=False)]
RefillOpt = Annotated[int | None, typer.Option(help="Bucket refill.", show_default=False)]
MaxRunningOpt = Annotated[int | None, typer.Option(help="Validations at once.", show_default=False)]
OnLimitOpt = Annotated[
    OnLimit | None, typer.Option(help="Over the quota: queue the validation or refuse it (429).", show_default=False)
]
MaxSpendOpt = Annotated[
    str | None,
    typer.Option(
        help="Spend budget in USD per --spend-period (a submission past it is refused); `none`: no budget.",
        show_default=False,
        metavar="USD",
        callback=_max_spend,
    ),
]
SpendPeriodOpt = Annotated[
    Period | None, typer.Option(help="The budget's UTC calendar period (unless given: month).", show_default=False)
]


def _quota_changes(
    capacity_tokens: int | None,
    refill_tokens_per_minute: int | None,
    max_running: int | None,
    max_spend_usd: str | None,
    spend_period: Period | None,
) -> dict[str, Any]:
    """The quota fields the options give (`--max-spend-usd none`: the budget removed)."""
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "capacity_tokens": capacity_tokens,
            "refill_tokens_per_minute": refill_tokens_per_minute,
            "max_running": max_running,
        }.items()
        if v is not None
    }
    if max_spend_usd is not None:
        changes["max_spend_usd"] = None if max_spend_usd.lower() == "none" else float(max_spend_usd)
    if spend_period is not None:
        changes["spend_period"] = spend_period.value
    return changes


# A quota is whole (its token fields are required); these, given together, make one without a second call.
_TOKEN_FIELDS = ("capacity_tokens", "refill_tokens_per_minute", "max_running")


@users_app.command("create")
def users_create(
    ctx: typer.Context,
    user_id: UserIdArg,
    role: Annotated[Role, typer.Option(help="What the user may do.")] = Role.USER,
    capacity_tokens: CapacityOpt = None,
    refill_tokens_per_minute: RefillOpt = None,
    max_running: MaxRunningOpt = None,
    max_spend_usd: MaxSpendOpt = None,
    spend_period: SpendPeriodOpt = None,
    on_limit: OnLimitOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Create a user; prints its API key (shown once). Quota options not given take the service's defaults."""
    body: dict[str, Any] = {"user_id": user_id, "role": role.value}
    quota = _quota_changes(capacity_tokens, refill_tokens_per_minute, max_running, max_spend_usd, spend_period)
    whole = all(field in quota for field in _TOKEN_FIELDS)
    if whole:
        body["quota"] = quota
    if on_limit is not None:
        body["on_limit"] = on_limit.value
    with _config(ctx).api() as api:
        created = api.create_user(body)
        if quota and not whole:
            # Only the service knows its default quota: the new user's, with the options given on top, set
            # before anyone holds the key (so nothing runs under the defaults meanwhile).
            try:
                patched = api.patch_user(user_id, {"quota": {**created["quota"], **quota}})
            except CliError:
                _show_user(created, as_json)  # the key is shown once: never lost to a failed second call
                raise
            created = {**patched, "api_key": created["api_key"]}
        _show_user(created, as_json)
    return PASSED


@users_app.command("update")
def users_update(
    ctx: typer.Context,
    user_id: UserIdArg,
    capacity_tokens: CapacityOpt = None,
    refill_tokens_per_minute: RefillOpt = None,
    max_running: MaxRunningOpt = None,
    max_spend_usd: MaxSpendOpt = None,
    spend_period: SpendPeriodOpt = None,
    on_limit: OnLimitOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Change a user's quota, spend budget or policy: the options given; the rest stay as they are."""
    quota = _quota_changes(capacity_tokens, refill_tokens_per_minute, max_running, max_spend_usd, spend_period)
    body: dict[str, Any] = {"on_limit": on_limit.value} if on_limit is not None else {}
    if not quota and not body:
        raise CliError(
            "Nothing to update: give --capacity-tokens, --refill-tokens-per-minute, --max-running, "
            "--max-spend-usd, --spend-period or --on-limit."
        )
    with _config(ctx).api() as api:
        if quota:  # a quota is replaced whole: the current one with the options given on top
            body["quota"] = {**api.user(user_id)["quota"], **quota}
        _show_user(api.patch_user(user_id, body), as_json)
    return PASSED


@users_app.command("disable")
def users_disable(ctx: typer.Context, user_id: UserIdArg, as_json: JsonOpt = False) -> int:
    """Disable a user: their key stops working."""
    with _config(ctx).api() as api:
        _show_user(api.patch_user(user_id, {"disabled": True}), as_json)
    return PASSED


@users_app.command("enable")
def users_enable(ctx: typer.Context, user_id: UserIdArg, as_json: JsonOpt = False) -> int:
    """Enable a disabled user again."""
    with _config(ctx).api() as api:
        _show_user(api.patch_user(user_id, {"disabled": False}), as_json)
    return PASSED


@users_app.command("rotate")
def users_rotate(ctx: typer.Context, user_id: UserIdArg, as_json: JsonOpt = False) -> int:
    """Issue a new API key for a user; the old one stops working."""
    with _config(ctx).api() as api:
        _show_user(api.rotate_key(user_id), as_json)
    return PASSED


# --- admin: parallelism -----------------------------------------------------------------------------
def _show_parallelism(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(view, indent=2))
        return
    effective, usage = view["effective"], view["usage"]
    print(
        f"max-parallelism {view['max_parallelism']}, target-tpm {view['target_tpm']}, "
        f"target-rpm {view.get('target_rpm') or 'unset'}, throttle-threshold {view['throttle_threshold']}\n"
        f"budget {effective['tokens_per_window']} tokens per {effective['window_seconds']:g} s "
        f"(factor {effective['factor']:g}); used {usage['tokens_last_window']} in the last window, "
        f"{usage['calls_in_flight']} calls in flight"
    )


@parallelism_app.command("show")
def parallelism_show(ctx: typer.Context, as_json: JsonOpt = False) -> int:
    """The SSM values and what the TPM governor is doing with them."""
    with _config(ctx).api() as api:
        _show_parallelism(api.parallelism(), as_json)
    return PASSED


@parallelism_app.command("set")
def parallelism_set(
    ctx: typer.Context,
    max_parallelism: Annotated[int | None, typer.Option(help="Model calls in flight per validation, 1-500.")] = None,
    target_tpm: Annotated[int | None, typer.Option(help="Tokens per minute for the whole deployment.")] = None,
    target_rpm: Annotated[int | None, typer.Option(help="Requests per minute for the whole deployment.")] = None,
    throttle_threshold: Annotated[
        float | None, typer.Option(help="Share of target-tpm and target-rpm to use, 0.05-1.")
    ] = None,
    as_json: JsonOpt = False,
) -> int:
    """Change them live: running validations follow within seconds."""
    changes = {
        k: v
        for k, v in {
            "max_parallelism": max_parallelism,
            "target_tpm": target_tpm,
            "target_rpm": target_rpm,
            "throttle_threshold": throttle_threshold,
        }.items()
        if v is not None
    }
    if not changes:
        raise CliError("Nothing to set: give --max-parallelism, --target-tpm, --target-rpm or --throttle-threshold.")
    with _config(ctx).api() as api:
        _show_parallelism(api.set_parallelism(changes), as_json)
    return PASSED


# --- admin: models ----------------------------------------------------------------------------------
def _show_models(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(view, indent=2))
        return
    for model in view["models"]:
        budget = model["budget"]
        print(
            f"{model['name']}{' (default)' if model['default'] else ''}: target-tpm {model['target_tpm']}, "
            f"target-rpm {model.get('target_rpm') or 'unset'}, tiers {', '.join(model['tiers'])}, "
            f"{model['family']}; budget {budget['tokens_per_window']} tokens per {view['window_seconds']:g} s "
            f"(factor {budget['factor']:g}), used {budget['tokens_last_window']} in the last window"
        )
    if not view["in_sync"]:
        print("The validators' copy differs from SSM until the reconciler's next pass.")


@models_app.command("show")
def models_show(ctx: typer.Context, as_json: JsonOpt = False) -> int:
    """The models offered: targets, tiers, the default, and each one's budget now."""
    with _config(ctx).api() as api:
        _show_models(api.models(), as_json)
    return PASSED


@models_app.command("set")
def models_set(
    ctx: typer.Context,
    path: Annotated[
        str,
        typer.Argument(
            help='JSON: the whole list, `[{"name", "target_tpm", "target_rpm", "tiers", "default"}, ...]` '
            '(or `{"models": [...]}`); "-" reads stdin.',
            metavar="FILE",
            show_default=False,
        ),
    ],
    as_json: JsonOpt = False,
) -> int:
    """Replace the list (live: validators follow within seconds); the default's targets become target-tpm/-rpm."""
    text = sys.stdin.read() if path == "-" else inputs.read_text(path, "models file")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}).") from None
    listed = parsed.get("models") if isinstance(parsed, dict) else parsed
    if not isinstance(listed, list):
        raise CliError(f"{path}: give a JSON list of models, or an object with `models`.")
    with _config(ctx).api() as api:
        _show_models(api.set_models(listed), as_json)
    return PASSED


# --- the entry point --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """`validate`: run a command and exit with its code; usage errors exit 3 (click's own is 2)."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="validate", standalone_mode=False)
    except ClickException as exc:
        exc.show()
        code = USAGE
    except CliError as exc:
        stderr.print(f"validate: {exc.message}", markup=False, highlight=False, soft_wrap=True)
        code = exc.code
    sys.exit(code if isinstance(code, int) else PASSED)
