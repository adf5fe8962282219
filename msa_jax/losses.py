"""Jittable losses: GEAR's GMAE and inverse-probability weights (docs/methods.md §5), LNLN's loss
(§4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# ---- GEAR (docs/methods.md §5) -------------------------------------------------------------------

GMAE_KINDS = ("tanh", "sigmoid", "none", "off")
IPW_KINDS = ("min", "avg", "none")
_IPW_EPS = 1e-8


def l1_per_sample(pred: jax.Array, label: jax.Array) -> jax.Array:
  """|pred − label| elementwise, with PyTorch's L1 gradient sign(e) (0, not 1, at e = 0)."""
  err = pred - label
  return err * jax.lax.stop_gradient(jnp.sign(err))


def gmae_weight(abs_err: jax.Array, kind: str = "tanh", q: float = 0.7) -> jax.Array:
  """GMAE's per-sample weight g(|e|) (docs/methods.md §5), without gradient.

  "tanh": tanh((1/x)^q), equal to its limit 1 at x = 0; "sigmoid": 2·sigmoid(−x); "none": 1;
  "off": 0.
  """
  if kind not in GMAE_KINDS:
    raise ValueError(f"gmae: kind={kind!r}, expected one of {GMAE_KINDS}")
  x = jax.lax.stop_gradient(abs_err)
  if kind == "tanh":
    positive = x > 0
    safe = jnp.where(positive, x, 1.0)
    return jnp.where(positive, jnp.tanh((1.0 / safe) ** q), 1.0)
  if kind == "sigmoid":
    return 2.0 * jax.nn.sigmoid(-x)
  return jnp.full_like(x, 1.0 if kind == "none" else 0.0)


def gmae(pred: jax.Array, label: jax.Array, kind: str = "tanh", q: float = 0.7) -> jax.Array:
  """Generalised MAE per sample (docs/methods.md §5): sg(g(|e|))·|e|, e = pred − label, shapes
  (B,) -> (B,).

  Its gradient w.r.t. pred is g(|e|)·sign(e); "off" is identically zero (the reference's default).
  """
  if pred.shape != label.shape:
    raise ValueError(f"gmae: pred shape {pred.shape} != label shape {label.shape}")
  abs_err = l1_per_sample(pred, label)
  return gmae_weight(abs_err, kind, q) * abs_err


def ipw_weights(
  bias_errors: dict[str, jax.Array] | jax.Array, fusion_loss: jax.Array, kind: str = "min"
) -> jax.Array:
  """Inverse-probability weights W (B,) of the fusion loss (docs/methods.md §5), without gradient.

  Args:
    bias_errors: per-modality bias errors |ŷ_b^m − y|, a dict of (B,) or an (M, B) array.
    fusion_loss: (B,) per-sample fusion loss L_f (including its swap term).
    kind: "min": E / (E + L_f + 1e-8) with E = min_m bias error; "avg": E = mean_m; "none": 1.
  """
  if kind not in IPW_KINDS:
    raise ValueError(f"ipw_weights: kind={kind!r}, expected one of {IPW_KINDS}")
  if kind == "none":
    return jnp.ones_like(fusion_loss)
  if isinstance(bias_errors, dict):
    bias_errors = jnp.stack(list(bias_errors.values()))
  errs = jax.lax.stop_gradient(bias_errors)
  e = jnp.min(errs, axis=0) if kind == "min" else jnp.mean(errs, axis=0)
  return e / (e + jax.lax.stop_gradient(fusion_loss) + _IPW_EPS)


def gear_loss(
  outputs: dict,
  labels: jax.Array,
  *,
  gmae_kind: str = "tanh",
  q: float = 0.7,
  ipw_kind: str = "min",
  lambda_dis: float = 15.0,
  lambda_swap: float = 1.0,
  swap_active: bool | jax.Array = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """GEAR's training objective (docs/methods.md §5) from `GEAR`'s outputs and labels (B,).

  total = Σ_m [λ_dis·mean GMAE(ŷ_b^m, y) + a·λ_swap·λ_dis·mean GMAE(ŷ_b,swap^m, y[π_m])]
          + mean(W·L_f),  L_f = |ŷ − y| + a·λ_swap·|ŷ_swap − y|,
  with a = `swap_active` (a Python bool or a traced bool scalar: the swap terms are selected with
  `jnp.where`, so one compiled step serves both phases) and W = `ipw_weights` of the unswapped
  bias errors. Any `swap_active` other than Python False needs the swap outputs.

  Returns:
    (total, terms): terms has 'bias_<m>' and 'bias_swap_<m>' (already scaled by the λs),
    'fusion' (mean L_f), 'fusion_weighted' (mean W·L_f), 'ipw_mean' (mean W), 'mae' (mean |ŷ − y|).
  """
  labels = jnp.asarray(labels)
  if outputs["pred"].shape != labels.shape:
    raise ValueError(
      f"gear_loss: pred shape {outputs['pred'].shape} != labels shape {labels.shape}"
    )
  swapping = swap_active is not False
  if swapping:
    missing = [k for k in ("pred_swap", "bias_preds_swap", "perms") if k not in outputs]
    if missing:
      raise ValueError(
        f"gear_loss: swap_active={swap_active} but outputs lack {missing}; "
        "call GEAR with a swap_key"
      )
  active = jnp.asarray(swap_active, bool)
  select = lambda t: jnp.where(active, t, jnp.zeros_like(t))

  terms = {}
  bias_total = jnp.zeros((), labels.dtype)
  for m, pred_b in outputs["bias_preds"].items():
    terms[f"bias_{m}"] = lambda_dis * jnp.mean(gmae(pred_b, labels, gmae_kind, q))
    swap_term = jnp.zeros((), labels.dtype)
    if swapping:
      target = labels[outputs["perms"][m]]
      swap_term = select(
        lambda_swap
        * lambda_dis
        * jnp.mean(gmae(outputs["bias_preds_swap"][m], target, gmae_kind, q))
      )
    terms[f"bias_swap_{m}"] = swap_term
    bias_total = bias_total + terms[f"bias_{m}"] + swap_term

  abs_err = l1_per_sample(outputs["pred"], labels)
  fusion, weights = _fusion_and_weights(outputs, labels, ipw_kind, lambda_swap, swap_active)
  terms["fusion"] = jnp.mean(fusion)
  terms["fusion_weighted"] = jnp.mean(weights * fusion)
  terms["ipw_mean"] = jnp.mean(weights)
  terms["mae"] = jnp.mean(abs_err)
  return bias_total + terms["fusion_weighted"], terms


def _fusion_and_weights(
  outputs: dict, labels: jax.Array, ipw_kind: str, lambda_swap: float, swap_active: bool | jax.Array
) -> tuple[jax.Array, jax.Array]:
  """GEAR's per-sample fusion loss L_f (B,) and its inverse-probability weights W (B,)."""
  fusion = l1_per_sample(outputs["pred"], labels)
  if swap_active is not False:
    active = jnp.asarray(swap_active, bool)
    swap = lambda_swap * l1_per_sample(outputs["pred_swap"], labels)
    fusion = fusion + jnp.where(active, swap, jnp.zeros_like(swap))
  bias_errors = {m: l1_per_sample(p, labels) for m, p in outputs["bias_preds"].items()}
  return fusion, ipw_weights(bias_errors, fusion, ipw_kind)


def gear_sample_weights(
  outputs: dict,
  labels: jax.Array,
  *,
  ipw_kind: str = "min",
  lambda_swap: float = 1.0,
  swap_active: bool | jax.Array = False,
) -> jax.Array:
  """The weights W (B,) that `gear_loss` with the same arguments puts on each sample's fusion loss
  (without gradient); for diagnostics of what the weighting favours."""
  return _fusion_and_weights(outputs, jnp.asarray(labels), ipw_kind, lambda_swap, swap_active)[1]


# ---- LNLN (docs/methods.md §4) -------------------------------------------------------------------

LNLN_LOSS_WEIGHTS = {"alpha": 0.9, "beta": 0.8, "gamma": 0.1, "sigma": 1.0}
LNLN_LOSS_WEIGHTS_SIMS = {**LNLN_LOSS_WEIGHTS, "beta": 0.6}


def lnln_loss(
  outputs: dict, labels: jax.Array, text_missing_rate: jax.Array, weights: dict | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """LNLN's training objective (docs/methods.md §4) from `LNLN`'s outputs.

  total = α·MSE(w, 1 − r_l) + β·CE(disc_logits, disc_labels) + γ·MSE(rec, full) + σ·MSE(ŷ, y),
  every term a mean over all its elements (B for w and ŷ, 2·B·T rows for CE, B·3T·d for rec), as
  the reference's `nn.MSELoss()` / `nn.CrossEntropyLoss()`. A term whose outputs are absent (an
  ablation switched it off, or evaluation without the complete inputs) is 0.

  Args:
    outputs: `LNLN` outputs: 'pred' (B,), optional 'w' (B, 1), 'disc_logits' (N, 2) with
      'disc_labels' (N,), 'rec' with 'full' (B, 3T, d).
    labels: (B,) sentiment labels y.
    text_missing_rate: (B,) nominal text missing rates r_l (the completeness target is 1 − r_l).
    weights: {'alpha', 'beta', 'gamma', 'sigma'}; default `LNLN_LOSS_WEIGHTS` (MOSI/MOSEI;
      `LNLN_LOSS_WEIGHTS_SIMS` for SIMS). Values may be Python floats or traced scalars.

  Returns:
    (total, terms) with terms 'l_cc', 'l_adv', 'l_rec', 'l_sp' (unweighted, the reference's names).
  """
  weights = LNLN_LOSS_WEIGHTS if weights is None else weights
  if set(weights) != set(LNLN_LOSS_WEIGHTS):
    raise ValueError(
      f"lnln_loss: weights keys {sorted(weights)}, expected {sorted(LNLN_LOSS_WEIGHTS)}"
    )
  pred = outputs["pred"].reshape(-1)
  labels = jnp.asarray(labels).reshape(-1)
  if pred.shape != labels.shape:
    raise ValueError(f"lnln_loss: pred has {pred.shape[0]} values, labels {labels.shape[0]}")
  zero = jnp.zeros((), pred.dtype)
  terms = {"l_cc": zero, "l_adv": zero, "l_rec": zero, "l_sp": jnp.mean(jnp.square(pred - labels))}
  if "w" in outputs:
    target = 1.0 - jnp.asarray(text_missing_rate).reshape(-1)
    terms["l_cc"] = jnp.mean(jnp.square(outputs["w"].reshape(-1) - target))
  if "disc_logits" in outputs:
    logp = jax.nn.log_softmax(outputs["disc_logits"], axis=-1)
    picked = jnp.take_along_axis(logp, outputs["disc_labels"][:, None].astype(jnp.int32), axis=-1)
    terms["l_adv"] = -jnp.mean(picked)
  if "rec" in outputs:
    terms["l_rec"] = jnp.mean(jnp.square(outputs["rec"] - outputs["full"]))
  total = (
    weights["alpha"] * terms["l_cc"]
    + weights["beta"] * terms["l_adv"]
    + weights["gamma"] * terms["l_rec"]
    + weights["sigma"] * terms["l_sp"]
  )
  return total, terms
