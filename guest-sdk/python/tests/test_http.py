"""Local mode: HTTP from steps (sent with urllib) and secrets."""

import json

import pytest

from cerebelum import HttpError, http, step, workflow
from conftest import run


def test_steps_get_and_post_with_a_secret(server):
    base, seen = server

    @step
    async def call_api(context, inputs):
        token = context.secret("api-token")
        created = http.post(f"{base}/droplets", json={"name": inputs["name"]},
                            headers={"Authorization": f"Bearer {token}"})
        listed = http.get(f"{base}/droplets?page=2")
        missing = http.get(f"{base}/missing")
        with pytest.raises(HttpError) as e:
            missing.raise_for_status()
        assert e.value.kind == "http-status" and "404" in str(e.value)
        return {"created": created.status, "echo": created.json(),
                "listed": listed.json(), "type": listed.headers["content-type"],
                "missing_ok": missing.ok}

    @workflow
    def deploy(wf):
        wf.timeline(call_api)

    r = run(deploy.execute({"name": "web-1"}, secrets={"api-token": "s3cr3t-value"}))
    assert r.status == "completed", r.error
    assert r.steps["call_api"] == {
        "created": 201, "echo": {"got": {"name": "web-1"}, "auth": "Bearer s3cr3t-value"},
        "listed": {"path": "/droplets?page=2"}, "type": "application/json",
        "missing_ok": False}
    assert [(m, p) for m, p, _, _ in seen] == [
        ("POST", "/droplets"), ("GET", "/droplets?page=2"), ("GET", "/missing")]
    assert seen[0][2]["content-type"] == "application/json"


def test_secrets_come_from_execute_or_the_environment(monkeypatch):
    @step
    async def read(context, inputs):
        return context.secret(inputs["name"])

    @workflow
    def w(wf):
        wf.timeline(read)

    monkeypatch.setenv("CEREBELUM_SECRET_DB_PASSWORD", "from-the-env")
    assert run(w.execute({"name": "db-password"})).steps == {"read": "from-the-env"}
    from cerebelum import ExecutionError
    with pytest.raises(ExecutionError) as e:
        run(w.execute({"name": "nothing-here"}))
    assert "secrets={'nothing-here': ...}" in e.value.error
    assert "CEREBELUM_SECRET_NOTHING_HERE" in e.value.error


def test_bad_urls_and_unreachable_hosts_are_clear_errors():
    @step
    async def bad(context, inputs):
        try:
            http.get(inputs["url"])
        except HttpError as e:
            return {"kind": e.kind, "message": str(e)}
        return "sent?"

    @workflow
    def w(wf):
        wf.timeline(bad)

    r = run(w.execute({"url": "ftp://example.com/x"})).steps["bad"]
    assert r["kind"] == "invalid-input" and "http://" in r["message"]
    r = run(w.execute({"url": "http://127.0.0.1:9/nothing"})).steps["bad"]
    assert r["kind"] == "http" and "127.0.0.1:9" in r["message"]
