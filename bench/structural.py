"""Streamed layer surgery vs a plain file copy vs the naive load-edit-save script.

Builds a random checkpoint, either a Llama of about ``--size-gb`` (fp32, 16
layers) or, with ``--shape mistral-7b``, random bf16 weights in Mistral-7B's
shape (32 layers, about 14.5 GB; needs about 36 GB free in ``--workdir``), then
runs each method in a fresh subprocess and reads that child's peak RSS from
``os.wait4``.  Prints one table with ratios against the plain copy measured in the
same run on the same machine.  Before every run the page cache is flushed to disk
(``sync``) and the input is read once, so every method reads from memory and pays
only for its own writes; each method runs ``--repeat`` times and the fastest counts.

Methods (n layers, m = n/4):
  copy            shutil.copytree of the input folder
  copy+fsync      the same, then fsync every file (fusekit fsyncs what it writes)
  fusekit-dus     SOLAR splice, remove m -> 2(n-m) layers (1.5x the layer bytes)
  fusekit-expand  block expansion, m groups x 1 block -> n+m layers
  mergekit-dus    the same splice by ``mergekit-yaml`` (passthrough), when found:
                  ``--mergekit PATH`` or ``mergekit-yaml`` on PATH
  naive-dus       AutoModelForCausalLM.from_pretrained, deepcopy layers, save_pretrained
  naive-expand    the same with zeroed output projections
Every method but ``copy`` fsyncs its output inside its clock (mergekit and
save_pretrained do not do it themselves).

Surgery writes more bytes than it reads, so the table gives each method's time per
byte written against copy+fsync's as well as the plain ratio.

Run:  nice -n 19 python3 bench/structural.py [--size-gb 1.0 | --shape mistral-7b] [--workdir DIR]
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
LAYERS = 16
MISTRAL_7B = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip


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
        torch_dtype="float32",
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=LAYERS,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        tie_word_embeddings=False,
    )
    return cfg.to_dict()


def make_checkpoint(folder: Path, shape: str) -> int:
    """Random weights written with fusekit's ShardedWriter; returns bytes.

    ``shape`` is ``mistral-7b`` (bf16, 5 GB shards) or a size in GB (fp32 Llama).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from fusekit.io.writer import ShardedWriter

    if shape == "mistral-7b":
        config, dtype, shard = (
            {**MISTRAL_7B, "model_type": "mistral", "architectures": ["MistralForCausalLM"]},
            torch.bfloat16,
            "5GB",
        )
    else:
        config, dtype, shard = _llama_config(float(shape)), torch.float32, "400MB"
        config["architectures"] = ["LlamaForCausalLM"]  # mergekit reads it
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    gen = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True)
    total = 0
    with ShardedWriter(folder, shard) as writer:
        for name, param in meta.state_dict().items():
            value = torch.randn(param.shape, generator=gen).mul_(0.1 if param.ndim == 1 else 0.02)
            if param.ndim == 1:
                value.add_(1.0)
            value = value.to(dtype)
            writer.add(name, value)
            total += value.numel() * value.element_size()
            del value
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return total


# ------------------------------------------------------------------ child methods


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)


def _layers(src: Path) -> tuple[int, int]:
    """(n, m): the checkpoint's layer count and the quarter that surgery removes or adds."""
    n = json.loads((src / "config.json").read_text())["num_hidden_layers"]
    return n, n // 4


def _mergekit(src: Path, out: Path, exe: str) -> int:
    """SOLAR by ``mergekit-yaml`` passthrough; returns its peak RSS (bytes)."""
    n, m = _layers(src)
    dtype = json.loads((src / "config.json").read_text()).get("torch_dtype", "float32")
    config = out.parent / f"{out.name}.yaml"
    config.write_text(json.dumps({
        "merge_method": "passthrough", "dtype": dtype,
        "slices": [{"sources": [{"model": str(src), "layer_range": [0, n - m]}]},
                   {"sources": [{"model": str(src), "layer_range": [m, n]}]}],
    }))  # fmt: skip
    proc = subprocess.Popen([exe, str(config), str(out), "--lazy-unpickle", "--no-copy-tokenizer",
                             "--quiet"], stdout=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    config.unlink()
    if status != 0:
        raise SystemExit(f"mergekit-yaml failed (status {status})")
    return usage.ru_maxrss * 1024


def _naive(src: Path, out: Path, expand: bool) -> None:
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype="auto", local_files_only=True)
    layers = list(model.model.layers)
    n, remove = _layers(src)
    if expand:
        size, new = n // remove, []
        for g in range(remove):
            new += layers[g * size : (g + 1) * size]
            twin = copy.deepcopy(layers[(g + 1) * size - 1])
            torch.nn.init.zeros_(twin.self_attn.o_proj.weight)
            torch.nn.init.zeros_(twin.mlp.down_proj.weight)
            new.append(twin)
    else:
        new = layers[: n - remove] + [copy.deepcopy(layer) for layer in layers[remove:]]
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


def child(method: str, src: Path, out: Path, mergekit: str | None = None) -> None:
    if method == "make":
        size = make_checkpoint(out, src.name)
        print(json.dumps({"seconds": 0.0, "bytes": size}))
        return
    _preimport(method)
    hwm = 0
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
            splice({key: src}, solar_plan(*_layers(src), key), tmp, base=key, progress=False)
    elif method == "fusekit-expand":
        from fusekit.io.output import atomic_output
        from fusekit.strategies.block_expansion.plan import expansion_plan
        from fusekit.strategies.block_expansion.surgery import expand

        with atomic_output(out, inputs=[src]) as tmp:
            expand(src, expansion_plan(*_layers(src)), tmp, progress=False)
    elif method == "mergekit-dus":
        hwm = _mergekit(src, out, mergekit or "mergekit-yaml")
        _fsync_tree(out)  # durable output, like every other method but the plain copy
    elif method in ("naive-dus", "naive-expand"):
        _naive(src, out, expand=method == "naive-expand")
        _fsync_tree(out)
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(json.dumps({"seconds": seconds, "bytes": size, "hwm": hwm or _peak_rss()}))


# ------------------------------------------------------------------ parent


def _run_child(method: str, src: Path, out: Path, mergekit: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    extra = ["--mergekit", mergekit] if mergekit else []
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", method, str(src), str(out), *extra],
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


def _largest_tensor(folder: Path) -> int:
    from fusekit.io.lazy import LazyCheckpoint

    ckpt = LazyCheckpoint(folder)
    return max(ckpt.info(name).nbytes for name in ckpt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--shape", choices=["llama", "mistral-7b"], default="llama",
                        help="llama: fp32 of --size-gb; mistral-7b: bf16 Mistral-7B shape")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--methods", default=None,
                        help="comma-separated; default: copies, fusekit, mergekit when found, "
                        "and the naive script (not at mistral-7b: it loads the whole model)")  # fmt: skip
    parser.add_argument("--mergekit", default=shutil.which("mergekit-yaml"),
                        help="the mergekit-yaml executable (default: on PATH)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=2, help="runs per method; the fastest counts")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "SRC", "OUT"))
    args = parser.parse_args()
    if args.child:
        method, src, out = args.child
        child(method, Path(src), Path(out), args.mergekit)
        return
    methods = ["copy", "copy+fsync", "fusekit-dus", "fusekit-expand"]
    if args.shape == "llama":  # at 7B both would need about 4x and 2x the checkpoint in RAM
        methods += ["mergekit-dus"] if args.mergekit else []
        methods += ["naive-dus", "naive-expand"]
    methods = args.methods.split(",") if args.methods else methods

    root = Path(tempfile.mkdtemp(prefix="fusekit-bench-", dir=args.workdir))
    try:
        src = root / "model"
        t0 = time.perf_counter()
        spec = "mistral-7b" if args.shape == "mistral-7b" else str(args.size_gb)
        size = _run_child("make", Path(spec), src)["bytes"]
        n, _ = _layers(src)
        what = "bf16 Mistral-7B shape" if args.shape == "mistral-7b" else "fp32 Llama"
        what = f"{what}, {n} layers, {len(list(src.glob('*.safetensors')))} shards"
        print(f"checkpoint: {size / 1e9:.2f} GB {what}, "
              f"built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)  # fmt: skip
        rows: dict[str, dict] = {}
        for _ in range(args.repeat):
            for method in methods:
                os.sync()  # earlier writes must not be flushed on this method's clock
                _warm(src)
                out = root / f"out-{method}"
                r = _run_child(method, src, out, args.mergekit)
                shutil.rmtree(out)
                print(f"  {method}: {r['seconds']:.2f} s, {r['rss'] / 1e6:.0f} MB", file=sys.stderr)
                best = rows.get(method)
                if best is None or r["seconds"] < best["seconds"]:
                    rows[method] = r
        _print_table(rows, size, what, _largest_tensor(src))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _print_table(rows: dict, size: int, what: str, largest: int) -> None:
    ref = rows.get("copy") or next(iter(rows.values()))
    synced = rows.get("copy+fsync", ref)
    per_byte = synced["seconds"] / synced["bytes"]
    print(f"\ninput checkpoint: {size / 1e9:.2f} GB ({what}); largest tensor "
          f"{largest / 1e6:.0f} MB\n")  # fmt: skip
    print("| method | work s | × copy | × copy+fsync | × copy+fsync per byte written "
          "| wall s (incl. start-up) | output GB | GB/s written | peak RSS MB "
          "| RSS / checkpoint |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, r in rows.items():
        print(
            f"| {method} | {r['seconds']:.2f} | {r['seconds'] / ref['seconds']:.2f} "
            f"| {r['seconds'] / synced['seconds']:.2f} "
            f"| {r['seconds'] / r['bytes'] / per_byte:.2f} "
            f"| {r['wall']:.2f} | {r['bytes'] / 1e9:.2f} | {r['bytes'] / 1e9 / r['seconds']:.2f} "
            f"| {r['rss'] / 1e6:.0f} | {r['rss'] / size:.3f} |"
        )


if __name__ == "__main__":
    main()
