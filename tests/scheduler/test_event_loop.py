"""No blocking database I/O on the event loop: while one request waits on the database, health
checks and other requests go on.

One test holds SQLite's write lock from another connection (another process would do the same)
while a sign-up waits for it; the other checks the code itself, so a new route cannot bring the
blocking call back.
"""

from __future__ import annotations

import ast
import sqlite3
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import event

SCHEDULER = Path(__file__).resolve().parents[2] / "scheduler"

def test_health_and_reads_go_on_while_a_write_waits_for_the_lock(client: TestClient) -> None:
    service = client.app.state.service
    db_file = Path(service.settings.data_dir) / "scheduler.db"
    waiting = threading.Event()

    @event.listens_for(service.engine, "before_cursor_execute")
    def _seen(_conn, _cursor, statement, *_args) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith(("INSERT INTO USER", 'INSERT INTO "USER"')):
            waiting.set()

    holder = sqlite3.connect(db_file, timeout=1)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, as another process holding it
    answers: dict[str, int] = {}
    sign_up = threading.Thread(
        target=lambda: answers.update(
            sign_up=client.post("/auth/sign-up", json={"username": "alice", "password": "correct-horse"})
            .status_code
        )
    )
    try:
        sign_up.start()
        assert waiting.wait(30), "the sign-up never reached the database"
        started = time.monotonic()
        assert client.get("/healthz").status_code == 200
        seconds = time.monotonic() - started
        assert client.get("/readyz", params={"exclude": ["database"]}).status_code == 200
        assert "sign_up" not in answers, answers  # it still waits for the lock: nothing blocked the rest
        print(f"/healthz answered in {seconds * 1000:.1f} ms while a write waited for the lock")
    finally:
        holder.rollback()
        holder.close()
        sign_up.join(60)
    assert answers == {"sign_up": 201}


def _db_functions(trees: list[ast.Module]) -> set[str]:
    """Names of the plain (sync) functions that open a database session themselves."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and _opens_session(node):
                names.add(node.name)
    return names - {"in_session"}  # db.in_thread's own worker: it runs in a thread


def _calls(node: ast.AST) -> list[ast.Call]:
    """Calls made by `node` itself: not inside nested functions or lambdas (those run elsewhere)."""
    found, todo = [], list(ast.iter_child_nodes(node))
    while todo:
        child = todo.pop()
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(child, ast.Call):
            found.append(child)
        todo.extend(ast.iter_child_nodes(child))
    return found


def _name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _opens_session(node: ast.AST) -> bool:
    return any(_name(c) in ("Session", "session") for c in _calls(node))


def test_no_coroutine_calls_the_database_on_the_event_loop() -> None:
    trees = {p: ast.parse(p.read_text(), str(p)) for p in SCHEDULER.rglob("*.py")}
    blocking = _db_functions(list(trees.values())) | {"Session", "session"}
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.AsyncFunctionDef):
                for call in _calls(node):
                    name = _name(call)
                    if name in blocking:
                        where = f"{path.relative_to(SCHEDULER.parent)}:{call.lineno}"
                        found.append(f"{where} {node.name} calls {name}")
    assert not found, "database calls in coroutines (use db.in_thread):\n" + "\n".join(found)
