"""Evaluation: metrics, robustness protocols and GEAR's OOD test splits (docs/methods.md §2, §3, §6)."""
