"""CALM: composition of a frozen anchor with frozen augmenting models (arXiv 2401.02412).

Modules, by concept:

* ``layers``      — where the decoder blocks are; which augment layer feeds which anchor layer
* ``masks``       — causal / diagonal cross masks from position or character keys
* ``config``      — the composition's shape (what ``composition.json`` records)
* ``composition`` — Θ_C: projection, query pre-norm, cross-attention, zero-init output
* ``modeling``    — ``ComposedModel``: hooks on the frozen bases, the composed forward
* ``tokens`` / ``collate`` — different tokenizers: character offsets, tail re-tokenisation
* ``generation``  — iterative decoding with one KV cache per model
* ``build`` / ``io`` — assembling, saving and re-attaching (``load_composed``)
* ``trainer`` / ``baselines`` / ``strategy`` — Θ_C's loss, the paper's controls, the stages

Nothing is imported here, so ``import fusekit`` never pulls in torch.
"""
