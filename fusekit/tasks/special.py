"""Special-token strings shared by every tokenizer fusekit builds.

One spelling everywhere (KV tokenizer and the trained text tokenizers) so that
code handling special tokens by name works on all of them.
"""

from __future__ import annotations

PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"
UNK = "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
#: SentencePiece-style byte-fallback tokens, ``<0x00>`` … ``<0xFF>``.
BYTE_TOKENS: tuple[str, ...] = tuple(f"<0x{b:02X}>" for b in range(256))
