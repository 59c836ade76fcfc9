"""Asset types over real HTTP (uvicorn on loopback, a real Celery `aat runner`, PostgreSQL):
the type and its reason in the job, a JPEG of a transparent sprite on the matte with a warning,
a sheet that does not fit refused as problem+json."""

from __future__ import annotations

import io
import json

import numpy as np
from apitest_helpers import wait_terminal
from PIL import Image

from service.core.normalmap import decode_normals
from tests.core.asset_factory import normal_map, painted_sprite


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_asset_type_reason_matte_and_bad_sheet_over_http(celery_server) -> None:
    with celery_server.client() as http:
        resp = http.post("/v1/jobs", params={"filename": "wall_n.png", "scale": "2"},
                         content=_png(normal_map(48, 1)), headers={"Content-Type": "image/png"})
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert job["params"]["asset_type"] == "normal"
        assert "_n" in job["params"]["asset_reason"]
        done = wait_terminal(http, job["id"])
        assert done["status"] == "succeeded", done["error"]
        out = np.asarray(Image.open(io.BytesIO(http.get(f"/v1/jobs/{job['id']}/result").content)))
        assert float(np.abs(np.linalg.norm(decode_normals(out), axis=2) - 1).mean()) < 0.005

        rgb, alpha = painted_sprite(48, 2)
        rgb[alpha == 0] = (160, 0, 200)
        params = {"scale": 2, "output_format": "jpeg", "matte": "#000000", "upscaler": "lanczos"}
        resp = http.post("/v1/jobs", files={"file": ("hero.png", _png(np.dstack([rgb, alpha])),
                                                     "image/png")},
                         data={"params": json.dumps(params)})
        assert resp.status_code == 202, resp.text
        done = wait_terminal(http, resp.json()["id"])
        assert done["status"] == "succeeded", done["error"]
        assert done["params"]["asset_type"] == "sprite"
        assert any("matte #000000" in w for w in done["output"]["warnings"])
        result = http.get(f"/v1/jobs/{done['id']}/result")
        assert result.headers["content-type"] == "image/jpeg"
        assert np.asarray(Image.open(io.BytesIO(result.content)))[:8, :8].max() <= 6

        resp = http.post("/v1/jobs", params={"filename": "walk.png", "sheet": "3x1"},
                         content=_png(np.zeros((32, 32, 3), np.uint8)),
                         headers={"Content-Type": "image/png"})
        assert resp.status_code == 422
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["code"] == "sheet_invalid" and "does not divide" in resp.json()["detail"]
