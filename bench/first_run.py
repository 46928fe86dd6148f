"""The first run: 20 small CSV files through `make run`'s startup, at the seed's TPM and at local mode's.

Each row starts `python -m app` as `make run` does (local mode, its own embedded AWS and
simulator, the admin key it generates and prints), waits for `/readyz`, submits 20 CSV
files of 12 rows with two rules, and times the validation from POST to its terminal
status. The baseline puts the governor's `target-tpm` back to the seed's 50,000 (what every
first run had before local mode made it agree with the simulator's limit) with
`PATCH /admin/parallelism`; the other row keeps what local mode provisions. Same machine,
same run: the ratio is what a new user waits now ÷ what they waited before.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

from app.settings import PROJECT_ROOT
from tests.servers import free_port, stop

FILES = 20
ROWS = 12
SEED_TARGET_TPM = 50_000  # infra/terraform/resources.json: the production default
RULES = ['The file must not contain "secret".', "Every row has an id."]
KEY_LINE = re.compile(r"admin key: (\S+)")


def csv_file(index: int) -> str:
    rows = "".join(f"{r},item {index}-{r},{(r * 37) % 100}\n" for r in range(1, ROWS + 1))
    return "id,name,amount\n" + rows


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def first_run(target_tpm: int | None) -> dict[str, float]:
    """Seconds to ready and seconds for the batch, on a fresh `python -m app`."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in {"ADMIN_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"}}
    env.update({"PORT": str(port), "MODE": "local"})
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        api = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:

            def ready() -> bool:
                try:
                    return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(lambda: api.poll() is not None or ready(), 120, "/readyz")
            if api.poll() is not None:
                out.seek(0)
                raise RuntimeError(out.read().decode(errors="replace")[-2000:])
            ready_seconds = time.perf_counter() - started
            out.seek(0)
            key = KEY_LINE.search(out.read().decode(errors="replace"))
            if key is None:
                raise RuntimeError("`python -m app` did not print the admin key")
            headers = {"Authorization": f"Bearer {key.group(1)}"}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                if target_tpm is not None:
                    client.patch("/admin/parallelism", json={"target_tpm": target_tpm}).raise_for_status()
                documents = [{"name": f"batch-{i:02d}.csv", "content": csv_file(i)} for i in range(FILES)]
                begun = time.perf_counter()
                created = client.post("/validations", json={"documents": documents, "rules": RULES})
                created.raise_for_status()
                vid = created.json()["id"]
                ended = wait_for(
                    lambda: (
                        (v := client.get(f"/validations/{vid}").json())["status"]
                        in ("SUCCEEDED", "FAILED", "CANCELLED")
                        and v
                    ),
                    600,
                    "the batch",
                )
                batch_seconds = time.perf_counter() - begun
                if ended["status"] != "SUCCEEDED":
                    raise RuntimeError(f"the batch ended {ended['status']}: {ended.get('error')}")
                target = client.get("/admin/parallelism").json()["target_tpm"]
            return {"ready": ready_seconds, "batch": batch_seconds, "target_tpm": target}
        finally:
            stop(api, timeout=15)


def main() -> None:
    before = first_run(SEED_TARGET_TPM)
    after = first_run(None)
    print(f"\nFirst run ({FILES} CSV files of {ROWS} rows, {len(RULES)} rules; `python -m app` in local mode)\n")
    print("| configuration | target-tpm | ready (s) | batch (s) | batch ÷ baseline |")
    print("|---|---:|---:|---:|---:|")
    for label, row in (("seed's target-tpm (baseline)", before), ("local mode's default", after)):
        print(
            f"| {label} | {int(row['target_tpm']):,} | {row['ready']:.1f} | {row['batch']:.1f} "
            f"| {row['batch'] / before['batch']:.3f} |"
        )


if __name__ == "__main__":
    main()
