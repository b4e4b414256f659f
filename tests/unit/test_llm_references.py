"""What an LLM model version stores instead of a key or a file, and what the slot does with
it outside Kubernetes: Secret key references and GGUF storage URIs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bgserve.errors import InvalidInput
from bgserve.kube.kserve.llm_objects import LlmServing
from bgserve.llm.llm_model import LlmError, LlmLoadError, _OpenAI, gguf_from_storage
from bgserve.llm.references import (
    SecretKeyRef,
    check_secret_ref,
    check_weights_uri,
    parse_secret_ref,
)


def test_a_secret_reference_is_secret_slash_key() -> None:
    assert parse_secret_ref("llm-endpoint/api-key") == SecretKeyRef("llm-endpoint", "api-key")
    assert parse_secret_ref("a.b-c/KEY_1.x") == SecretKeyRef("a.b-c", "KEY_1.x")
    assert str(SecretKeyRef("llm", "token")) == "llm/token"


@pytest.mark.parametrize(
    "text",
    [
        "llm-endpoint",
        "/key",
        "name/",
        "Bad_Name/key",
        "name/a/b",
        "name/k y",
        "-x/key",
        "n" * 254 + "/k",
    ],
)
def test_a_malformed_secret_reference_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_secret_ref(text)
    assert refused.value.field == "api_key_secret"


def test_a_rendering_refuses_what_the_registry_refuses() -> None:
    bad = SecretKeyRef("llm", "a/b")
    with pytest.raises(InvalidInput) as registry:
        check_secret_ref(bad)
    with pytest.raises(InvalidInput) as rendering:
        LlmServing("openai", "m", openai_url="http://h/v1", api_key_env="K", api_key_secret=bad)
    assert registry.value.field == rendering.value.field == "api_key_secret"


@pytest.mark.parametrize(
    "uri", ["s3://bucket/m.gguf", "gs://b/dir/", "hf://org/repo", "pvc://claim/models/m.gguf"]
)
def test_storage_uris_a_storage_initializer_fetches_are_taken(uri: str) -> None:
    assert check_weights_uri(uri) == uri


@pytest.mark.parametrize(
    "uri", ["http://h/m.gguf", "/models/m.gguf", "s3://", "file:///m.gguf", "models:/m/1"]
)
def test_other_uris_are_refused_naming_the_field(uri: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_weights_uri(uri)
    assert refused.value.field == "gguf_uri"
    with pytest.raises(InvalidInput) as rendering:
        LlmServing("gguf", "m", weights_uri=uri)
    assert rendering.value.field == "weights_uri"


def test_without_a_fetched_directory_a_gguf_by_reference_is_refused_saying_why() -> None:
    with pytest.raises(LlmLoadError) as refused:
        gguf_from_storage("s3://b/m.gguf", None)
    message = str(refused.value)
    assert "s3://b/m.gguf" in message and "--gguf PATH" in message and "local backend" in message


def test_the_fetched_gguf_is_the_one_the_uri_names_else_the_only_one(tmp_path: Path) -> None:
    one = tmp_path / "one"
    (one / "sub").mkdir(parents=True)
    (one / "sub" / "model.Q4.gguf").write_bytes(b"GGUF")
    (one / "README.md").write_text("not a model")
    assert gguf_from_storage("hf://org/repo", str(one)) == one / "sub" / "model.Q4.gguf"
    (one / "model.Q8.gguf").write_bytes(b"GGUF")
    assert gguf_from_storage("s3://b/x/model.Q8.gguf", str(one)) == one / "model.Q8.gguf"
    with pytest.raises(LlmLoadError, match="holds 2 GGUF files"):
        gguf_from_storage("hf://org/repo", str(one))
    single = one / "model.Q8.gguf"
    assert gguf_from_storage("pvc://claim/model.Q8.gguf", str(single)) == single


def refusing_endpoint(engine: _OpenAI) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert "authorization" not in request.headers
        return httpx.Response(401, json={"error": {"message": "missing API key"}})

    engine.client = httpx.Client(transport=httpx.MockTransport(answer))


def test_a_key_filled_from_a_secret_only_on_kubernetes_is_named_when_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LLM_KEY_NOT_SET", raising=False)
    engine = _OpenAI("http://llm/v1", "m", "LLM_KEY_NOT_SET", "llm-endpoint/api-key")
    refusing_endpoint(engine)
    with pytest.raises(LlmError) as refused:
        engine.complete([{"role": "user", "content": "hi"}], {})
    message = refused.value.message
    assert refused.value.status_code == 401 and "missing API key" in message
    assert "LLM_KEY_NOT_SET is not set" in message and "llm-endpoint/api-key" in message
    assert "cannot read" in message
    plain = _OpenAI("http://llm/v1", "m", None)
    refusing_endpoint(plain)
    with pytest.raises(LlmError) as without:
        plain.complete([{"role": "user", "content": "hi"}], {})
    assert without.value.message == "the LLM endpoint answered 401: missing API key"
