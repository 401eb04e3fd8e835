"""The streamed layer-restacking engine and the per-layer config remap surgery strategies share."""
