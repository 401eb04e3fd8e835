"""Plain fine-tuning (full or LoRA): the baseline every fusion is compared against."""
