"""Evaluation: predictions and MMSA metrics of a split (`predict`), the final evaluation of selected
checkpoints (`final`), LNLN's missing-rate sweep (`sweep`) and GEAR's OOD evaluation (`ood`)."""
