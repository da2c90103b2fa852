"""Integer fields take integers only (`"width": true` is not a 1-pixel render), and the default
MAX_JOB_ITERATIONS is one a request can reach, so its 422 fires on the embedded defaults."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from scheduler.core.config import Settings
from tests.scheduler.conftest import TINY


@pytest.mark.parametrize("field", ["width", "height", "max_iter", "supersample"])
@pytest.mark.parametrize("value", [True, False, "2", 2.0, 2.5])
def test_an_integer_field_takes_only_an_integer(
    client: TestClient, alice: dict[str, str], field: str, value: object
) -> None:
    answer = client.post("/jobs", json={**TINY, field: value}, headers=alice)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["loc"] == ["body", field]
    assert answer.json()["detail"].startswith(f"Invalid request: {field}:")


def test_the_default_iteration_cap_is_below_the_largest_render() -> None:
    defaults = Settings(jwt_secret="x" * 40)
    assert defaults.max_job_iterations < defaults.max_pixels * defaults.max_iter


def test_a_render_over_the_default_iteration_cap_is_refused(
    client: TestClient, alice: dict[str, str]
) -> None:
    inside = {"width": 4096, "height": 4096, "max_iter": 100_000, "center_x": -0.1, "center_y": 0.0,
              "zoom": 1000.0, "device": "cpu"}  # every sample in the main cardioid: 1.7e12 iterations
    answer = client.post("/jobs", json=inside, headers=alice)
    assert answer.status_code == 422, answer.text
    assert "above MAX_JOB_ITERATIONS (1e+12)" in answer.json()["detail"]
