"""Packed trials: several LoRA trials of one sweep trained on one frozen base."""
