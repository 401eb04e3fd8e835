"""The validation pass every run makes before any work (and ``--dry-run``, ``validate``).

A recipe that parses can still name a folder fusekit cannot use completely or a
data file it cannot read; found half-way through a surgery or after an hour of
training, either costs the user the work and leaves them a traceback.  This pass
checks every local model folder completely (``fusekit.io.validate``) and reads
every data file once — decoding it, checking its records — so those problems are
one line each, up front.  Models fusekit trains itself (``scratch:`` specs) are
built by fusekit and skipped.
"""

from __future__ import annotations

from pathlib import Path

from fusekit.data.chat import is_conversational, template_text
from fusekit.errors import DataError
from fusekit.io.validate import check_model
from fusekit.models.resolve import local_models, with_converted_models
from fusekit.recipe.common import BaseRecipe, DataRef, FileData, TaskData
from fusekit.registry import strategy_class
from fusekit.strategies.base import Strategy
from fusekit.tasks import CHAT_TASKS


def file_data(ref: DataRef) -> list[FileData]:
    """The ``FileData`` parts of a data reference (one or a list); built-in tasks are not files."""
    refs = ref if isinstance(ref, list) else [ref]
    return [r for r in refs if isinstance(r, FileData)]


def _no_conversations(where: str, what: str, strategy: Strategy) -> DataError:
    return DataError(
        f"{where}: {what}, and {strategy.tag} trains on text and prompt/completion strings "
        "only; finetune, block_expansion, depth_upscaling and calm train on conversations"
    )


def check_data(recipe: BaseRecipe, strategy: Strategy | None = None) -> None:
    """Read every training and evaluation data file once, as the run will, a record at a
    time (a corpus larger than memory is checked too); refuse a chat template path that
    names no file, conversations (a file's or a built-in task's) in the training data
    of a strategy that cannot train on them, and ``train.streaming`` for a strategy that
    reads its data into memory."""
    from fusekit.data.causal_lm import located_records  # numpy: imported when data is read

    streaming = recipe.train is not None and recipe.train.streaming
    if strategy is not None and streaming and not strategy.takes_streaming:
        raise DataError(
            f"train.streaming: {strategy.tag} makes its examples for several models before "
            "training (cached, not streamed); finetune, block_expansion and depth_upscaling "
            "stream; drop train.streaming"
        )
    for value in recipe.chat_templates().values():
        template_text(value)  # a template path with a typo fails here, before any work
    refuse = strategy if strategy is not None and not strategy.takes_conversations else None
    for data in recipe.shaping_data():
        for part in data if isinstance(data, list) else [data]:
            if refuse and isinstance(part, TaskData) and part.task in CHAT_TASKS:
                raise _no_conversations(f"task {part.label()}", "it is conversations", refuse)
    for ref in [r for data in recipe.shaping_data() for r in file_data(data)]:
        for where, record in located_records(ref):
            if refuse and is_conversational(record):
                raise _no_conversations(where, "the record is a conversation", refuse)
    for ref in [r for data in recipe.eval_data() for r in file_data(data)]:
        for _ in located_records(ref):
            pass


def checked(recipe: BaseRecipe) -> tuple[BaseRecipe, Strategy]:
    """The recipe with ``.gguf`` references converted, its strategy, the pass made."""
    recipe = with_converted_models(recipe)
    strategy = strategy_class(recipe.strategy)(recipe)
    check_inputs(recipe, strategy)
    return recipe, strategy


def check_inputs(recipe: BaseRecipe, strategy: Strategy) -> None:
    """The whole pass: models, then data; raises the first problem as one line."""
    seen: set[Path] = set()
    for ref in local_models(recipe):
        path = Path(ref.path).expanduser().resolve()
        if path in seen:
            continue
        seen.add(path)
        check_model(
            path,
            allow_pickle=ref.allow_pickle,
            trust_remote_code=ref.trust_remote_code,
            need_tokenizer=strategy.needs_tokenizer(),
        )
    check_data(recipe, strategy)


__all__ = ["check_data", "check_inputs", "checked", "file_data"]
