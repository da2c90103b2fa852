"""Metrics: per-app registries, the job gauges read at scrape time, route-template HTTP labels."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response, StreamingResponse
from fastapi.testclient import TestClient

from scheduler.metrics import Metrics, MetricsMiddleware


def make_app(metrics: Metrics) -> FastAPI:
    app = FastAPI()

    @app.get("/jobs/{job_id}")
    def get_job(job_id: str) -> dict[str, str]:
        if job_id == "missing":
            raise HTTPException(404, "no such job")
        return {"job_id": job_id}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("bug")

    @app.get("/stream")
    def stream() -> StreamingResponse:
        def chunks() -> Iterator[bytes]:
            yield b"a"
            yield b"b"

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @app.get("/metrics")
    def scrape() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def scrape(client: TestClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_requests_are_labelled_with_the_route_template() -> None:
    metrics = Metrics(lambda: {})
    client = TestClient(make_app(metrics))
    assert client.get("/jobs/a1").status_code == 200
    assert client.get("/jobs/b2").status_code == 200
    assert client.get("/jobs/missing").status_code == 404
    text = scrape(client)
    assert 'http_request_duration_seconds_count{method="GET",route="/jobs/{job_id}",status="200"} 2.0' in text
    assert 'http_request_duration_seconds_count{method="GET",route="/jobs/{job_id}",status="404"} 1.0' in text
    assert "a1" not in text and "b2" not in text


def test_unmatched_paths_are_other() -> None:
    metrics = Metrics(lambda: {})
    client = TestClient(make_app(metrics))
    assert client.get("/no/such/path/123").status_code == 404
    text = scrape(client)
    assert 'http_request_duration_seconds_count{method="GET",route="other",status="404"} 1.0' in text
    assert "/no/such/path" not in text


def test_wrong_method_keeps_the_template() -> None:
    metrics = Metrics(lambda: {})
    client = TestClient(make_app(metrics))
    assert client.delete("/jobs/x").status_code == 405
    assert 'route="/jobs/{job_id}",status="405"' in scrape(client)


def test_exceptions_count_as_500() -> None:
    metrics = Metrics(lambda: {})
    client = TestClient(make_app(metrics), raise_server_exceptions=False)
    assert client.get("/boom").status_code == 500
    text = scrape(client)
    assert 'http_request_duration_seconds_count{method="GET",route="/boom",status="500"} 1.0' in text


def test_streaming_responses_pass_through() -> None:
    metrics = Metrics(lambda: {})
    client = TestClient(make_app(metrics))
    with client.stream("GET", "/stream") as response:
        assert b"".join(response.iter_bytes()) == b"ab"
    assert 'route="/stream",status="200"} 1.0' in scrape(client)


def test_job_gauges_follow_job_counts() -> None:
    counts = {"queued": 3, "running": 1}
    metrics = Metrics(lambda: counts)
    text = metrics.render()[0].decode()
    assert 'fractal_jobs{status="queued"} 3.0' in text
    assert 'fractal_jobs{status="running"} 1.0' in text
    for status in ("pending", "succeeded", "failed", "cancelled"):
        assert f'fractal_jobs{{status="{status}"}} 0.0' in text
    counts["queued"] = 0  # read at scrape time, not cached
    assert 'fractal_jobs{status="queued"} 0.0' in metrics.render()[0].decode()


def test_failing_job_counts_does_not_break_the_scrape() -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("database is locked")

    metrics = Metrics(broken)  # registering must not call it either
    metrics.job_submitted()
    body, content_type = metrics.render()
    text = body.decode()
    assert "fractal_jobs_submitted_total 1.0" in text
    assert "fractal_jobs{status=" not in text
    assert content_type.startswith("text/plain")


def test_two_instances_coexist() -> None:
    first, second = Metrics(lambda: {"queued": 1}), Metrics(lambda: {"queued": 2})
    first.job_submitted()
    first.job_submitted()
    second.job_submitted()
    assert "fractal_jobs_submitted_total 2.0" in first.render()[0].decode()
    assert "fractal_jobs_submitted_total 1.0" in second.render()[0].decode()
    assert 'fractal_jobs{status="queued"} 2.0' in second.render()[0].decode()


def test_job_timings_feed_the_histograms() -> None:
    metrics = Metrics(lambda: {})
    metrics.job_started(1.5)
    metrics.job_finished("succeeded", 12.0)
    metrics.job_finished("failed", 0.2)
    metrics.job_finished("cancelled", None)  # never started: nothing to observe
    text = metrics.render()[0].decode()
    assert "fractal_job_queue_seconds_count 1.0" in text
    assert "fractal_job_queue_seconds_sum 1.5" in text
    assert 'fractal_job_duration_seconds_count{status="succeeded"} 1.0' in text
    assert 'fractal_job_duration_seconds_sum{status="succeeded"} 12.0' in text
    assert 'fractal_job_duration_seconds_bucket{le="3600.0",status="failed"} 1.0' in text
    assert 'status="cancelled"' not in text.split("fractal_job_duration_seconds")[-1]


def test_admission_per_device_class() -> None:
    metrics = Metrics(lambda: {}, queue_lengths=lambda: {"gpu": 3})
    metrics.job_admitted("cpu", 2.0)
    metrics.job_admitted("cpu", None)
    metrics.job_admitted("tpu", 1.0)  # an unknown class cannot add series
    text = metrics.render()[0].decode()
    assert 'fractal_queue_length{class="gpu"} 3.0' in text and 'fractal_queue_length{class="cpu"} 0.0' in text
    assert 'fractal_jobs_admitted_total{class="cpu"} 2.0' in text
    assert 'fractal_job_wait_seconds_count{class="cpu"} 1.0' in text
    assert 'fractal_jobs_admitted_total{class="other"} 1.0' in text
