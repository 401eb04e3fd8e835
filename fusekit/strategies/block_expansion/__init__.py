"""LLaMA Pro block expansion: plan, streamed surgery, freeze mask, strategy."""
