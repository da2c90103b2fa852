"""Sign-up, sign-in (JSON and Basic), token checks and sign-in rate limits, through the app."""

from __future__ import annotations

import base64
import json
import time

import pytest
from fastapi.testclient import TestClient

from scheduler.core.jwt import issue_token
from tests.scheduler.conftest import Client, sign_up_and_in

CREDS = {"username": "alice", "password": "correct-horse"}


def b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_sign_up_then_sign_in_with_json_and_basic(client: TestClient) -> None:
    created = client.post("/auth/sign-up", json=CREDS)
    assert created.status_code == 201
    assert created.json()["username"] == "alice" and "password" not in created.text
    by_json = client.post("/auth/sign-in", json=CREDS)
    by_basic = client.post("/auth/sign-in", auth=("alice", "correct-horse"))
    for response in (by_json, by_basic):
        assert response.status_code == 200, response.text
        token = response.json()
        assert token["token_type"] == "bearer" and token["expires_in"] == 3600
        me = client.get("/jobs", headers={"Authorization": f"Bearer {token['access_token']}"})
        assert me.status_code == 200


def test_basic_sign_in_takes_utf8_passwords(client: TestClient) -> None:
    creds = {"username": "carol", "password": "gâteau-crème-brûlée"}
    assert client.post("/auth/sign-up", json=creds).status_code == 201
    raw = base64.b64encode(f"carol:{creds['password']}".encode()).decode()
    response = client.post("/auth/sign-in", headers={"Authorization": f"Basic {raw}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("value", ["Basic %%%", "Basic " + base64.b64encode(b"no-colon").decode(),
                                   "Basic " + base64.b64encode(b"carol:\xff\xfe").decode()])
def test_malformed_basic_credentials_are_401_with_a_sentence(client: TestClient, value: str) -> None:
    response = client.post("/auth/sign-in", headers={"Authorization": value})
    assert response.status_code == 401 and "Basic credentials" in response.json()["detail"]


def test_duplicate_username_is_409(client: TestClient) -> None:
    assert client.post("/auth/sign-up", json=CREDS).status_code == 201
    again = client.post("/auth/sign-up", json={**CREDS, "password": "another-one"})
    assert again.status_code == 409 and "taken" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"username": "Al", "password": "correct-horse"}, "username"),
        ({"username": "../etc", "password": "correct-horse"}, "username"),
        ({"username": "alice", "password": "short"}, "8"),
        ({"username": "alice", "password": "é" * 37}, "72"),  # 74 bytes: bcrypt's limit
        ({"username": "alice"}, "password"),
        ({"username": "alice", "password": "correct-horse", "is_admin": True}, "is_admin"),
    ],
)
def test_bad_sign_up_is_422_with_a_sentence(client: TestClient, body: dict[str, object], words: str) -> None:
    response = client.post("/auth/sign-up", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words in detail


def test_password_of_exactly_72_bytes_works(client: TestClient) -> None:
    creds = {"username": "carol", "password": "é" * 36}
    assert client.post("/auth/sign-up", json=creds).status_code == 201
    assert client.post("/auth/sign-in", json=creds).status_code == 200


def test_wrong_password_and_unknown_user_get_the_same_answer(client: TestClient) -> None:
    client.post("/auth/sign-up", json=CREDS)
    wrong = client.post("/auth/sign-in", json={**CREDS, "password": "wrong-horse"})
    unknown = client.post("/auth/sign-in", json={"username": "nobody", "password": "wrong-horse"})
    too_long = client.post("/auth/sign-in", json={**CREDS, "password": "x" * 200})
    assert wrong.status_code == unknown.status_code == too_long.status_code == 401
    assert wrong.json() == unknown.json() == too_long.json()


def test_sign_in_without_credentials_is_401(client: TestClient) -> None:
    response = client.post("/auth/sign-in")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Basic"


def test_sign_in_is_rate_limited_per_user_and_client(make_client: Client) -> None:
    client = make_client(signin_attempts_per_minute=3)
    client.post("/auth/sign-up", json=CREDS)
    codes = [
        client.post("/auth/sign-in", json={**CREDS, "password": "wrong-horse"}).status_code for _ in range(3)
    ]
    assert codes == [401, 401, 401]
    blocked = client.post("/auth/sign-in", json=CREDS)  # even the right password, for now
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) >= 1 and "try again" in blocked.json()["detail"]
    assert client.post("/auth/sign-in", json={**CREDS, "username": "bob"}).status_code == 401  # another name


def test_guesses_from_other_clients_do_not_lock_the_owner_out(make_client: Client) -> None:
    owner = make_client(signin_attempts_per_minute=2)
    owner.post("/auth/sign-up", json=CREDS)
    wrong = {**CREDS, "password": "wrong-horse"}
    for i in range(20):  # an attacker rotating addresses, each trying the limit and more
        attacker = TestClient(owner.app, client=(f"203.0.113.{i}", 40000))
        assert [attacker.post("/auth/sign-in", json=wrong).status_code for _ in range(3)] == [401, 401, 429]
    assert owner.post("/auth/sign-in", json=CREDS).status_code == 200


def test_sign_in_is_rate_limited_per_client(make_client: Client) -> None:
    client = make_client(signin_attempts_per_client_per_minute=3)
    codes = [
        client.post("/auth/sign-in", json={"username": f"user{i}", "password": "wrong-horse"}).status_code
        for i in range(4)
    ]
    assert codes == [401, 401, 401, 429]


def test_sign_up_is_rate_limited_per_client(make_client: Client) -> None:
    client = make_client(signups_per_minute=2)
    bodies = [{**CREDS, "username": f"user{i}"} for i in range(3)]
    codes = [client.post("/auth/sign-up", json=body).status_code for body in bodies]
    assert codes == [201, 201, 429]
    taken = client.post("/auth/sign-up", json={**CREDS, "username": "user0"})
    assert taken.status_code == 429  # not 409: unthrottled 409s would list the usernames


def test_sign_up_of_a_taken_name_is_throttled_too(make_client: Client) -> None:
    client = make_client(signups_per_minute=2)
    assert client.post("/auth/sign-up", json=CREDS).status_code == 201
    assert [client.post("/auth/sign-up", json=CREDS).status_code for _ in range(3)] == [409, 429, 429]


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer not-a-token", "Basic YWxpY2U6eA==", "Bearer a.b.c"])
def test_missing_or_malformed_token_is_401(client: TestClient, header: str) -> None:
    response = client.get("/jobs", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert isinstance(response.json()["detail"], str)


def test_forged_tokens_are_401(client: TestClient, settings: object) -> None:
    auth = sign_up_and_in(client, "alice")
    sign_up_and_in(client, "bob")  # so a token tampered into bob's is refused for its signature
    good = auth["Authorization"].split()[1]
    header, payload, signature = good.split(".")
    now = int(time.time())
    claims = {"sub": "alice", "iat": now, "exp": now + 600}
    forged = {
        "alg none": f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url(claims)}.",
        "tampered": f"{header}.{b64url({**claims, 'sub': 'bob'})}.{signature}",
        "wrong key": issue_token("alice", "another-secret-" + "y" * 40, 600),
        "expired": issue_token("alice", client.app.state.service.accounts.jwt_secret, -10),
    }
    for name, token in forged.items():
        response = client.get("/jobs", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
    assert client.get("/jobs", headers=auth).status_code == 200


def test_token_of_a_user_that_does_not_exist_is_401(client: TestClient) -> None:
    token = issue_token("ghost", client.app.state.service.accounts.jwt_secret, 600)
    response = client.get("/jobs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


@pytest.mark.parametrize("secret", ["too-short", ""])
def test_short_or_empty_jwt_secret_refuses_to_start(make_client: Client, secret: str) -> None:
    with pytest.raises(ValueError, match="JWT_SECRET must be at least 32 bytes"):
        make_client(jwt_secret=secret)


def test_generated_secret_is_kept_across_restarts(make_client: Client) -> None:
    first = make_client(jwt_secret=None)  # unset: generated into DATA_DIR
    auth = sign_up_and_in(first, "alice")
    first.__exit__(None, None, None)  # one service per DATA_DIR at a time
    second = make_client(jwt_secret=None)
    assert second.get("/jobs", headers=auth).status_code == 200


def test_me_shows_the_account_and_a_stable_webhook_secret(client: TestClient) -> None:
    alice, bob = sign_up_and_in(client, "alice"), sign_up_and_in(client, "bob")
    me = client.get("/auth/me", headers=alice)
    assert me.status_code == 200
    body = me.json()
    assert set(body) == {"username", "created_at", "webhook_secret"} and body["username"] == "alice"
    assert body["webhook_secret"].startswith("whsec_")
    assert len(base64.b64decode(body["webhook_secret"].removeprefix("whsec_"))) == 24
    assert client.get("/auth/me", headers=alice).json() == body
    assert client.get("/auth/me", headers=bob).json()["webhook_secret"] != body["webhook_secret"]
    assert client.get("/auth/me").status_code == 401
