"""From-scratch model sources: trained once, cached by spec, loadable as HF folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusekit.errors import ModelIOError
from fusekit.models.resolve import resolve_model
from fusekit.models.scratch import scratch_folder
from fusekit.recipe import parse_recipe


def test_scratch_model_is_trained_once_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUSEKIT_CACHE", str(tmp_path / "cache"))
    recipe = parse_recipe(
        {
            "strategy": "block_expansion",
            "groups": 1,
            "model": {
                "from_scratch": {
                    "task": "numeric_arithmetic", "hidden_size": 32, "layers": 2, "heads": 2,
                    "steps": 3, "batch_size": 8, "seq_len": 16,
                }
            },
        }
    )  # fmt: skip
    folder = resolve_model(recipe.model)
    assert folder == scratch_folder(recipe.model.from_scratch)
    assert folder.is_relative_to(tmp_path / "cache")
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(recipe.model) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert model.config.num_hidden_layers == 2 and len(tok) == model.config.vocab_size
    # A different spec is a different model.
    other = recipe.model.from_scratch.model_copy(update={"seed": 1})
    assert scratch_folder(other) != folder


def test_local_reference_checked_at_resolve_time(tmp_path: Path) -> None:
    with pytest.raises(ModelIOError, match="does not exist"):
        resolve_model(str(tmp_path / "gone"))


def test_scratch_optimizer_fields_key_the_cache_only_when_set() -> None:
    """Specs written before ``weight_decay``/``adam_beta2`` existed keep their cached models."""
    import hashlib
    import json

    from fusekit import __version__
    from fusekit.models.scratch import scratch_key
    from fusekit.recipe.common import ScratchSpec

    spec = ScratchSpec(task="kv_substitution", tokenizer="kv", steps=10)
    old = spec.model_dump(mode="json")
    old.pop("weight_decay")
    old.pop("adam_beta2")
    payload = json.dumps({"v": __version__, "spec": old}, sort_keys=True)
    assert scratch_key(spec) == hashlib.sha256(payload.encode()).hexdigest()[:16]
    decayed = spec.model_copy(update={"weight_decay": 0.0})
    assert scratch_key(decayed) != scratch_key(spec)
    steadier = spec.model_copy(update={"adam_beta2": 0.95})
    assert len({scratch_key(steadier), scratch_key(decayed), scratch_key(spec)}) == 3


def test_weight_decay_belongs_to_from_scratch_models_not_to_data() -> None:
    from pydantic import ValidationError

    from fusekit.recipe.common import TaskData

    with pytest.raises(ValidationError, match="weight_decay"):
        TaskData(task="english", weight_decay=0.0)


def test_models_to_train_train_side_by_side_with_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parallel workers train exactly what one-after-the-other training would."""
    from concurrent.futures import ProcessPoolExecutor

    import fusekit.models.scratch as sources
    from fusekit.models.resolve import resolve_models
    from fusekit.recipe.common import ScratchModel

    shape = {"hidden_size": 32, "layers": 2, "heads": 2, "steps": 3, "batch_size": 8}
    refs = [
        ScratchModel(from_scratch={"task": "numeric_arithmetic", "tokenizer": "kv", **shape}),
        ScratchModel(from_scratch={"task": "kv_substitution", "tokenizer": "kv", **shape}),
    ]
    monkeypatch.setenv("FUSEKIT_CACHE", str(tmp_path / "one-by-one"))
    monkeypatch.setattr(sources, "_parallel_slots", lambda: 1)
    sequential = resolve_models(refs)
    monkeypatch.setenv("FUSEKIT_CACHE", str(tmp_path / "parallel"))
    started = []
    monkeypatch.setattr(sources, "_parallel_slots", lambda: 2)
    monkeypatch.setattr(
        "concurrent.futures.ProcessPoolExecutor",
        lambda *a, **k: started.append(a) or ProcessPoolExecutor(*a, **k),
    )
    parallel = resolve_models([*refs, refs[0]])  # a repeated model is trained once
    assert started == [(2,)]
    assert parallel[0] == parallel[2] and parallel[0].is_relative_to(tmp_path / "parallel")
    for one, two in zip(sequential, parallel, strict=False):
        assert (one / "model.safetensors").read_bytes() == (two / "model.safetensors").read_bytes()
    monkeypatch.setattr(  # everything cached now: no pool at all
        "concurrent.futures.ProcessPoolExecutor", lambda *a, **k: pytest.fail("no pool needed")
    )
    assert resolve_models(refs) == parallel[:2]
