"""After FSDP2, rank 0 holds the trained model as a plain module: ties, buffers, freeze mask.

``fully_shard`` turns a model's parameters into shards for good, and every strategy
saves and scores a plain module; ``PlainCopy`` gathers the shards into a skeleton
taken before sharding.  A one-rank gloo group is enough to shard for real here; the
two-rank runs of every strategy are in tests/pipeline/test_fsdp.py.
"""

from __future__ import annotations

from pathlib import Path


def test_the_gathered_module_is_the_trained_one_with_its_ties(tmp_path: Path) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from transformers import LlamaConfig, LlamaForCausalLM

    from fusekit.training.sharding import PlainCopy, sharded_units

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=24, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
        )  # fmt: skip
        model = LlamaForCausalLM(cfg)
        model.model.layers[0].requires_grad_(False)  # frozen beside trainable, in one unit
        plain = PlainCopy(model)
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        assert sharded_units(model) == 3
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
        ids = torch.randint(0, 24, (2, 8))
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        trained = {k: v.full_tensor().clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            logits = model(input_ids=ids).logits

        # a checkpoint's gather at another step is not reused for the end of training
        plain.keep(1, "stale")
        plain.restore(model, step=2)
        assert not plain.kept_at(1)

        assert sharded_units(model) == 0
        assert not any(isinstance(p, DTensor) for p in model.parameters())
        assert model.lm_head.weight is model.model.embed_tokens.weight
        assert not any(p.requires_grad for p in model.model.layers[0].parameters())
        assert all(p.requires_grad for p in model.model.layers[1].parameters())
        state = model.state_dict()
        assert state.keys() == trained.keys()
        assert all(torch.equal(state[k], trained[k]) for k in trained)
        with torch.no_grad():  # buffers (rotary frequencies) came along: the same outputs
            torch.testing.assert_close(model(input_ids=ids).logits, logits)
    finally:
        dist.destroy_process_group()


def test_a_gather_kept_at_the_last_step_is_reused(tmp_path: Path) -> None:
    """Every rank skips the end's collective when the last checkpoint already gathered."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaConfig, LlamaForCausalLM

    from fusekit.training import sharding

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        cfg = LlamaConfig(vocab_size=24, hidden_size=16, intermediate_size=32,
                          num_hidden_layers=1, num_attention_heads=2)  # fmt: skip
        model = LlamaForCausalLM(cfg)
        plain = sharding.PlainCopy(model)
        fully_shard(model)
        gathered = plain.gather(model)
        plain.keep(5, gathered)
        calls: list[int] = []
        original = plain.gather
        plain.gather = lambda m: calls.append(1) or original(m)  # type: ignore[method-assign]
        plain.restore(model, step=5)
        assert calls == [] and model.__dict__ is gathered.__dict__ and not plain.kept_at(5)
        assert sharding.sharded_units(model) == 0
    finally:
        dist.destroy_process_group()
