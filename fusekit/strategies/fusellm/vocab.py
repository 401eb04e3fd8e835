"""Vocabulary mapping: every source token id -> a target token id.

FuseLLM moves a source's top-k next-token candidates into the target's
vocabulary.  The released code (``FuseLLM/src/utils/vocab_mapping.py`` in
github.com/fanqiwan/FuseAI, ``find_best_mapping``) works on token strings: it
swaps the space marker (``Ġ`` <-> ``▁``), maps a string the target vocabulary
holds to itself (EM) and any other to the target token at minimum edit
distance (MinED), Python's ``min`` of ``editdistance.eval`` over every target
token, which compares characters as they are, case-sensitively.  ``min``
keeps the first of equal distances, and the slow ``LlamaTokenizer`` that
``get_tokenizer`` (``FuseLLM/src/utils/others.py``) loads for the Llama target
lists its vocabulary in id order, so ties go to the lowest target id.

fusekit compares tokens by the **bytes they stand for** instead of their
surface strings.  That is the same thing for ordinary tokens (a marker is a
space byte either way) but also gets right what string matching cannot:

* byte tokens: byte-level BPE writes the newline byte as ``Ċ`` and a
  SentencePiece model with byte fallback writes it as ``<0x0A>``; both are the
  byte 0x0A and map to each other;
* non-ASCII text: byte-level BPE spells ``é`` as ``Ã©`` (two byte characters),
  SentencePiece as ``é``; both are ``b"\\xc3\\xa9"``;
* special tokens (BOS/EOS/PAD/UNK) are mapped by role, never by spelling.

MinED is otherwise the paper's: the byte strings read as latin-1 (one
character per byte, so a distance counts bytes) are compared as they are,
case-sensitively, over the whole non-special target vocabulary, and ties go
to the lowest target id.  It runs in C++ (rapidfuzz ``cdist`` with
Levenshtein, torch's thread count), pruned by a bound that skips pairs that
cannot win (``mined.py``).  Results are cached on disk keyed by both
tokenizers' contents, because a 32k x 32k search takes seconds and every run
over the same pair needs the same answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fusekit.strategies.fusellm.mined import nearest

#: Part of the cache key: bumped whenever the same tokenizers would map differently
#: (2: MinED became case-sensitive).
MAP_VERSION = 2
SPACE_MARKERS = ("Ġ", "▁")
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_ROLES = ("eos", "bos", "unk", "pad")
Scheme = Literal["bytelevel", "metaspace", "wordpiece", "plain"]


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2's printable-unicode alphabet for bytes, inverted: character -> byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


def backend_of(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` behind a fast HF tokenizer (or the object itself)."""
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def _walk(node: Any) -> list[dict[str, Any]]:
    """All component dicts of a tokenizer JSON section (Sequences flattened)."""
    if not isinstance(node, dict):
        return []
    out = [node]
    for key in ("decoders", "pretokenizers", "normalizers"):
        for child in node.get(key) or []:
            out.extend(_walk(child))
    return out


def token_scheme(tokenizer: Any) -> tuple[Scheme, bool]:
    """How token strings spell text, and whether ``<0xNN>`` byte-fallback tokens exist."""
    spec = json.loads(backend_of(tokenizer).to_str())
    parts = _walk(spec.get("decoder")) + _walk(spec.get("pre_tokenizer"))
    types = {p.get("type") for p in parts}
    byte_fallback = bool((spec.get("model") or {}).get("byte_fallback"))
    if "ByteLevel" in types:
        return "bytelevel", byte_fallback
    replaces_marker = any(
        p.get("type") == "Replace" and "▁" in json.dumps(p.get("pattern"), ensure_ascii=False)
        for p in parts
    )
    if "Metaspace" in types or replaces_marker:
        return "metaspace", byte_fallback
    if "WordPiece" in types or (spec.get("model") or {}).get("type") == "WordPiece":
        return "wordpiece", byte_fallback
    return "plain", byte_fallback


def token_bytes(token: str, scheme: Scheme, byte_fallback: bool) -> tuple[bytes, bool]:
    """The bytes a token stands for, and whether it is a ``<0xNN>`` byte-fallback token."""
    match = _BYTE_TOKEN.match(token)
    if match and (byte_fallback or scheme != "bytelevel"):
        return bytes([int(match.group(1), 16)]), True
    if scheme == "bytelevel":
        table = byte_decoder()
        if all(c in table for c in token):
            return bytes(table[c] for c in token), False
        return token.encode("utf-8"), False
    if scheme == "wordpiece":
        return (token[2:] if token.startswith("##") else " " + token).encode("utf-8"), False
    for marker in SPACE_MARKERS:
        token = token.replace(marker, " ")
    return token.encode("utf-8"), False


@dataclass
class TokenTable:
    """Per-id facts about one tokenizer's vocabulary.

    ``canon[i]`` is the byte string of token ``i`` read as latin-1 (one character
    per byte, so edit distances count bytes); specials and holes in the id space
    have ``None``.
    """

    tokens: list[str | None]
    canon: list[str | None]
    is_byte_token: np.ndarray
    special: np.ndarray
    scheme: Scheme
    fingerprint: str

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def canon_lengths(self) -> np.ndarray:
        """Bytes of each token (``-1`` for specials and holes), for vectorised span arithmetic."""
        return np.array([-1 if c is None else len(c) for c in self.canon], dtype=np.int64)

    @cached_property
    def canon_array(self) -> np.ndarray:
        """``canon`` as an object array, so that a whole id sequence indexes it at once."""
        out = np.empty(len(self.canon), dtype=object)
        out[:] = self.canon
        return out

    @cached_property
    def spelled(self) -> np.ndarray:
        """Token bytes with ``▁`` for spaces, specials as spelled, holes ``""`` (for DTW)."""
        out = np.empty(len(self.canon), dtype=object)
        out[:] = [
            (tok or "") if c is None else c.replace(" ", "▁")
            for tok, c in zip(self.tokens, self.canon, strict=True)
        ]
        return out


def special_ids(tokenizer: Any) -> set[int]:
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(int(i) for i, tok in decoder.items() if getattr(tok, "special", False))
    return ids


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A content hash of a tokenizer: its full backend JSON plus its special-token roles."""
    digest = hashlib.sha256(backend_of(tokenizer).to_str().encode("utf-8"))
    roles = {r: getattr(tokenizer, f"{r}_token_id", None) for r in _ROLES}
    digest.update(json.dumps(roles, sort_keys=True).encode())
    return digest.hexdigest()


def token_table(tokenizer: Any) -> TokenTable:
    """Build the ``TokenTable`` of a fast tokenizer (cached on the tokenizer object)."""
    cached = getattr(tokenizer, "_fusekit_token_table", None)
    if cached is not None and cached[0] == len(tokenizer):  # added tokens invalidate it
        return cached[1]
    vocab: dict[str, int] = dict(tokenizer.get_vocab())
    size = max(max(vocab.values(), default=-1) + 1, len(tokenizer))
    tokens: list[str | None] = [None] * size
    for name, idx in vocab.items():
        tokens[idx] = name
    scheme, byte_fallback = token_scheme(tokenizer)
    specials = special_ids(tokenizer)
    canon: list[str | None] = [None] * size
    is_byte = np.zeros(size, dtype=bool)
    special = np.zeros(size, dtype=bool)
    for idx, tok in enumerate(tokens):
        if tok is None:
            continue
        if idx in specials:
            special[idx] = True
            continue
        raw, is_byte[idx] = token_bytes(tok, scheme, byte_fallback)
        canon[idx] = raw.decode("latin-1")
    table = TokenTable(tokens, canon, is_byte, special, scheme, tokenizer_fingerprint(tokenizer))
    with contextlib.suppress(AttributeError):  # objects with __slots__: just do not cache
        tokenizer._fusekit_token_table = (len(tokenizer), table)
    return table


def _canon_index(table: TokenTable) -> dict[str, int]:
    """Canonical string -> target id; ordinary tokens beat byte tokens, then lowest id wins."""
    index: dict[str, int] = {}
    order = sorted(
        (i for i, c in enumerate(table.canon) if c is not None),
        key=lambda i: (not table.is_byte_token[i], -i),
    )
    for i in order:  # later entries overwrite: ordinary tokens, then lower ids, come last
        index[table.canon[i]] = i  # type: ignore[index]
    return index


def cdist_workers(pairs: int, threshold: int = 100_000) -> int:
    """Threads for rapidfuzz's ``cdist``: torch's thread count (which follows
    ``OMP_NUM_THREADS`` and ``torch.set_num_threads``), one for small problems.

    ``workers=-1`` would take every core whatever the user asked for, and a run on
    one thread is how results are made reproducible.
    """
    if pairs <= threshold:
        return 1
    import torch

    return max(1, torch.get_num_threads())


def _min_edit(queries: list[str], choices: list[str]) -> np.ndarray:
    """For each query, the index of the first choice at minimum Levenshtein distance."""
    workers = cdist_workers(len(queries) * len(choices), 200_000)
    return nearest(queries, choices, workers=workers)


def compute_vocab_map(
    source_tokenizer: Any,
    target_tokenizer: Any,
    method: Literal["mined", "em"] = "mined",
) -> np.ndarray:
    """The mapping itself (no cache); see ``map_vocab``."""
    if method not in ("mined", "em"):
        raise ValueError(f"vocabulary mapping method must be 'mined' or 'em', got {method!r}")
    src, tgt = token_table(source_tokenizer), token_table(target_tokenizer)
    result = np.full(len(src), -1, dtype=np.int64)

    # 1. Special tokens by role, then by exact spelling among the target's specials.
    for role in _ROLES:
        sid = getattr(source_tokenizer, f"{role}_token_id", None)
        tid = getattr(target_tokenizer, f"{role}_token_id", None)
        if sid is not None and tid is not None and result[sid] < 0:
            result[sid] = tid
    # A special id always has a spelling (``token_table`` marks only named tokens).
    tgt_special = {t: i for i in np.flatnonzero(tgt.special) if (t := tgt.tokens[i]) is not None}
    for s in np.flatnonzero(src.special):
        name = src.tokens[s]
        if result[s] < 0 and name is not None and name in tgt_special:
            result[s] = tgt_special[name]

    # 2. Same spelling convention: identical strings are identical tokens (keeps byte
    #    tokens and their character twins apart when a tokenizer is mapped to itself).
    if src.scheme == tgt.scheme:
        by_string = {t: i for i, t in enumerate(tgt.tokens) if t is not None and not tgt.special[i]}
        for i, tok in enumerate(src.tokens):
            if result[i] < 0 and tok is not None and not src.special[i] and tok in by_string:
                result[i] = by_string[tok]

    # 3. Exact match on the bytes the token stands for.
    index = _canon_index(tgt)
    for i, c in enumerate(src.canon):
        if result[i] < 0 and c is not None and c in index:
            result[i] = index[c]
    if method == "em":
        return result

    # 4. MinED over the whole (non-special) target vocabulary for the rest.
    choice_ids = np.array([i for i, c in enumerate(tgt.canon) if c is not None], dtype=np.int64)
    #    Case-sensitive, as in the paper: ``mi`` is one edit from ``mp``, two from ``I``.
    choices = [c for c in tgt.canon if c is not None]
    todo = [i for i, c in enumerate(src.canon) if result[i] < 0 and c is not None]
    queries = [c for i, c in enumerate(src.canon) if result[i] < 0 and c is not None]
    if todo and len(choices):
        best = _min_edit(queries, choices)
        result[np.array(todo)] = choice_ids[best]
    # Specials with no counterpart: the closest target special, else the target's EOS/UNK.
    leftovers = [i for i in np.flatnonzero(src.special) if result[i] < 0]
    fallback = target_tokenizer.eos_token_id
    if fallback is None:
        fallback = target_tokenizer.unk_token_id
    if leftovers and tgt_special:
        names = list(tgt_special)
        best = _min_edit([src.tokens[i] or "" for i in leftovers], names)  # specials are named
        result[np.array(leftovers)] = [tgt_special[names[b]] for b in best]
    elif leftovers and fallback is not None:
        result[np.array(leftovers)] = fallback
    return result


def default_cache_dir() -> Path:
    """``$FUSEKIT_CACHE/vocab_maps``, else ``~/.cache/fusekit/vocab_maps``."""
    root = os.environ.get("FUSEKIT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "fusekit") / "vocab_maps"


def map_vocab(
    source_tokenizer: Any,
    target_tokenizer: Any,
    method: Literal["mined", "em"] = "mined",
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> np.ndarray:
    """For every source id a target id (``-1`` where EM finds none, or for id-space holes).

    Order of rules: special tokens by role; identical strings when both tokenizers
    spell text the same way; identical bytes (``Ġ``/``▁`` are spaces, ``Ċ`` and
    ``<0x0A>`` are both a newline); then, for ``method="mined"``, the target token
    at minimum edit distance.  Cached under ``cache_dir`` (default
    ``default_cache_dir()``) keyed by both tokenizers' content hashes.
    """
    key_src = {
        "v": MAP_VERSION,
        "source": token_table(source_tokenizer).fingerprint,
        "target": token_table(target_tokenizer).fingerprint,
        "method": method,
    }
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:32]
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    file = path / f"{key}.npy"
    if use_cache and file.is_file():
        try:
            return np.load(file)
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed and rewritten
    result = compute_vocab_map(source_tokenizer, target_tokenizer, method)
    if use_cache:
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".{key}.{os.getpid()}.tmp.npy"
        np.save(tmp, result)
        os.replace(tmp, file)
    return result


def mapping_stats(
    vmap: np.ndarray, source_tokenizer: Any, target_tokenizer: Any
) -> dict[str, float]:
    """Share of source tokens that map exactly (same bytes) vs by edit distance vs not at all."""
    src, tgt = token_table(source_tokenizer), token_table(target_tokenizer)
    ordinary = [i for i, c in enumerate(src.canon) if c is not None]
    exact = sum(1 for i in ordinary if vmap[i] >= 0 and tgt.canon[vmap[i]] == src.canon[i])
    unmapped = sum(1 for i in ordinary if vmap[i] < 0)
    n = max(1, len(ordinary))
    return {
        "tokens": len(ordinary),
        "exact": exact / n,
        "nearest": (len(ordinary) - exact - unmapped) / n,
        "unmapped": unmapped / n,
    }
