"""Context capture: what each call saw and said, with secrets always redacted, a user
hook, capture switched off, and every field cut to a size cap."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import sqlalchemy as sa

import baton_dramatiq as baton
from baton_dramatiq.llm import complete, llm_actor
from baton_dramatiq.llm.testing import FakeProvider, FakeRequest
from baton_dramatiq.redaction import REDACTED, Scrubber, fit
from tests.support.cluster import Cluster
from tests.support.llm_actors import MODEL, TEST_KEY, user

TIMEOUT = 30
HEADER_TOKEN = "hdr-TOPSECRET-5f4dcc3b5aa765d61d8327"
OTHER_KEY = "xkey-TOPSECRET-0cc175b9c0f1b6a831c399"
ENV_KEY = "env-TOPSECRET-92eb5ffee6ae2fec3ad71c"


def debug_log_text(cluster: Cluster) -> str:
    """Every column of every row of workflow_debug_logs, as one string."""
    with cluster.store.connect() as conn:
        rows = conn.execute(sa.select(cluster.store.debug_logs)).mappings().all()
    return json.dumps([dict(row) for row in rows], default=str)


def test_no_api_key_or_authorization_value_reaches_the_debug_logs(
    embedded: Cluster, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given secrets in the parameters, the headers, the environment and even the prompt,
    # and a provider that echoes the credentials it received and then fails quoting them
    monkeypatch.setenv("MY_SERVICE_API_KEY", ENV_KEY)

    def echo(request: FakeRequest) -> str:
        return f"I saw authorization: {request.headers['authorization']}, {request.headers['x-api-key']}"

    provider.respond(echo)

    @llm_actor(broker=embedded.broker, model=MODEL, max_retries=0)
    def leaky(api_base: str) -> str:
        secrets: dict[str, Any] = {
            "api_key": TEST_KEY,
            "extra_headers": {"X-Api-Key": OTHER_KEY, "Proxy-Authorization": HEADER_TOKEN},
            "metadata": {"nested": {"client_secret": ENV_KEY}},
        }
        prompt = f"My key is {TEST_KEY} and the header was Bearer {HEADER_TOKEN}; env {ENV_KEY}"
        first = complete(user(prompt), api_base=api_base, **secrets)
        provider.fail(500, message=f"rejected key {TEST_KEY} with token {HEADER_TOKEN}")
        try:
            complete(user("again"), api_base=api_base, **secrets)
        except Exception:
            pass
        return first.text

    run = baton.Workflow(name="leaky").add("leaky", leaky.message(provider.url)).insert()
    assert run.wait(timeout=TIMEOUT) == "completed"

    # The secrets did travel to the provider, so there was something to redact
    [sent, _] = provider.requests
    assert sent.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert sent.headers["x-api-key"] == OTHER_KEY
    assert TEST_KEY in run.results()["leaky"]  # the step itself sees what it was sent

    # Then none of them appears anywhere in workflow_debug_logs
    text = debug_log_text(embedded)
    for secret in (TEST_KEY, HEADER_TOKEN, OTHER_KEY, ENV_KEY, "TOPSECRET"):
        assert secret not in text

    # And what is not secret is kept, with the secrets marked
    answered, failed = baton.debug.get_logs(run.id)
    assert answered.params is not None and answered.params["api_key"] == REDACTED
    assert answered.params["extra_headers"] == {
        "X-Api-Key": REDACTED,
        "Proxy-Authorization": REDACTED,
    }
    assert answered.params["api_base"] == provider.url
    assert answered.messages == user(
        f"My key is {REDACTED} and the header was Bearer {REDACTED}; env {REDACTED}"
    )
    assert answered.response_text == f"I saw authorization: Bearer {REDACTED}, {REDACTED}"
    assert failed.error is not None and failed.error.startswith("InternalServerError: ")
    assert f"rejected key {REDACTED} with token {REDACTED}" in failed.error


def test_a_user_redactor_sees_every_string_but_not_the_request(
    embedded: Cluster, provider: FakeProvider
) -> None:
    # Given a redactor that hides e-mail addresses
    email = re.compile(r"[\w.]+@[\w.]+")
    baton.debug.set_redactor(lambda text: email.sub("<email>", text))
    provider.respond("reply to ada@example.org")

    @llm_actor(broker=embedded.broker, model=MODEL, max_retries=0)
    def mail(api_base: str) -> None:
        complete(user("write to bob@example.com"), api_base=api_base, api_key="k", user="x@y.z")

    run = baton.Workflow(name="mail").add("mail", mail.message(provider.url)).insert()
    assert run.wait(timeout=TIMEOUT) == "completed"

    # Then the logs hold none, while the provider got the prompt as written
    [log] = baton.debug.get_logs(run.id)
    assert log.messages == user("write to <email>")
    assert log.response_text == "reply to <email>"
    assert log.params is not None and log.params["user"] == "<email>"
    assert provider.requests[0].messages == user("write to bob@example.com")


def test_a_redactor_that_raises_stores_the_value_as_redacted() -> None:
    def broken(text: str) -> str:
        raise RuntimeError("oops")

    baton.debug.set_redactor(broken)
    assert Scrubber().value({"content": "anything", "n": 3}) == {"content": REDACTED, "n": 3}
    with pytest.raises(TypeError, match="set_redactor needs a function"):
        baton.debug.set_redactor("not a function")  # type: ignore[arg-type]


def test_capture_off_records_stats_but_no_context(
    embedded: Cluster, provider: FakeProvider
) -> None:
    @llm_actor(broker=embedded.broker, model=MODEL, max_retries=0, capture=False)
    def private(api_base: str) -> None:
        complete(user("private"), api_base=api_base, api_key="k")
        complete(user("opted in"), api_base=api_base, api_key="k", capture=True)

    @llm_actor(broker=embedded.broker, model=MODEL, max_retries=0)
    def chatty(api_base: str) -> None:
        complete(user("opted out"), api_base=api_base, api_key="k", capture=False)

    run = (
        baton.Workflow(name="capture")
        .add("private", private.message(provider.url))
        .add("chatty", chatty.message(provider.url))
        .insert()
    )
    assert run.wait(timeout=TIMEOUT) == "completed"
    logs = baton.debug.get_logs(run.id)
    assert [(log.step_name, log.messages) for log in logs] == [("private", user("opted in"))]
    assert baton.stats.workflow_cost(run.id).calls == 3


def test_each_field_is_cut_to_the_size_cap_and_marked_truncated(
    embedded: Cluster, provider: FakeProvider
) -> None:
    # Given a cap of 1,000 characters per field, a huge prompt and a long answer
    baton.debug.set_field_limit(1_000)
    provider.respond("y" * 5_000)

    @llm_actor(broker=embedded.broker, model=MODEL, max_retries=0)
    def big(api_base: str) -> int:
        messages = [{"role": "system", "content": "be brief"}, *user("x" * 50_000)]
        return len(complete(messages, api_base=api_base, api_key="k").text)

    run = baton.Workflow(name="big").add("big", big.message(provider.url)).insert()
    assert run.wait(timeout=TIMEOUT) == "completed"
    assert run.results()["big"] == 5_000  # the step got it all; only the log is cut

    [log] = baton.debug.get_logs(run.id)
    assert log.truncated
    assert log.messages is not None and log.messages[0] == {"role": "system", "content": "be brief"}
    assert len(json.dumps(log.messages)) <= 1_000
    assert log.messages[1]["content"].endswith("characters cut]")
    assert log.response_text is not None and len(log.response_text) <= 1_000
    assert log.response_text.startswith("yyy") and log.response_text.endswith("characters cut]")
    with pytest.raises(ValueError, match="at least 256"):
        baton.debug.set_field_limit(10)


def test_the_scrubber_knows_secret_keys_and_shapes_but_leaves_token_counts() -> None:
    scrub = Scrubber(secrets=["my-own-secret-value"])
    assert scrub.value(
        {
            "max_tokens": 100,
            "prompt_tokens": 5,
            "Authorization": "Bearer abc",
            "aws_secret_access_key": "x",
            "nested": [{"hf_token": "t", "note": "say my-own-secret-value"}],
        }
    ) == {
        "max_tokens": 100,
        "prompt_tokens": 5,
        "Authorization": REDACTED,
        "aws_secret_access_key": REDACTED,
        "nested": [{"hf_token": REDACTED, "note": f"say {REDACTED}"}],
    }
    shapes = {
        "Authorization: Basic dXNlcjpwYXNz": f"Authorization: Basic {REDACTED}",
        "curl -H 'x-api-key: abc123'": f"curl -H 'x-api-key: {REDACTED}'",
        "?api_key=zzz&q=1": f"?api_key={REDACTED}&q=1",
        "key sk-proj-abcdefghijklmnop1234": f"key {REDACTED}",
        "google AIzaSyA-1234567890abcdefghijklmnopqrstu": f"google {REDACTED}",
        "aws AKIAIOSFODNN7EXAMPLE": f"aws {REDACTED}",
        "hf hf_abcdefghijklmnopqrstuvwx": f"hf {REDACTED}",
        "groq gsk_abcdefghijklmnopqrstuvwx": f"groq {REDACTED}",
        "the tokens used: 42": "the tokens used: 42",
    }
    for raw, redacted in shapes.items():
        assert scrub.text(raw) == redacted


def test_fit_cuts_the_longest_strings_first_and_keeps_the_structure() -> None:
    value = {"a": "short", "b": ["x" * 5_000, {"c": "y" * 3_000}], "n": 7}
    cut, truncated = fit(value, 2_000)
    assert truncated and len(json.dumps(cut)) <= 2_000
    assert cut["a"] == "short" and cut["n"] == 7
    assert cut["b"][0].startswith("xxx") and cut["b"][1]["c"].startswith("yyy")
    assert fit(value, 100_000) == (value, False)
