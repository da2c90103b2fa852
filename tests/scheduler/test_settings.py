"""Settings read from the environment: the names docs/design.md fixes and the shapes they take."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.core.config import Settings


def test_gpu_tolerations_take_integer_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "JOB_GPU_TOLERATIONS",
        '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]',
    )
    assert Settings().job_gpu_tolerations[0]["tolerationSeconds"] == 300


def test_an_empty_jwt_secret_is_not_an_unset_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset: the service generates a key; set but empty: load_secret refuses to start."""
    monkeypatch.delenv("JWT_SECRET", raising=False)
    assert Settings().jwt_secret is None
    monkeypatch.setenv("JWT_SECRET", "")
    assert Settings().jwt_secret == ""


def test_defaults_derive_from_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", "/srv/fractal")
    for name in ("DATABASE_URL", "STORAGE_DIR", "OPENCL_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.database_url == "sqlite:////srv/fractal/scheduler.db"
    assert str(settings.storage_dir) == "/srv/fractal/results"
    assert str(settings.opencl_cache_dir) == "/srv/fractal/opencl-cache"


def test_every_setting_is_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in readme]
    assert not missing, f"settings missing from the README's configuration tables: {missing}"
