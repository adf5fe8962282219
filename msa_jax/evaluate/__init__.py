"""Evaluation: metrics, robustness protocols and GEAR's OOD test splits (SPEC §2, §3, §6)."""
