"""API keys come from env vars and mounted files, are matched by digest, and may be limited to models."""

from __future__ import annotations

import pytest

from cluster.errors import UserError
from serve.args import ApiKeyArgs
from serve.auth import find_key, load_keys, may_use


def test_keys_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY_A", "sk-a")
    (tmp_path / "b").write_text("sk-b\n")
    keys = load_keys([ApiKeyArgs(env="TEST_KEY_A"), ApiKeyArgs(file=str(tmp_path / "b"), models=["bravo"])])
    a, b = find_key(keys, "Bearer sk-a"), find_key(keys, "bearer sk-b")
    assert a.source == "env TEST_KEY_A" and b.source.startswith("file ")
    assert find_key(keys, "Bearer sk-c") is None and find_key(keys, None) is None and find_key(keys, "sk-a") is None
    assert may_use(a, "anything") and may_use(b, "bravo") and not may_use(b, "alpha") and may_use(None, "alpha")
    assert "sk-a" not in repr(keys)  # only digests are kept


def test_missing_keys_are_named_in_one_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_KEY_MISSING", raising=False)
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(UserError, match=r"env TEST_KEY_MISSING, file .*empty, file /no/such/secret"):
        load_keys(
            [ApiKeyArgs(env="TEST_KEY_MISSING"), ApiKeyArgs(file=str(tmp_path / "empty")), ApiKeyArgs(file="/no/such/secret")]
        )
