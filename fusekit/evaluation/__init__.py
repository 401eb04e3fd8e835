"""The evaluation harness every strategy and the CLI share.

``fusekit.evaluation.harness.evaluate(path_or_model, data, metric)`` is the one
entry point; the metric functions beneath it (``text_scoring.score_texts``,
``generation.exact_match``, ``choice.multiple_choice``,
``preservation.function_preservation``) take in-memory models and records.
"""
