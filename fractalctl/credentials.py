"""Tokens kept per server in `$XDG_CONFIG_HOME/fractalctl/credentials.json` (default
`~/.config`), readable by the user alone (mode 0600), as docker and gh keep theirs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "credentials.json"


@dataclass(frozen=True)
class Credential:
    username: str
    access_token: str
    expires_at: float  # Unix seconds

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


def config_dir(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fractalctl"


def _read(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON ({exc}); delete it and log in again.") from exc
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, dict]) -> None:
    """Replace the file atomically; the new file is created 0600, never readable in between."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    tmp.replace(path)


def load(server: str, directory: Path | None = None) -> Credential | None:
    entry = _read((directory or config_dir()) / FILE_NAME).get(server)
    try:
        return Credential(**entry) if entry else None
    except TypeError:  # written by another version: treat as signed out
        return None


def save(server: str, credential: Credential, directory: Path | None = None) -> Path:
    path = (directory or config_dir()) / FILE_NAME
    data = _read(path)
    data[server] = asdict(credential)
    _write(path, data)
    return path


def forget(server: str, directory: Path | None = None) -> bool:
    path = (directory or config_dir()) / FILE_NAME
    data = _read(path)
    if data.pop(server, None) is None:
        return False
    _write(path, data)
    return True
