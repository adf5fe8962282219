"""Tests of GEAR's losses: GMAE, inverse-probability weights and the total objective
(docs/methods.md §5)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msa_jax import losses

# Cheap LLVM settings: on the 2-core test machine compiling dominates these tests.
_jit = functools.partial(
  jax.jit,
  compiler_options={"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True},
)

KINDS = ("tanh", "sigmoid", "none", "off")
PRED = np.array([0.5, -1.0, 2.0, 1.0], np.float32)
LABEL = np.array([0.0, 0.0, 0.0, 1.0], np.float32)  # errors 0.5, -1, 2, 0


def _g(x: float, kind: str, q: float) -> float:
  if kind == "tanh":
    return 1.0 if x == 0 else math.tanh((1.0 / x) ** q)
  if kind == "sigmoid":
    return 2.0 / (1.0 + math.exp(x))
  return 1.0 if kind == "none" else 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_gmae_values_and_gradient(kind):
  q = 0.7
  value, grad = _jit(jax.value_and_grad(lambda p: losses.gmae(p, LABEL, kind, q).sum()))(PRED)
  per_sample = _jit(lambda p: losses.gmae(p, LABEL, kind, q))(PRED)
  errors = PRED - LABEL
  want = [_g(abs(e), kind, q) * abs(e) for e in errors]
  np.testing.assert_allclose(per_sample, want, rtol=1e-6)
  np.testing.assert_allclose(value, sum(want), rtol=1e-6)
  # The weight g carries no gradient: d/dpred = g(|e|)·sign(e), and 0 at zero error.
  np.testing.assert_allclose(grad, [_g(abs(e), kind, q) * np.sign(e) for e in errors], rtol=1e-6)
  assert np.all(np.isfinite(per_sample)) and np.all(np.isfinite(grad))


def test_gmae_tanh_hand_value_and_zero_error_guard():
  got = losses.gmae(jnp.array([0.5, 3.0]), jnp.array([0.0, 3.0]), "tanh", 0.7)
  np.testing.assert_allclose(got, [0.5 * math.tanh(2.0**0.7), 0.0], rtol=1e-6)
  np.testing.assert_allclose(losses.gmae_weight(jnp.zeros(2), "tanh", 1.0), [1.0, 1.0])
  second = jax.grad(jax.grad(lambda p: losses.gmae(p, jnp.zeros(()), "tanh", 0.7)))(0.0)
  assert np.isfinite(second)


def test_gmae_rejects_bad_kind_and_shapes():
  with pytest.raises(ValueError, match="kind='gce'"):
    losses.gmae(jnp.zeros(2), jnp.zeros(2), "gce")
  with pytest.raises(ValueError, match=r"pred shape \(2, 1\) != label shape \(2,\)"):
    losses.gmae(jnp.zeros((2, 1)), jnp.zeros(2))


BIAS_ERRORS = {
  "text": np.array([1.0, 0.2], np.float32),
  "audio": np.array([0.5, 0.4], np.float32),
  "vision": np.array([2.0, 0.1], np.float32),
}
FUSION = np.array([1.0, 0.3], np.float32)


@pytest.mark.parametrize(
  "kind,want",
  [
    ("min", [0.5 / 1.5, 0.1 / 0.4]),
    ("avg", [(3.5 / 3) / (3.5 / 3 + 1.0), (0.7 / 3) / (0.7 / 3 + 0.3)]),
    ("none", [1.0, 1.0]),
  ],
)
def test_ipw_weights_hand_values_and_no_gradient(kind, want):
  stacked = np.stack(list(BIAS_ERRORS.values()))

  def weights_sum(errs, fusion):
    return losses.ipw_weights(errs, fusion, kind).sum()

  np.testing.assert_allclose(losses.ipw_weights(BIAS_ERRORS, FUSION, kind), want, rtol=1e-6)
  np.testing.assert_allclose(losses.ipw_weights(stacked, FUSION, kind), want, rtol=1e-6)
  g_err, g_fusion = _jit(jax.grad(weights_sum, argnums=(0, 1)))(BIAS_ERRORS, FUSION)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves((g_err, g_fusion)))
  with pytest.raises(ValueError, match="kind='max'"):
    losses.ipw_weights(stacked, FUSION, "max")


def _outputs():
  return {
    "pred": np.array([0.5, -1.0, 2.0], np.float32),
    "bias_preds": {
      "text": np.array([0.0, 1.0, 1.5], np.float32),
      "audio": np.array([1.0, -2.0, 0.0], np.float32),
      "vision": np.array([0.2, 0.3, 3.0], np.float32),
    },
    "pred_swap": np.array([0.0, 0.0, 1.0], np.float32),
    "bias_preds_swap": {
      "text": np.array([1.0, 1.0, 1.0], np.float32),
      "audio": np.array([-1.0, 0.5, 2.0], np.float32),
      "vision": np.array([0.0, 0.0, 0.0], np.float32),
    },
    "perms": {
      "text": np.array([2, 0, 1]),
      "audio": np.array([1, 2, 0]),
      "vision": np.array([0, 2, 1]),
    },
  }


LABELS = np.array([1.0, -0.5, 2.5], np.float32)


def _numpy_gear_loss(out, kind, q, ipw, lambda_dis, lambda_swap, swap):
  g = lambda e: np.array([_g(abs(x), kind, q) for x in e]) * np.abs(e)
  total = 0.0
  for m in ("text", "audio", "vision"):
    total += lambda_dis * g(out["bias_preds"][m] - LABELS).mean()
    if swap:
      target = LABELS[out["perms"][m]]
      total += lambda_swap * lambda_dis * g(out["bias_preds_swap"][m] - target).mean()
  fusion = np.abs(out["pred"] - LABELS)
  if swap:
    fusion = fusion + lambda_swap * np.abs(out["pred_swap"] - LABELS)
  errs = np.stack([np.abs(out["bias_preds"][m] - LABELS) for m in ("text", "audio", "vision")])
  if ipw == "none":
    weights = np.ones_like(fusion)
  else:
    e = errs.min(0) if ipw == "min" else errs.mean(0)
    weights = e / (e + fusion + 1e-8)
  return total + (weights * fusion).mean()


@pytest.mark.parametrize(
  "kind,ipw,swap",
  [("tanh", "min", True), ("sigmoid", "avg", False), ("off", "none", True), ("none", "min", False)],
)
def test_gear_loss_matches_numpy(kind, ipw, swap):
  out = _outputs()
  total, terms = losses.gear_loss(
    out,
    LABELS,
    gmae_kind=kind,
    q=0.7,
    ipw_kind=ipw,
    lambda_dis=15.0,
    lambda_swap=0.5,
    swap_active=swap,
  )
  want = _numpy_gear_loss(out, kind, 0.7, ipw, 15.0, 0.5, swap)
  np.testing.assert_allclose(total, want, rtol=1e-5)
  np.testing.assert_allclose(terms["mae"], np.abs(out["pred"] - LABELS).mean(), rtol=1e-6)
  if not swap:
    assert all(float(terms[f"bias_swap_{m}"]) == 0 for m in out["bias_preds"])


def test_gear_loss_traced_swap_flag_and_gradients():
  out = _outputs()
  kw = dict(gmae_kind="tanh", q=0.7, ipw_kind="min", lambda_dis=15.0, lambda_swap=1.0)

  @_jit
  def loss_and_grad(out, flag):
    return jax.value_and_grad(
      lambda o: losses.gear_loss(o, LABELS, swap_active=flag, **kw)[0], allow_int=True
    )(out)

  for flag in (False, True):
    value, grad = loss_and_grad(out, flag)
    np.testing.assert_allclose(
      value, _numpy_gear_loss(out, "tanh", 0.7, "min", 15.0, 1.0, flag), rtol=1e-5
    )
    # IPW weights carry no gradient: d/dpred = W·sign(e)/B.
    err = out["pred"] - LABELS
    fusion = np.abs(err) + (np.abs(out["pred_swap"] - LABELS) if flag else 0.0)
    errs = np.stack([np.abs(p - LABELS) for p in out["bias_preds"].values()]).min(0)
    weights = errs / (errs + fusion + 1e-8)
    np.testing.assert_allclose(grad["pred"], weights * np.sign(err) / 3, rtol=1e-5)
    # Bias predictions get only their GMAE gradient, λ_dis·g(|e|)·sign(e)/B.
    e_text = out["bias_preds"]["text"] - LABELS
    np.testing.assert_allclose(
      grad["bias_preds"]["text"],
      [15.0 * _g(abs(e), "tanh", 0.7) * np.sign(e) / 3 for e in e_text],
      rtol=1e-5,
    )
    if not flag:
      assert np.all(np.asarray(grad["pred_swap"]) == 0)


def test_gear_loss_needs_swap_outputs_when_swapping():
  out = {k: v for k, v in _outputs().items() if k in ("pred", "bias_preds")}
  with pytest.raises(ValueError, match=r"outputs lack \['pred_swap', 'bias_preds_swap', 'perms'\]"):
    losses.gear_loss(out, LABELS, swap_active=True)
