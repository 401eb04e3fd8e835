"""The model-IO layer every strategy shares.

Loading local folders (safetensors only unless told), lazy tensor reading,
streamed sharded writing, atomic output folders, per-architecture facts, config
patching and provenance.  Submodules import torch/transformers only where they
need them, so importing this package stays cheap.
"""
