"""Comparison of gradients with a reference fixture, shared by the parity tests."""

from __future__ import annotations

import numpy as np

# |ours - reference| <= GRAD_ATOL + GRAD_RTOL * max|reference| for every entry of every tensor. The
# relative part follows the tensor's own scale, so a small gradient must be right at its own
# scale; the absolute part (far below any gradient worth checking) absorbs float32 rounding of
# gradients that are zero in exact arithmetic.
GRAD_RTOL = 2e-4
GRAD_ATOL = 1e-7


def gradient_errors(
  ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]
) -> dict[str, str]:
  """name -> what is wrong, for every tensor of `reference` that `ours` misses, shapes differently
  or gets wrong beyond the criterion above; names in `ours` but not in `reference` too."""
  bad = {name: "not in the reference" for name in ours if name not in reference}
  for name, want in reference.items():
    if name not in ours:
      bad[name] = "missing"
      continue
    got, want = np.asarray(ours[name], np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
      bad[name] = f"shape {got.shape}, reference {want.shape}"
      continue
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    err = float(np.max(np.abs(got - want))) if want.size else 0.0
    if not err <= GRAD_ATOL + GRAD_RTOL * scale:
      bad[name] = f"max abs error {err:.3g}, reference scale {scale:.3g}"
  return bad
