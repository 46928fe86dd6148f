"""`validate`: the command-line client of the validation service (typer, rich, httpx, httpx-sse).

It talks to the API over HTTP only (VALIDATE_URL, VALIDATE_API_KEY), so it imports nothing
of `app`, `core` or `local`. Exit codes gate a CI job: see cli/outcome.py.
"""
