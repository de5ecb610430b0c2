"""`haste llm ...`: a local OpenAI-compatible LLM server for `--policy llm`, offline."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from haste_dagster.llm.serve import (
    DEFAULT_CTX,
    DEFAULT_MAX_TOKENS,
    DEFAULT_PORT,
    ServeConfig,
    Served,
    exports,
    serve,
)

app = typer.Typer(help="A local LLM for the llm policy (no network, no key).", no_args_is_help=True)
console = Console(stderr=True)


@app.command("serve")
def serve_command(
    model: Path | None = typer.Option(
        None, help="GGUF model file (default: SmolLM2-135M-Instruct from the local-llm extra)"
    ),
    host: str = typer.Option(
        "127.0.0.1", help="interface to bind (loopback unless --allow-remote)"
    ),
    port: int = typer.Option(DEFAULT_PORT, help="port to listen on"),
    threads: int = typer.Option(1, help="CPU threads (1 on cores other work shares)"),
    ctx: int = typer.Option(DEFAULT_CTX, help="context window in tokens"),
    max_tokens: int = typer.Option(DEFAULT_MAX_TOKENS, help="cap on generated tokens per reply"),
    alias: str | None = typer.Option(None, help="model name clients send (default: file stem)"),
    allow_remote: bool = typer.Option(
        False, "--allow-remote", help="allow a non-loopback --host (the server has no API key)"
    ),
    verbose: bool = typer.Option(False, "--verbose", help="show llama.cpp's own log"),
) -> None:
    """Serve a GGUF model on an OpenAI-compatible endpoint until Ctrl-C or SIGTERM."""
    from haste_dagster.errors import HasteError

    def ready(server: Served) -> None:
        console.print(
            f"serving {server.model.name} on {server.url} (Ctrl-C stops it)", soft_wrap=True
        )
        for line in exports(server.url, server.alias):
            print(line, flush=True)  # stdout: `eval` / copy-paste friendly

    try:
        config = ServeConfig(
            model=model, host=host, port=port, threads=threads, ctx=ctx,
            max_tokens=max_tokens, alias=alias, allow_remote=allow_remote, verbose=verbose,
        )
        serve(config, on_ready=ready)
    except HasteError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(code=2) from exc
    console.print("stopped")
