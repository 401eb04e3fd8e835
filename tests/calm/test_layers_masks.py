"""Pure functions: layer pairs, mask keys and cross masks."""

from __future__ import annotations

import pytest
import torch

from fusekit.errors import PlanError
from fusekit.strategies.calm.layers import check_pairs, config_facts, default_pairs, parse_layer
from fusekit.strategies.calm.masks import (
    cross_mask,
    offset_keys,
    positions_from_mask,
    prompt_mask_from_labels,
)


def test_default_pairs_every_k_and_offset_convention() -> None:
    # 8-block augment, k=4 -> blocks 3 and 7; anchor 4 blocks -> one block before depth 1/2, 1
    assert default_pairs(8, 4, 4) == [(3, 0), (7, 2)]
    assert default_pairs(8, 8, 4) == [(3, 2), (7, 6)]
    # 8 augment blocks, k=2 against a 4-block anchor reaches the embedding output
    assert default_pairs(8, 4, 2) == [(1, -1), (3, 0), (5, 1), (7, 2)]
    # fewer blocks than k cannot be paired as asked: an error, not a silent single pair
    with pytest.raises(PlanError, match="every: 4 pairs no layer of a 2-layer augment"):
        default_pairs(2, 4, 4)


def test_check_pairs_accepts_embed_and_refuses_out_of_range() -> None:
    assert check_pairs([("embed", 0), (7, "3")], 8, 4, "pairs[0]") == [(-1, 0), (7, 3)]
    with pytest.raises(PlanError, match=r"pairs\[0\]: augment layer 8"):
        check_pairs([(8, 0)], 8, 4, "pairs[0]")
    with pytest.raises(PlanError, match="anchor layer 4"):
        check_pairs([(0, 4)], 8, 4, "pairs[0]")
    with pytest.raises(PlanError):
        parse_layer("first")


def test_config_facts_reads_gpt2_and_llama_names() -> None:
    assert config_facts({"n_embd": 32, "n_layer": 3, "n_head": 4}) == {
        "hidden_size": 32,
        "num_layers": 3,
        "num_heads": 4,
    }
    assert (
        config_facts({"hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2})[
            "num_layers"
        ]
        == 2
    )


def test_causal_mask_and_padding() -> None:
    mask = torch.tensor([[0, 1, 1, 1]])  # left padding
    keys = positions_from_mask(mask)
    vis = cross_mask(keys, mask.bool(), keys, mask.bool(), "causal")[0]
    expected = torch.tensor(
        [
            [0, 0, 0, 0],
            [0, 1, 0, 0],
            [0, 1, 1, 0],
            [0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(vis, expected)


def test_diagonal_mask_is_the_latest_visible() -> None:
    q = torch.tensor([[0, 1, 2]])
    kv = torch.tensor([[0, 1, 2]])
    ones = torch.ones(1, 3, dtype=torch.bool)
    assert torch.equal(cross_mask(q, ones, kv, ones, "diagonal")[0], torch.eye(3, dtype=torch.bool))
    # character keys: anchor ends 3, 5, 9; augment ends 2, 5, 7, 9
    vis = cross_mask(
        torch.tensor([[3, 5, 9]]),
        ones,
        torch.tensor([[2, 5, 7, 9]]),
        torch.ones(1, 4, dtype=torch.bool),
        "diagonal",
    )[0]
    assert vis.int().tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    with pytest.raises(ValueError):
        cross_mask(q, ones, kv, ones, "full")


def test_offset_keys_specials() -> None:
    # BOS (0,0) then text ending at 3, 5, then an appended EOS (0,0)
    keys, valid = offset_keys([0, 3, 5, 0], is_augment=True)
    assert keys == [0, 3, 5, 5]
    assert valid == [True, True, True, False]  # the trailing special would leak the end
    keys, valid = offset_keys([0, 3, 5, 0], is_augment=False)
    assert valid == [True] * 4


def test_prompt_mask_from_labels() -> None:
    labels = torch.tensor([[-100, -100, 7, 8, -100]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    assert prompt_mask_from_labels(labels, mask).int().tolist() == [[1, 1, 0, 0, 0]]


@pytest.mark.parametrize("null_key", [True, False])
def test_diagonal_fast_path_equals_full_attention(null_key: bool) -> None:
    """The one-visible-position shortcut computes what masked attention computes."""
    from fusekit.strategies.calm.composition import CrossBlock

    torch.manual_seed(0)
    fast = CrossBlock(24, 32, 8, kv_norm=True, null_key=null_key, diagonal=True)
    torch.nn.init.normal_(fast.o_proj.weight)
    if null_key:
        torch.nn.init.normal_(fast.null_key)
    full = CrossBlock(24, 32, 8, kv_norm=True, null_key=null_key, diagonal=False)
    full.load_state_dict(fast.state_dict())
    h, h_aug = torch.randn(3, 6, 32), torch.randn(3, 7, 24)
    visible = torch.zeros(3, 6, 7, dtype=torch.bool)
    visible[:, torch.arange(6), torch.arange(6) + 1] = True  # anchor t reads augment t+1
    visible[0, :2] = False  # rows that read nothing add nothing
    k, v = fast.memory(h_aug)
    torch.testing.assert_close(fast(h, k, v, visible), full(h, k, v, visible))
    assert fast(h, k, v, visible)[0, :2].abs().max() == 0
    # a row with two visible positions is not diagonal: the block falls back to attention
    visible[1, 3, 2] = True
    torch.testing.assert_close(fast(h, k, v, visible), full(h, k, v, visible))
