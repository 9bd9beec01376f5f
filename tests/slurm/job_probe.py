"""Stands in for `python` inside the SLURM test jobs (tests put it first on PATH as `python`).

Each rule command runs `python -m contamination <verb> ...`. Before handing over to the real
interpreter this records what the command saw of its job (SLURM job id, array task, the GPUs
in CUDA_VISIBLE_DEVICES) as one JSON file in $CONTAMINATION_TEST_PROBE_DIR, and injects the
test's fault: the first command whose arguments contain $CONTAMINATION_TEST_FAIL_ONCE exits
with status 3 instead of running. No production code knows about either.
"""

import json
import os
import sys
import uuid
from pathlib import Path

INJECTED_FAILURE_STATUS = 3


def main() -> None:
    arguments = sys.argv[1:]
    probe_dir = Path(os.environ["CONTAMINATION_TEST_PROBE_DIR"])
    pattern = os.environ.get("CONTAMINATION_TEST_FAIL_ONCE", "")
    fail = False
    if pattern and pattern in " ".join(arguments):
        try:  # the marker file makes the failure happen once across all jobs
            (probe_dir / "injected-failure").open("x").close()
            fail = True
        except FileExistsError:
            pass
    record = {
        "arguments": arguments,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "injected_failure": fail,
    }
    (probe_dir / f"{uuid.uuid4().hex}.json").write_text(json.dumps(record))
    if fail:
        sys.exit(INJECTED_FAILURE_STATUS)
    os.execv(sys.executable, [sys.executable, *arguments])


if __name__ == "__main__":
    main()
