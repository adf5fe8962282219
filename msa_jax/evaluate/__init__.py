"""Evaluation: results files and reports of runs."""
