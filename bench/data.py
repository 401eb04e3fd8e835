"""Preparing a large corpus: fusekit's cached Arrow tokenisation against a plain ``datasets.map``.

For each corpus size, a JSON Lines corpus of Python standard-library source (shuffled
documents of about 2 kB, repeated until the size is reached) is prepared three times,
each in a fresh child process, with the same tokenizer (byte-level BPE trained
in-process) and the same number of processes:

* **fusekit**: ``fusekit.data.tokenized.tokenized_examples`` into an empty cache — read
  with ``datasets``' JSON reader, tokenised with ``map``, packed into ``seq_len`` blocks,
  written as Arrow;
* **fusekit, cached**: the same call again, reading the cache;
* **datasets.map**: ``load_dataset("json")`` and ``map(tokenizer, batched=True)``, the
  plain tokenisation every training script starts with (no packing);
* **stream**: one pass of ``fusekit.data.streamed.StreamedExamples`` (``train.streaming``:
  read, tokenised and packed as training asks, shuffled within 1,000 examples, nothing
  written), in one process as training reads it.

With ``--fusellm`` the table is FuseLLM's instead: its examples (``fusekit.strategies.
fusellm.examples``: the corpus cut into ``seq_len``-token chunks, each tokenised by the
target and by a source with another tokenizer (SentencePiece-style, trained in-process)
and aligned by offsets) built into an empty cache, in one process, then read again.

Peak memory is the largest sum of the resident sets of the child and its workers,
sampled every 50 ms (``psutil``), and in brackets the same for private memory (resident
minus file-backed pages: the memory-mapped Arrow files a reader touches count as
resident but are the page cache's to drop).  Time is the child's wall clock around
the call.  The claims: fusekit's time is within 1.5x the plain map's, and its private
memory does not grow with the corpus; neither does a stream's resident memory, nor
FuseLLM's while it builds its examples.

Run: ``python bench/data.py [--sizes-mb 64,256,1024] [--workdir DIR] [--procs 2] [--fusellm]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

SEQ_LEN = 256


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """A JSON Lines corpus of ~2 kB documents cut from the standard library's sources."""
    sources = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    docs: list[str] = []
    for file in sources:
        text = file.read_text(encoding="utf-8", errors="replace")
        docs += [text[i : i + 2000] for i in range(0, len(text), 2000)]
    rng = random.Random(seed)
    target = int(megabytes * 1e6)
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        while written < target:
            rng.shuffle(docs)
            for doc in docs:
                line = json.dumps({"text": doc}) + "\n"
                out.write(line)
                written += len(line)
                if written >= target:
                    break
    return written


def save_tokenizer(folder: Path) -> None:
    """The target's tokenizer (byte-level BPE), and beside it a source's (SentencePiece-style)."""
    from fusekit.tasks import task_tokenizer

    task_tokenizer("code", kind="bpe").save_pretrained(folder)
    task_tokenizer("code", kind="metaspace").save_pretrained(folder.with_name("source-tokenizer"))


def _peak_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    """Sample the process tree: peak[0] the largest resident total, peak[1] the largest
    private (anonymous) total, resident minus file-backed pages such as mapped Arrow files."""
    import psutil

    root = psutil.Process(pid)
    while not stop.is_set():
        try:
            mems = [p.memory_info() for p in [root, *root.children(recursive=True)]]
        except psutil.Error:
            mems = []
        peak[0] = max(peak[0], sum(m.rss for m in mems))
        peak[1] = max(peak[1], sum(m.rss - m.shared for m in mems))
        time.sleep(0.05)


def measure(kind: str, corpus: Path, tokenizer: Path, cache: Path, procs: int) -> dict[str, float]:
    """Run one preparation in a child process: its seconds and peak memory (MB)."""
    env = {**os.environ, "FUSEKIT_CACHE": str(cache), "HF_DATASETS_CACHE": str(cache / "hf"),
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    cmd = [sys.executable, __file__, "--child", kind, str(corpus), str(tokenizer), str(procs)]
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    stop, peak = threading.Event(), [0, 0]
    watcher = threading.Thread(target=_peak_rss, args=(child.pid, stop, peak), daemon=True)
    watcher.start()
    out, _ = child.communicate()
    stop.set()
    watcher.join()
    if child.returncode:
        raise SystemExit(f"{kind} failed (exit {child.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    return {"seconds": result["seconds"], "peak_mb": peak[0] / 1e6, "private_mb": peak[1] / 1e6,
            "rows": result["rows"]}  # fmt: skip


def child(kind: str, corpus: str, tokenizer_dir: str, procs: int) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    start = time.perf_counter()
    if kind == "datasets":
        from datasets import load_dataset

        table = load_dataset("json", data_files=corpus, split="train")
        rows = len(table.map(
            lambda batch: tokenizer(batch["text"], add_special_tokens=False),
            batched=True, num_proc=procs if procs > 1 else None, remove_columns=["text"],
        ))  # fmt: skip
    elif kind == "fusellm":
        rows = len(fusellm_examples(corpus, tokenizer, tokenizer_dir))
    elif kind == "stream":
        from fusekit.data.streamed import StreamedExamples

        rows = sum(1 for _ in StreamedExamples(corpus, tokenizer, SEQ_LEN).one_pass(0))
    else:
        from fusekit.data import tokenized

        tokenized.PARALLEL_RECORDS = 1 if procs > 1 else 10**12
        rows = len(tokenized.tokenized_examples(corpus, tokenizer, SEQ_LEN))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rows": rows}))


def fusellm_examples(corpus: str, tokenizer: object, tokenizer_dir: str) -> object:
    """FuseLLM's examples of the corpus for the target and one source, from the cache."""
    from transformers import AutoTokenizer

    from fusekit.data.tokenized import cached_rows
    from fusekit.strategies.fusellm.examples import Reader, example_rows, schema
    from fusekit.strategies.fusellm.vocab import map_vocab, token_table

    source = AutoTokenizer.from_pretrained(Path(tokenizer_dir).with_name("source-tokenizer"))
    target = Reader(tokenizer, token_table(tokenizer), SEQ_LEN, str)
    reader = Reader(source, token_table(source), 4 * SEQ_LEN, str,
                    vocab_map=map_vocab(source, tokenizer, "mined"))  # fmt: skip
    return cached_rows(
        {"bench": "fusellm", "corpus": corpus},
        lambda: example_rows(corpus, target, [reader], align="offsets", seq_len=SEQ_LEN,
                             loss_on=None),
        schema(1),
        seq_len=SEQ_LEN,
        source="fusellm",
    )  # fmt: skip


def _corpus(work: Path, size: float) -> tuple[Path, Path]:
    """The corpus of ``size`` MB (written once per work folder) and an empty cache."""
    corpus = work / f"corpus-{size:g}mb.jsonl"
    if not corpus.is_file():
        write_corpus(corpus, size)
    return corpus, Path(tempfile.mkdtemp(prefix="cache-", dir=work))


def fusellm_table(sizes: list[float], work: Path) -> None:
    print("| corpus | FuseLLM examples | cached rerun | peak (private) |")
    print("|---|---|---|---|")
    for size in sizes:
        corpus, cache = _corpus(work, size)
        built = measure("fusellm", corpus, work / "tokenizer", cache, 1)
        again = measure("fusellm", corpus, work / "tokenizer", cache, 1)
        print(f"| {corpus.stat().st_size / 1e6:,.0f} MB | {built['seconds']:.1f} s | "
              f"{again['seconds']:.2f} s | {built['peak_mb']:,.0f} MB "
              f"({built['private_mb']:,.0f} MB) |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-mb", default="64,256,1024")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--procs", type=int, default=min(os.cpu_count() or 1, 8))
    parser.add_argument("--fusellm", action="store_true", help="FuseLLM's examples instead")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "CORPUS", "TOKENIZER", "PROCS"))
    args = parser.parse_args()
    if args.child:
        kind, corpus, tokenizer, procs = args.child
        child(kind, corpus, tokenizer, int(procs))
        return
    import datasets
    import torch

    work = args.workdir or Path(tempfile.mkdtemp(prefix="fusekit-bench-data-"))
    work.mkdir(parents=True, exist_ok=True)
    save_tokenizer(work / "tokenizer")
    print(f"# {os.cpu_count()} CPUs, {args.procs} processes; torch {torch.__version__}, "
          f"datasets {datasets.__version__}; seq_len {SEQ_LEN}")  # fmt: skip
    sizes = [float(s) for s in args.sizes_mb.split(",")]
    if args.fusellm:
        fusellm_table(sizes, work)
        return
    print("| corpus | fusekit | cached rerun | datasets.map | time ratio | fusekit peak "
          "(private) | datasets.map peak (private) | stream pass | stream peak |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        corpus, cache = _corpus(work, size)
        ours = measure("fusekit", corpus, work / "tokenizer", cache, args.procs)
        again = measure("fusekit", corpus, work / "tokenizer", cache, args.procs)
        plain = measure("datasets", corpus, work / "tokenizer", Path(tempfile.mkdtemp(
            prefix="cache-", dir=work)), args.procs)  # fmt: skip
        stream = measure("stream", corpus, work / "tokenizer", cache, 1)
        print(f"| {corpus.stat().st_size / 1e6:,.0f} MB | {ours['seconds']:.1f} s | "
              f"{again['seconds']:.2f} s | {plain['seconds']:.1f} s | "
              f"{ours['seconds'] / plain['seconds']:.2f} | {ours['peak_mb']:,.0f} MB "
              f"({ours['private_mb']:,.0f} MB) | {plain['peak_mb']:,.0f} MB "
              f"({plain['private_mb']:,.0f} MB) | {stream['seconds']:.1f} s | "
              f"{stream['peak_mb']:,.0f} MB |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
