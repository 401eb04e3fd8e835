"""``fusekit convert``: a GGUF file into an ordinary Hugging Face model folder."""

from __future__ import annotations

from pathlib import Path

import typer

from fusekit.cli.app import app, user_errors
from fusekit.io.gguf import convert as convert_file


@app.command()
@user_errors
def convert(
    file: Path = typer.Argument(..., help="a .gguf model file"),
    output: Path = typer.Option(..., "-o", "--output", help="the model folder to write"),
    dtype: str | None = typer.Option(
        None, "--dtype", help="float32 (default: as dequantised) | bfloat16 | float16"
    ),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Dequantise a GGUF file into a safetensors model folder with its tokenizer.

    Recipes and commands also take the .gguf file directly and convert it once into
    fusekit's cache; this writes the folder where you choose.
    """

    convert_file(file, output, dtype=dtype, overwrite=overwrite)
    typer.echo(f"wrote {output}")
