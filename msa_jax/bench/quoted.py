"""The authors' PyTorch figures quoted beside ours (quoted.json, which states their source), and
the ratios reference / ours."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from msa_jax.bench.figures import Figure, fig

_DATA = json.loads((pathlib.Path(__file__).with_name("quoted.json")).read_text(encoding="utf-8"))

QUOTED: dict[tuple[str, str], dict[str, float]] = {
  (method, encoder): figures
  for method, by_encoder in _DATA["figures"].items()
  for encoder, figures in by_encoder.items()
}
QUOTED_NOTE: str = _DATA["note"]
IDLE_SGEMM_GFLOPS: float = _DATA["idle_sgemm_gflops"]
REFERENCE_SELECTION: int = _DATA["reference_selection_metrics"]
_UNITS = {"train_step_s": "s", "peak_rss_gb": "GB", "eval_s_per_sample": "s", "full_sweep_h": "h"}


def reference_figures(
  method: str, encoder: str, shape: str, batch: int, dtype: str
) -> dict[str, Figure] | None:
  """The quoted PyTorch figures for this configuration, where the configuration is theirs."""
  quoted = QUOTED.get((method, encoder))
  if not quoted or shape != "paper" or batch != 64 or dtype != "float32":
    return None
  return {k: fig(v, _UNITS[k], "quoted", QUOTED_NOTE) for k, v in quoted.items()}


def ratios(result: dict[str, Any]) -> dict[str, Figure]:
  """reference / ours for the quoted figures (kind: that of ours; the reference is quoted)."""
  ref = result.get("reference")
  if not ref:
    return {}
  train, ev = result["train"], result.get("eval", {})
  pairs = {
    "train_step_speedup": ("train_step_s", train["step_s"]["median"]),
    "train_step_speedup_idle_estimate": ("train_step_s", train.get("step_s_idle_estimate")),
    "train_step_speedup_sgemm_scaled": ("train_step_s", train.get("step_s_sgemm_scaled")),
    "peak_rss_ratio": ("peak_rss_gb", result["memory"]["peak_rss_gb"]),
    "eval_speedup": ("eval_s_per_sample", ev.get("s_per_sample_eval")),
    "eval_speedup_idle_estimate": ("eval_s_per_sample", ev.get("s_per_sample_eval_idle_estimate")),
    "full_sweep_speedup": ("full_sweep_h", ev.get("full_sweep_h_msa_jax")),
    "full_sweep_speedup_idle_estimate": (
      "full_sweep_h",
      ev.get("full_sweep_h_msa_jax_idle_estimate"),
    ),
  }
  out = {}
  for name, (ref_key, ours) in pairs.items():
    if ref_key in ref and ours and ours.get("value"):
      out[name] = fig(
        ref[ref_key]["value"] / ours["value"],
        "x",
        ours["kind"],
        f"quoted reference {ref_key} / ours ({ours['kind']})",
      )
  return out
