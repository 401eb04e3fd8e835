"""``fusekit eval``: score any model folder or fusekit output on a data file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fusekit.api import evaluate
from fusekit.cli.app import app, user_errors
from fusekit.errors import FusekitError
from fusekit.evaluation.report import terminal_table
from fusekit.io.output import write_file


@app.command("eval")
@user_errors
def eval_(
    path: Path = typer.Argument(..., help="HF model folder or fusekit output"),
    data: str = typer.Option(
        ..., "--data", help="data file: .jsonl, .json, .txt, .parquet or a datasets folder"
    ),
    metric: str = typer.Option("bpb", "--metric", help="bpb | perplexity | exact_match | mc"),
    batch_size: int = typer.Option(8, "--batch-size"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the result as JSON"),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="load pickled (.bin) weights: runs code from the file"
    ),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="run model code shipped in the model folder"
    ),
    chat_template: str | None = typer.Option(
        None,
        "--chat-template",
        help="template conversations are rendered in: a file or the template itself; "
        "default: the model's tokenizer's",
    ),
    base: list[str] = typer.Option(
        [],
        "--base",
        help="NAME=DIR: where a CALM output's moved base now is (anchor, augment0, …); "
        "its hash is still checked",
    ),
) -> None:
    """Evaluate one model on one data set and print the result."""

    bases: dict[str, str] = {}
    for item in base:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise FusekitError(f"--base {item!r}: give NAME=DIR, e.g. --base anchor=/models/a")
        bases[name.strip()] = folder

    result = evaluate(
        path,
        data,
        metric,
        batch_size=batch_size,
        chat_template=chat_template,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        bases=bases,
    )
    typer.echo(terminal_table([result]))
    if json_out is not None:
        write_file(json_out, json.dumps(result, indent=2) + "\n")
