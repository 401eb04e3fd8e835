"""fusekit.json, the model card and tokenizer copying."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from fusekit.io.hashing import folder_hash
from fusekit.io.provenance import (
    copy_tokenizer_and_generation_config,
    write_model_card,
    write_provenance,
)
from tests.tiny import make_tiny_model


def test_provenance_and_card(tmp_path: Path) -> None:
    base = make_tiny_model("llama", tmp_path / "base")
    out = tmp_path / "out"
    out.mkdir()
    write_provenance(
        out,
        strategy="block_expansion",
        recipe={"model": base},
        plan={"layers_after": 6},
        inputs={"model": base},
        summary={"trainable_layers": [2, 5]},
    )
    record = json.loads((out / "fusekit.json").read_text())
    assert record["strategy"] == "block_expansion"
    assert record["inputs"]["model"]["hash"] == folder_hash(base)
    assert record["recipe"]["model"] == str(base)
    assert record["trainable_layers"] == [2, 5]
    assert record["torch_version"] and record["transformers_version"]
    assert record["created"].endswith("+00:00")

    write_model_card(out, title="deeper", body="Some text.", base_models=[str(base)])
    text = (out / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front == {
        "library_name": "transformers",
        "tags": ["fusekit", "block_expansion"],
        "base_model": [str(base)],
    }
    assert "# deeper" in text and "Some text." in text


def test_copy_tokenizer_and_generation_config(tmp_path: Path) -> None:
    base = make_tiny_model("gpt2", tmp_path / "base")
    out = tmp_path / "out"
    out.mkdir()
    copied = copy_tokenizer_and_generation_config(base, out)
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= set(copied)
    assert (out / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    assert not (out / "config.json").exists()


def test_a_license_the_bases_share_is_carried(tmp_path: Path) -> None:
    bases = []
    for name, license_ in (("a", "apache-2.0"), ("b", "apache-2.0"), ("c", "mit")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "README.md").write_text(f"---\nlicense: {license_}\n---\n# {name}\n")
        bases.append(str(tmp_path / name))
    out = tmp_path / "out"
    out.mkdir()

    def card(base_models: list[str]) -> dict:
        write_model_card(out, title="t", body="b", base_models=base_models, strategy="calm")
        return yaml.safe_load((out / "README.md").read_text().split("---")[1])

    assert card(bases[:2])["license"] == "apache-2.0"
    assert "license" not in card(bases)  # mixed: the user decides
    assert "license" not in card([*bases[:1], str(tmp_path)])  # one base declares none
