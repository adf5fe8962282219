"""Forward and loss parity with the authors' GEAR code (docs/methods.md §5, §9).

The fixture (tests/fixtures/gear_reference*) was made once by scripts/reference/make_gear_fixture.py
from the authors' `IFL_ES` and training loop: tiny random BERTs, every parameter perturbed, dropouts
0, swap active with the permutations recorded, λ_swap = 0.5, and the loss for four settings of the
reference's `--gce` / `--weight` switches. Our forward on the converted weights, fed the recorded
permutations, and `losses.gear_loss` must reproduce every output and loss term to < 1e-4.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from msa_jax import losses
from msa_jax.models import gear
from msa_jax.reference import ReferenceConversionError
from msa_jax.reference import gear as reference_gear
from tests.parity import gradient_errors

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
MODALITIES = ("text", "audio", "vision")
TOL = 1e-4
# Fixture variant -> our gear_loss switches (reference --gce '' is our "off", --weight '' "none").
VARIANTS = {
  "tanh_min": dict(gmae_kind="tanh", ipw_kind="min", swap_active=True),
  "sigmoid_avg": dict(gmae_kind="sigmoid", ipw_kind="avg", swap_active=True),
  "off_none": dict(gmae_kind="off", ipw_kind="none", swap_active=True),
  "tanh_min_noswap": dict(gmae_kind="tanh", ipw_kind="min", swap_active=False),
}
BATCH_KEYS = ("text_bert", "audio", "vision", "audio_lengths", "vision_lengths")

_jit = functools.partial(
  jax.jit,
  compiler_options={"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True},
)


def _max_err(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, f"shape {got.shape} != reference {want.shape}"
  return float(np.max(np.abs(got - want)))


@pytest.fixture(scope="module")
def reference():
  state = load_file(str(FIXTURES / "gear_reference.safetensors"))
  io = dict(np.load(FIXTURES / "gear_reference_io.npz"))
  meta = json.loads(str(io.pop("meta_json")))
  return state, io, meta


@pytest.fixture(scope="module")
def ours(reference):
  """Converted params, config, and our forward (with intermediates) on the fixture's inputs."""
  state, io, meta = reference
  cfg = reference_gear.config_from_state_dict(
    state,
    text_heads=meta["bert"]["num_attention_heads"],
    fusion_heads=meta["sizes"]["fusion_heads"],
  )
  params = reference_gear.convert(state, cfg)
  batch = {k: jnp.asarray(io[k]) for k in BATCH_KEYS}
  perms = {m: jnp.asarray(io[f"perm_{m}"]) for m in MODALITIES}

  @_jit
  def forward(params, batch, perms):
    return gear.GEAR(cfg).apply(
      {"params": params}, batch, deterministic=True, permutations=perms, capture_intermediates=True
    )

  out, state_out = forward(params, batch, perms)
  return dict(cfg=cfg, params=params, out=out, inter=state_out["intermediates"])


def test_config_from_state_dict_sizes(reference, ours):
  _, io, meta = reference
  cfg, sizes, bert = ours["cfg"], meta["sizes"], meta["bert"]
  for name in (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
  ):
    assert getattr(cfg.text, name) == bert[name], name
  for name in (
    "audio_in",
    "vision_in",
    "audio_hidden",
    "vision_hidden",
    "audio_out",
    "vision_out",
    "swap_dim",
    "fusion_layers",
    "fusion_heads",
    "post_fusion_dim",
  ):
    assert getattr(cfg, name) == sizes[name], name
  assert cfg.fusion_ff == 2048  # PyTorch's TransformerEncoderLayer default, which GEAR keeps


def test_conversion_consumes_every_key_except_the_listed_unused(reference, ours):
  state, _, _ = reference
  used = {e.reference for e in reference_gear.name_table(ours["cfg"])}
  assert used <= set(state)
  left = set(state) - used
  assert left <= reference_gear.unused_names()
  assert sorted(left) == sorted(
    [
      f"{m}.model_c.final.{p}"
      for m in ("text_model", "audio_model", "video_model")
      for p in ("weight", "bias")
    ]
    + [
      f"text_model.model_{r}.model_text.model.pooler.dense.{p}"
      for r in "cb"
      for p in ("weight", "bias")
    ]
  )
  # The fusion layers were perturbed independently: the stacked leaves really hold two layers.
  encoder = ours["params"]["fusion"]["encoder"]
  assert not np.allclose(encoder["norm1"]["scale"][0], encoder["norm1"]["scale"][1])
  np.testing.assert_array_equal(
    encoder["in_proj"]["kernel"][1],
    state["fusion_model.transformer_encoder.layers.1.self_attn.in_proj_weight"].T,
  )


def test_forward_matches_reference(reference, ours):
  _, io, _ = reference
  out, inter = ours["out"], ours["inter"]
  np.testing.assert_array_equal(np.asarray(out["perms"]["audio"]), io["perm_audio"])
  errors = {
    "pred": _max_err(out["pred"], io["pred"]),
    "pred_swap": _max_err(out["pred_swap"], io["pred_swap"]),
  }
  for m in MODALITIES:
    heads = inter[f"{m}_heads"]["__call__"]  # calls: (h_c, ŷ_b), then the swapped one
    errors.update(
      {
        f"z_robust_{m}": _max_err(
          jax.nn.relu(inter[f"{m}_robust_proj"]["__call__"][0]), io[f"z_robust_{m}"]
        ),
        f"z_bias_{m}": _max_err(
          jax.nn.relu(inter[f"{m}_bias_proj"]["__call__"][0]), io[f"z_bias_{m}"]
        ),
        f"feature_{m}": _max_err(heads[0][0], io[f"feature_{m}"]),
        f"feature_swap_{m}": _max_err(heads[1][0], io[f"feature_swap_{m}"]),
        f"bias_pred_{m}": _max_err(out["bias_preds"][m], io[f"bias_pred_{m}"]),
        f"bias_pred_swap_{m}": _max_err(out["bias_preds_swap"][m], io[f"bias_pred_swap_{m}"]),
      }
    )
  bad = {k: v for k, v in errors.items() if not v < TOL}
  assert not bad, f"outputs differ from the reference by >= {TOL}: {bad}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_loss_terms_match_reference(reference, ours, variant):
  _, io, meta = reference
  out, labels = ours["out"], jnp.asarray(io["labels"])
  kw = VARIANTS[variant]
  lam_dis, lam_swap, q = meta["lambda_dis"], meta["lambda_swap"], meta["q"]
  total, terms = losses.gear_loss(
    out,
    labels,
    gmae_kind=kw["gmae_kind"],
    q=q,
    ipw_kind=kw["ipw_kind"],
    lambda_dis=lam_dis,
    lambda_swap=lam_swap,
    swap_active=kw["swap_active"],
  )
  ref = lambda name: io[f"loss.{variant}.{name}"]
  swap = kw["swap_active"]

  fusion = losses.l1_per_sample(out["pred"], labels)
  if swap:
    fusion = fusion + lam_swap * losses.l1_per_sample(out["pred_swap"], labels)
  bias_errors = {m: losses.l1_per_sample(out["bias_preds"][m], labels) for m in MODALITIES}
  weights = losses.ipw_weights(bias_errors, fusion, kw["ipw_kind"])
  errors = {
    "total": _max_err(total, ref("total")),
    "fusion_loss": _max_err(fusion, ref("fusion_loss")),
    "fusion": _max_err(terms["fusion"], ref("fusion_loss").mean()),
    "fusion_weighted": _max_err(terms["fusion_weighted"], (ref("fusion_loss") * ref("ipw")).mean()),
    "ipw": _max_err(weights, ref("ipw")),
    "ipw_mean": _max_err(terms["ipw_mean"], ref("ipw").mean()),
  }
  for m in MODALITIES:
    errors[f"bias_error_{m}"] = _max_err(bias_errors[m], io[f"bias_error_{m}"])
    errors[f"gmae_{m}"] = _max_err(
      losses.gmae(out["bias_preds"][m], labels, kw["gmae_kind"], q), ref(f"gmae_{m}")
    )
    # The reference's per-modality loss is λ_dis·mean(GMAE) + λ_swap·λ_dis·mean(GMAE_swap).
    errors[f"bias_{m}"] = _max_err(terms[f"bias_{m}"] + terms[f"bias_swap_{m}"], ref(f"bias_{m}"))
    if swap:
      target = labels[out["perms"][m]]
      errors[f"gmae_swap_{m}"] = _max_err(
        losses.gmae(out["bias_preds_swap"][m], target, kw["gmae_kind"], q), ref(f"gmae_swap_{m}")
      )
      errors[f"bias_swap_{m}"] = _max_err(
        terms[f"bias_swap_{m}"], lam_swap * lam_dis * ref(f"gmae_swap_{m}").mean()
      )
    else:
      assert float(terms[f"bias_swap_{m}"]) == 0.0
  bad = {k: v for k, v in errors.items() if not v < TOL}
  assert not bad, f"{variant}: loss terms differ from the reference by >= {TOL}: {bad}"


@pytest.fixture(scope="module")
def our_gradients(reference, ours):
  """Per fixture variant, our gradient of `gear_loss`'s total for every parameter, in reference
  names (a stacked fusion leaf split per layer, Linear kernels transposed)."""
  _, io, meta = reference
  cfg, labels = ours["cfg"], jnp.asarray(io["labels"])
  batch = {k: jnp.asarray(io[k]) for k in BATCH_KEYS}
  perms = {m: jnp.asarray(io[f"perm_{m}"]) for m in MODALITIES}

  @_jit
  def gradients(params):
    def total(p, kw):
      out = gear.GEAR(cfg).apply({"params": p}, batch, deterministic=True, permutations=perms)
      return losses.gear_loss(
        out,
        labels,
        gmae_kind=kw["gmae_kind"],
        q=meta["q"],
        ipw_kind=kw["ipw_kind"],
        lambda_dis=meta["lambda_dis"],
        lambda_swap=meta["lambda_swap"],
        swap_active=kw["swap_active"],
      )[0]

    return {v: jax.grad(total)(params, kw) for v, kw in VARIANTS.items()}

  grads = jax.tree.map(np.asarray, gradients(ours["params"]))
  named = {}
  for variant, tree in grads.items():
    for e in reference_gear.name_table(cfg):
      leaf = tree
      for key in e.ours:
        leaf = leaf[key]
      leaf = leaf if e.layer is None else leaf[e.layer]
      named[(variant, e.reference)] = leaf.T if e.how == reference_gear.LINEAR else leaf
  return named


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_gradient_matches_reference(reference, our_gradients, variant):
  """Every parameter's gradient of the total loss (both BERTs, the LSTMs, the fusion Transformer,
  the heads), against the reference's `backward()` for the same switches."""
  _, io, _ = reference
  prefix = f"grad.{variant}."
  want = {k[len(prefix) :]: v for k, v in io.items() if k.startswith(prefix)}
  got = {name: g for (v, name), g in our_gradients.items() if v == variant}
  assert len(want) > 150
  # Reference tensors the loss does not reach have no gradient there; ours must be zero.
  unreached = {name: g for name, g in got.items() if name not in want}
  assert all(not np.any(g) for g in unreached.values()), sorted(unreached)
  bad = gradient_errors({k: v for k, v in got.items() if k in want}, want)
  assert not bad, f"{variant}: {bad}"


# ---- conversion errors ---------------------------------------------------------------------------


def _convert_error(state, cfg) -> ReferenceConversionError:
  with pytest.raises(ReferenceConversionError) as info:
    reference_gear.convert(state, cfg)
  return info.value


def test_missing_key_is_named(reference, ours):
  state = dict(reference[0])
  name = "audio_model.model_b.model_audio.rnn.bias_hh_l0"
  del state[name]
  err = _convert_error(state, ours["cfg"])
  assert err.missing == [name] and not err.unexpected and not err.mismatched
  assert name in str(err)


def test_unexpected_key_is_named(reference, ours):
  state = dict(reference[0])
  name = "fusion_model.transformer_encoder.layers.2.norm1.weight"
  state[name] = np.ones(8, np.float32)
  err = _convert_error(state, ours["cfg"])
  assert err.unexpected == [name] and not err.missing and not err.mismatched
  assert name in str(err)


def test_wrong_shape_is_named(reference, ours):
  state = dict(reference[0])
  name = "video_model.model_c.feature.0.weight"
  state[name] = state[name].T  # (16, 8) instead of (8, 16)
  err = _convert_error(state, ours["cfg"])
  assert err.mismatched == [(name, (16, 8), (8, 16))] and not err.missing and not err.unexpected
  assert name in str(err)


def test_config_needs_the_size_tensors(reference):
  state = dict(reference[0])
  name = "fusion_model.fusion.fusion_layer_1.weight"
  del state[name]
  with pytest.raises(ReferenceConversionError, match=name.replace(".", r"\.")):
    reference_gear.config_from_state_dict(state, text_heads=2)


def test_permutations_argument_is_checked(reference, ours):
  _, io, _ = reference
  model, params = gear.GEAR(ours["cfg"]), {"params": ours["params"]}
  batch = {k: jnp.asarray(io[k]) for k in BATCH_KEYS}
  perms = {m: io[f"perm_{m}"] for m in MODALITIES}
  with pytest.raises(ValueError, match="swap_key or permutations, not both"):
    model.apply(params, batch, swap_key=jax.random.key(0), permutations=perms)
  with pytest.raises(ValueError, match=r"permutations has keys \['audio', 'text'\]"):
    model.apply(params, batch, permutations={m: perms[m] for m in ("text", "audio")})
  with pytest.raises(ValueError, match=r"permutations\['vision'\] has shape \(5,\)"):
    model.apply(params, batch, permutations={**perms, "vision": perms["vision"][:5]})
