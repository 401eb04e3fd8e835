"""A CPU-sized FuseLLM reproduction: two specialist sources, one target, CLM vs FuseLLM.

Setting (SPEC §2, "what a quick prototype measured"):

* three tokenizers that really differ: the *code* source uses a byte-level BPE
  trained on code, the *English* source a SentencePiece-style Metaspace BPE
  trained on English, the target a byte-level BPE trained on the 50/50 mix;
* sources (tiny Llamas) are trained from scratch on their own domain until they
  beat the target there; the target is trained briefly on the mix;
* continual training of the target on the 50/50 mix, same steps, same data
  order, (a) CLM only (λ = 1) and (b) FuseLLM (λ < 1, MinCE over both sources),
  through ``FuseLLMStrategy`` itself, for each seed;
* bits per byte on held-out code and English for sources, target, (a) and (b);
  alignment statistics (positions aligned, top-k kept) for EM, MinED and
  offsets, and how often MinCE picks the in-domain source.

Run:  nice python3 -m fusekit.strategies.fusellm.experiment --workdir runs/fusellm
Trained sources and target are cached in the workdir, so re-running with other
continual settings (``--lam``, ``--align``, ``--seeds``) reuses them.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

DOMAINS = ("code", "english")


@dataclass
class Config:
    workdir: str = "runs/fusellm"
    vocab: int = 2048
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    seq_len: int = 128
    batch: int = 32
    source_steps: int = 500
    target_steps: int = 150
    pretrain_lr: float = 3e-3
    continual_steps: int = 200
    continual_lr: float = 1e-3
    lam: float = 0.5
    top_k: int = 10
    align: str = "offsets"
    fusion: str = "mince"
    variant: str = "improved"
    seeds: tuple[int, ...] = (0, 1)
    eval_chars: int = 60_000
    stats_chunks: int = 48
    extra: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- models and data


def _tokenizer(cfg: Config, name: str, kind: str, texts: list[str]) -> Any:
    from transformers import AutoTokenizer

    from fusekit.tasks.tokenizers import train_tokenizer

    folder = Path(cfg.workdir) / "tokenizers" / name
    if (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tok = train_tokenizer(kind, texts, cfg.vocab)
    tok.save_pretrained(folder)
    return tok


def _new_model(cfg: Config, tokenizer: Any, seed: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=cfg.hidden,
        intermediate_size=4 * cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=4 * cfg.seq_len,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def _pretrain(
    cfg: Config, model: Any, tokenizer: Any, texts: list[str], steps: int, seed: int
) -> list[float]:
    """Plain next-token training on packed blocks (AdamW, warm-up + cosine)."""
    import torch

    from fusekit.training.data import pack_texts

    blocks = torch.tensor(pack_texts(tokenizer, texts, cfg.seq_len))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    from tqdm.auto import tqdm

    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="pretrain", mininterval=10):
        idx = torch.randint(0, len(blocks), (cfg.batch,), generator=gen)
        batch = blocks[idx]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def _bpb(cfg: Config, folder: Path, texts: list[str]) -> float:
    from fusekit.evaluation import score_texts
    from fusekit.io.loading import load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(folder), load_tokenizer(folder)
    return round(
        score_texts(model, texts, tokenizer=tok, max_length=cfg.seq_len, batch_size=16).bpb, 4
    )


def _heldout(cfg: Config) -> dict[str, list[str]]:
    from fusekit.tasks.corpora import domain_documents

    return {d: domain_documents(d, "heldout", max_chars=cfg.eval_chars) for d in DOMAINS}


def _train_texts(cfg: Config) -> dict[str, list[str]]:
    from fusekit.tasks.corpora import domain_documents, mixed_documents

    code_chars = cfg.source_steps * cfg.batch * cfg.seq_len * 4
    return {
        "code": domain_documents("code", "train", max_chars=code_chars),
        "english": domain_documents("english", "train"),
        "mix": mixed_documents(DOMAINS, "train"),
    }


def ensure_parents(cfg: Config, log: dict[str, Any]) -> dict[str, Path]:
    """Train (or reuse) the two sources and the target; record their held-out bpb."""
    texts = _train_texts(cfg)
    toks = {
        "code_source": _tokenizer(cfg, "code_bpe", "bpe", texts["code"]),
        "english_source": _tokenizer(cfg, "english_metaspace", "metaspace", texts["english"]),
        "target": _tokenizer(cfg, "mix_bpe", "bpe", texts["mix"]),
    }
    plan = {
        "code_source": (texts["code"], cfg.source_steps, 1),
        "english_source": (texts["english"], cfg.source_steps, 2),
        "target": (texts["mix"], cfg.target_steps, 3),
    }
    folders = {}
    for name, (data, steps, seed) in plan.items():
        folder = Path(cfg.workdir) / "models" / name
        if not (folder / "done.json").is_file():
            start = time.perf_counter()
            model = _new_model(cfg, toks[name], seed)
            losses = _pretrain(cfg, model, toks[name], data, steps, seed)
            model.save_pretrained(folder, safe_serialization=True)
            toks[name].save_pretrained(folder)
            info = {
                "steps": steps,
                "final_loss": sum(losses[-20:]) / 20,
                "seconds": time.perf_counter() - start,
            }
            (folder / "done.json").write_text(json.dumps(info))
        folders[name] = folder
        log.setdefault("parents", {})[name] = json.loads((folder / "done.json").read_text())
    return folders


# ---------------------------------------------------------------- continual training


def continual(
    cfg: Config, folders: dict[str, Path], name: str, lam: float, seed: int, **over: Any
) -> dict[str, Any]:
    """One continual run through ``FuseLLMStrategy``; cached by name."""
    from fusekit.recipe import TrainSpec
    from fusekit.strategies.fusellm.strategy import FuseLLMStrategy

    out = Path(cfg.workdir) / "continual" / f"{name}-seed{seed}"
    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    mix = _train_texts(cfg)["mix"]
    recipe = SimpleNamespace(
        target=str(folders["target"]),
        sources=[str(folders["code_source"]), str(folders["english_source"])],
        lam=lam,
        top_k=cfg.top_k,
        temperature=1.0,
        fusion=over.get("fusion", cfg.fusion),
        align=over.get("align", cfg.align),
        mode="online",
        reference_fallback=over.get("reference_fallback", False),
        variant=over.get("variant", cfg.variant),
        cache_dir=str(Path(cfg.workdir) / "cache"),
        train=TrainSpec(
            steps=cfg.continual_steps,
            lr=cfg.continual_lr,
            batch_size=cfg.batch,
            seq_len=cfg.seq_len,
            seed=seed,
            warmup_steps=cfg.continual_steps // 20,
            weight_decay=0.01,
            log_steps=max(1, cfg.continual_steps // 10),
        ),
        train_data=lambda: mix,
    )
    out.mkdir(parents=True, exist_ok=True)
    summary = FuseLLMStrategy(recipe).run(out)
    summary.update({"lam": lam, "seed": seed, **over})
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


# ---------------------------------------------------------------- statistics


def alignment_report(cfg: Config, folders: dict[str, Path]) -> dict[str, Any]:
    """Per source and method: positions aligned, top-k kept; MinCE's in-domain picks."""
    import numpy as np
    import torch

    from fusekit.io.loading import load_causal_lm, load_tokenizer
    from fusekit.strategies.fusellm.data import chunk_texts, encode_chunks
    from fusekit.strategies.fusellm.extract import source_outputs
    from fusekit.strategies.fusellm.fusion import aligned_candidates
    from fusekit.strategies.fusellm.prepare import prepare_source

    tgt_tok = load_tokenizer(folders["target"])
    texts = _train_texts(cfg)
    chunks = {d: chunk_texts(texts[d], tgt_tok, cfg.seq_len)[: cfg.stats_chunks] for d in DOMAINS}
    report: dict[str, Any] = {}
    ce: dict[str, dict[str, list[float]]] = {}
    for src in ("code_source", "english_source"):
        tok, model = load_tokenizer(folders[src]), load_causal_lm(folders[src])
        for domain in DOMAINS:
            tgt_encs = encode_chunks(tgt_tok, chunks[domain], cfg.seq_len)
            outs = None
            for method in ("em", "mined", "offsets"):
                prep = prepare_source(
                    tok,
                    tgt_tok,
                    chunks[domain],
                    tgt_encs,
                    align=method,
                    max_len=4 * cfg.seq_len,
                    cache_dir=Path(cfg.workdir) / "cache" / "vocab_maps",
                    progress=False,
                )
                if outs is None:
                    outs = [
                        source_outputs(
                            model,
                            torch.from_numpy(e.ids)[None],
                            torch.ones(1, len(e)).long(),
                            cfg.top_k,
                        )
                        for e in prep.encodings
                    ]
                    ce.setdefault(src, {})[domain] = [
                        float(o["nats"][0]) / e.n_bytes
                        for o, e in zip(outs, prep.encodings, strict=True)
                    ]
                kept = total = paired = exact = 0
                for a, se, te in zip(prep.align, prep.encodings, tgt_encs, strict=True):
                    hit = np.flatnonzero(a >= 0)
                    paired += len(hit)
                    exact += int((se.spans[a[hit]] == te.spans[hit]).all(axis=1).sum())
                for o, a in zip(outs, prep.align, strict=True):
                    align = torch.from_numpy(a)[None]
                    *_, n_kept = aligned_candidates(
                        o["topk_ids"],
                        o["topk_logits"],
                        align,
                        torch.from_numpy(prep.vocab_map),
                        len(tgt_tok),
                    )
                    kept += int(n_kept[align >= 0].sum())
                    total += int((align >= 0).sum()) * o["topk_ids"].shape[-1]
                report.setdefault(src, {}).setdefault(domain, {})[method] = {
                    "aligned": round(prep.stats["aligned_positions"], 4),
                    "kept": round(kept / max(total, 1), 4),
                    "vocab_exact": round(prep.stats["vocab"]["exact"], 4),
                    # share of pairs whose two tokens cover the same bytes (1.0 for offsets)
                    "same_span": round(exact / max(paired, 1), 4),
                }
    picks = {}
    for domain, own in (("code", "code_source"), ("english", "english_source")):
        other = "english_source" if own == "code_source" else "code_source"
        wins = [a < b for a, b in zip(ce[own][domain], ce[other][domain], strict=True)]
        picks[domain] = round(sum(wins) / len(wins), 4)
    report["mince_in_domain_share"] = picks
    return report


# ---------------------------------------------------------------- the run


def run(cfg: Config) -> dict[str, Any]:
    log: dict[str, Any] = {"config": asdict(cfg)}
    t0 = time.perf_counter()
    folders = ensure_parents(cfg, log)
    heldout = _heldout(cfg)
    bpb = {name: {d: _bpb(cfg, f, heldout[d]) for d in DOMAINS} for name, f in folders.items()}
    log["bpb"] = bpb
    log["sources_beat_target"] = {
        "code": bpb["code_source"]["code"] < bpb["target"]["code"],
        "english": bpb["english_source"]["english"] < bpb["target"]["english"],
    }
    print(
        "parents:", json.dumps(bpb), "sources beat target:", log["sources_beat_target"], flush=True
    )
    runs = [("clm", 1.0, {}), (f"fusellm-lam{cfg.lam}-{cfg.align}", cfg.lam, {})]
    for spec in cfg.extra:  # e.g. "lam=0.9", "align=mined,variant=reference"
        over: dict[str, Any] = dict(kv.split("=") for kv in spec.split(","))
        for key, value in over.items():
            if value.lower() in ("true", "false"):
                over[key] = value.lower() == "true"
        lam = float(over.pop("lam", cfg.lam))
        runs.append((f"fusellm-{spec.replace('=', '').replace(',', '-')}", lam, over))
    log["runs"] = {}
    for name, lam, over in runs:
        for seed in cfg.seeds:
            summary = continual(cfg, folders, name, lam, seed, **over)
            folder = Path(cfg.workdir) / "continual" / f"{name}-seed{seed}"
            scores = {d: _bpb(cfg, folder, heldout[d]) for d in DOMAINS}
            log["runs"][f"{name}-seed{seed}"] = {
                "bpb": scores,
                "fusion": summary.get("fusion"),
                "seconds": summary.get("seconds"),
            }
            print(name, seed, scores, summary.get("fusion"), flush=True)
    log["alignment"] = alignment_report(cfg, folders)
    log["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(cfg.workdir) / "results.json"
    out.write_text(json.dumps(log, indent=1, default=str))
    print(markdown(log))
    return log


def markdown(log: dict[str, Any]) -> str:
    """The results as markdown tables (bpb per model and domain; alignment statistics)."""
    lines = ["| model | code bpb | english bpb |", "|---|---|---|"]
    for name, scores in log["bpb"].items():
        lines.append(f"| {name} | {scores['code']:.4f} | {scores['english']:.4f} |")
    for name, rec in log["runs"].items():
        lines.append(f"| {name} | {rec['bpb']['code']:.4f} | {rec['bpb']['english']:.4f} |")
    lines += [
        "",
        "| source | domain | method | aligned | top-k kept | same span |",
        "|---|---|---|---|---|---|",
    ]
    for src, per in log["alignment"].items():
        if src == "mince_in_domain_share":
            continue
        for domain, methods in per.items():
            for method, s in methods.items():
                lines.append(
                    f"| {src} | {domain} | {method} | {s['aligned']:.3f} | {s['kept']:.3f} |"
                )
    lines.append(f"\nMinCE picks the in-domain source: {log['alignment']['mince_in_domain_share']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="tiny FuseLLM reproduction (CLM vs FuseLLM)")
    for f in Config.__dataclass_fields__.values():
        if f.name in ("seeds", "extra"):
            continue
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default
        )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--extra", nargs="*", default=[], help='more FuseLLM runs, e.g. "lam=0.9"')
    args = vars(parser.parse_args())
    args["seeds"] = tuple(args["seeds"])
    run(Config(**args))


if __name__ == "__main__":
    main()
