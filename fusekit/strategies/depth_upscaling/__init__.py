"""SOLAR depth up-scaling: slice plans, streamed splice, strategy."""
