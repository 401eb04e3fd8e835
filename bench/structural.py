"""Streamed layer surgery vs a plain file copy vs the naive load-edit-save script.

Builds a random Llama checkpoint of about ``--size-gb`` (fp32, three shards), then
runs each method in a fresh subprocess and reads that child's peak RSS from
``os.wait4``.  Prints one table with ratios against the plain copy measured in the
same run on the same machine.  Before every run the page cache is flushed to disk
(``sync``) and the input is read once, so every method reads from memory and pays
only for its own writes; each method runs ``--repeat`` times and the fastest counts.

Methods:
  copy            shutil.copytree of the input folder
  copy+fsync      the same, then fsync every file (fusekit fsyncs what it writes)
  fusekit-dus     SOLAR splice, n=16, m=4 -> 24 layers (1.5x the layer bytes)
  fusekit-expand  block expansion, 4 groups x 1 block -> 20 layers
  naive-dus       AutoModelForCausalLM.from_pretrained, deepcopy layers, save_pretrained
  naive-expand    the same with zeroed output projections

Run:  nice -n 19 python3 bench/structural.py [--size-gb 1.0] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS, REMOVE, GROUPS = 16, 4, 4


def _llama_config(size_gb: float) -> dict:
    """A Llama config whose fp32 weights take about ``size_gb`` (16 layers, width scaled)."""
    from transformers import LlamaConfig

    vocab, hidden = 32000, 256
    while True:
        inter = int(hidden * 2.75) // 64 * 64
        params = 2 * vocab * hidden + LAYERS * (4 * hidden * hidden + 3 * hidden * inter)
        if params * 4 >= size_gb * 1e9 or hidden > 8192:
            break
        hidden += 64
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=LAYERS,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        tie_word_embeddings=False,
    )
    return cfg.to_dict()


def make_checkpoint(folder: Path, size_gb: float) -> int:
    """Random fp32 Llama weights written with fusekit's ShardedWriter; returns bytes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from fusekit.io.writer import ShardedWriter

    config = _llama_config(size_gb)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    gen = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True)
    total = 0
    with ShardedWriter(folder, "400MB") as writer:
        for name, param in meta.state_dict().items():
            if param.ndim == 1:
                value = 1.0 + 0.1 * torch.randn(param.shape, generator=gen)
            else:
                value = 0.02 * torch.randn(param.shape, generator=gen)
            writer.add(name, value)
            total += value.numel() * 4
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return total


# ------------------------------------------------------------------ child methods


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)


def _naive(src: Path, out: Path, expand: bool) -> None:
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, local_files_only=True)
    layers = list(model.model.layers)
    n = len(layers)
    if expand:
        size, new = n // GROUPS, []
        for g in range(GROUPS):
            new += layers[g * size : (g + 1) * size]
            twin = copy.deepcopy(layers[(g + 1) * size - 1])
            torch.nn.init.zeros_(twin.self_attn.o_proj.weight)
            torch.nn.init.zeros_(twin.mlp.down_proj.weight)
            new.append(twin)
    else:
        new = layers[: n - REMOVE] + [copy.deepcopy(layer) for layer in layers[REMOVE:]]
    for i, layer in enumerate(new):
        layer.self_attn.layer_idx = i
    model.model.layers = torch.nn.ModuleList(new)
    model.config.num_hidden_layers = len(new)
    model.save_pretrained(out)


def _peak_rss() -> int:
    """This process's own peak RSS (VmHWM, reset by exec), in bytes; 0 if unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _preimport(method: str) -> None:
    """Import what a method needs before its clock starts (start-up shows in wall time)."""
    if method.startswith("fusekit"):
        import fusekit.io.output
        import fusekit.strategies.block_expansion.surgery
        import fusekit.strategies.depth_upscaling.splice  # noqa: F401
    elif method.startswith("naive"):
        import torch  # noqa: F401
        import transformers.models.llama.modeling_llama  # noqa: F401
        from transformers import AutoModelForCausalLM  # noqa: F401


def child(method: str, src: Path, out: Path) -> None:
    if method == "make":
        size = make_checkpoint(out, float(src.name))
        print(json.dumps({"seconds": 0.0, "bytes": size}))
        return
    _preimport(method)
    start = time.perf_counter()
    if method == "copy":
        shutil.copytree(src, out)
    elif method == "copy+fsync":
        shutil.copytree(src, out)
        _fsync_tree(out)
    elif method == "fusekit-dus":
        from fusekit.io.output import atomic_output
        from fusekit.strategies.depth_upscaling.plan import solar_plan
        from fusekit.strategies.depth_upscaling.splice import splice

        with atomic_output(out, inputs=[src]) as tmp:
            key = str(src)
            splice({key: src}, solar_plan(LAYERS, REMOVE, key), tmp, base=key, progress=False)
    elif method == "fusekit-expand":
        from fusekit.io.output import atomic_output
        from fusekit.strategies.block_expansion.plan import expansion_plan
        from fusekit.strategies.block_expansion.surgery import expand

        with atomic_output(out, inputs=[src]) as tmp:
            expand(src, expansion_plan(LAYERS, GROUPS), tmp, progress=False)
    elif method in ("naive-dus", "naive-expand"):
        _naive(src, out, expand=method == "naive-expand")
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(json.dumps({"seconds": seconds, "bytes": size, "hwm": _peak_rss()}))


# ------------------------------------------------------------------ parent


def _run_child(method: str, src: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", method, str(src), str(out)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{method} failed (status {status})")
    result = json.loads(text.decode().strip().splitlines()[-1])
    # VmHWM belongs to the child's own address space; ru_maxrss would also count pages
    # shared with this process between fork and exec.
    rss = result.get("hwm") or usage.ru_maxrss * 1024
    return {**result, "wall": wall, "rss": rss}


def _warm(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            while fh.read(64 << 20):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--methods",
        default="copy,copy+fsync,fusekit-dus,fusekit-expand,naive-dus,naive-expand",
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs per method; the fastest counts")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "SRC", "OUT"))
    args = parser.parse_args()
    if args.child:
        method, src, out = args.child
        child(method, Path(src), Path(out))
        return

    root = Path(tempfile.mkdtemp(prefix="fusekit-bench-", dir=args.workdir))
    try:
        src = root / "llama"
        t0 = time.perf_counter()
        size = _run_child("make", Path(str(args.size_gb)), src)["bytes"]
        print(f"checkpoint: {size / 1e9:.2f} GB fp32 Llama, {LAYERS} layers, "
              f"{len(list(src.glob('*.safetensors')))} shards, "
              f"built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)  # fmt: skip
        rows: dict[str, dict] = {}
        for _ in range(args.repeat):
            for method in args.methods.split(","):
                os.sync()  # earlier writes must not be flushed on this method's clock
                _warm(src)
                out = root / f"out-{method}"
                r = _run_child(method, src, out)
                shutil.rmtree(out)
                print(f"  {method}: {r['seconds']:.2f} s, {r['rss'] / 1e6:.0f} MB", file=sys.stderr)
                best = rows.get(method)
                if best is None or r["seconds"] < best["seconds"]:
                    rows[method] = r
        _print_table(rows, size)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _print_table(rows: dict, size: int) -> None:
    ref = rows.get("copy") or next(iter(rows.values()))
    print(f"\ninput checkpoint: {size / 1e9:.2f} GB (fp32 Llama, {LAYERS} layers)\n")
    print("| method | work s | × copy | wall s (incl. start-up) | output GB | GB/s written "
          "| peak RSS MB | RSS / checkpoint | × copy RSS |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for method, r in rows.items():
        print(
            f"| {method} | {r['seconds']:.2f} | {r['seconds'] / ref['seconds']:.2f} "
            f"| {r['wall']:.2f} | {r['bytes'] / 1e9:.2f} | {r['bytes'] / 1e9 / r['seconds']:.2f} "
            f"| {r['rss'] / 1e6:.0f} | {r['rss'] / size:.3f} | {r['rss'] / ref['rss']:.1f} |"
        )


if __name__ == "__main__":
    main()
