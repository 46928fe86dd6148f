"""The production API carries nothing of local mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from app.settings import PROJECT_ROOT


def test_importing_the_api_in_aws_mode_loads_no_local_package_moto_or_werkzeug() -> None:
    probe = (
        "import json, sys; import app.main; app.main.create_app(); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('local', 'moto', 'werkzeug', 'flask'))))"
    )
    env = {**os.environ, "MODE": "aws", "STATE_MACHINE_ARN": "arn:aws:states:us-east-1:000000000000:stateMachine:x"}
    answer = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == []
