"""A file's verdicts, merged from its chunks (the results API and the `result` events)."""

from __future__ import annotations

from typing import Any

from core.records import ChunkStatus


def file_result(name: str, chunks: list[dict[str, Any]], rule_ids: list[str]) -> dict[str, Any]:
    """One file's verdicts: a rule passes when it passes in every chunk; findings are joined."""
    statuses = {c["status"] for c in chunks}
    if ChunkStatus.FAILED in statuses:
        status = "FAILED"
    elif statuses == {ChunkStatus.SUCCEEDED}:
        status = "SUCCEEDED"
    elif ChunkStatus.SUCCEEDED in statuses:
        status = "RUNNING"
    else:
        status = "PENDING"
    verdicts: dict[str, dict[str, Any]] = {}
    for chunk in chunks:
        for verdict in chunk.get("rules") or []:
            merged = verdicts.setdefault(verdict["id"], {"id": verdict["id"], "passed": True, "findings": []})
            merged["passed"] = merged["passed"] and verdict["passed"]
            merged["findings"].extend(verdict["findings"])
    result: dict[str, Any] = {
        "file": name,
        "status": status,
        "rules": [verdicts[r] for r in rule_ids if r in verdicts] if status == "SUCCEEDED" or verdicts else [],
        "chunks": {"total": len(chunks), "succeeded": sum(c["status"] == ChunkStatus.SUCCEEDED for c in chunks), "failed": sum(c["status"] == ChunkStatus.FAILED for c in chunks)},
    }
    errors = [c["error"] for c in chunks if c.get("error")]
    if errors:
        result["error"] = errors[0]
    return result
