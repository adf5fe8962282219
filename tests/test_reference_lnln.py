"""Parity of our LNLN with the authors' PyTorch code, on converted weights (docs/methods.md §4, §9).

`tests/fixtures/lnln_reference.safetensors` is the state_dict of the authors' LNLN
(github.com/Haoyu-ha/LNLN, reference names) with a tiny random BERT and every constant-initialised
tensor perturbed; `lnln_reference_io.npz` holds the inputs (masked and complete), the sizes, the
reference's train-mode outputs, intermediate features, loss terms (its `MultimodalLoss`), a few
gradients of the total loss, and its eval-mode outputs. Both were made by
`scripts/reference/make_lnln_fixture.py` (see its docstring for the command). Here the state_dict
goes through `msa_jax.reference.lnln.convert`, our LNLN runs on the same inputs without dropout,
and everything must agree to < 1e-4 (gradients: relative to their largest entry).
"""

from __future__ import annotations

import json
import pathlib

import flax.serialization
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from msa_jax.losses import LNLN_LOSS_WEIGHTS, lnln_loss
from msa_jax.models.bert import BertConfig, _hf_name
from msa_jax.models.lnln import LNLN, LNLNConfig
from msa_jax.reference import ReferenceConversionError
from msa_jax.reference.lnln import (
  LINEAR,
  NAME_TABLE,
  UNUSED,
  config_from_state_dict,
  convert,
  expected_shapes,
  reference_name,
)
from tests.parity import gradient_errors

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TOL = 1e-4
FAST_COMPILE = {
  "xla_backend_optimization_level": 0,
  "xla_llvm_disable_expensive_passes": True,
  "xla_cpu_use_fusion_emitters": False,
}
CAPTURED = {"bert", "proj_l", "proj_a", "proj_v", "proxy_generator", "language_encoder", "fusion"}


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
  return load_file(FIXTURES / "lnln_reference.safetensors")


@pytest.fixture(scope="module")
def io() -> dict[str, np.ndarray]:
  with np.load(FIXTURES / "lnln_reference_io.npz") as data:
    return dict(data)


@pytest.fixture(scope="module")
def converted(state_dict, io):
  bert_heads = json.loads(str(io["bert_config"]))["num_attention_heads"]
  return convert(state_dict, bert_heads=bert_heads)


@pytest.fixture(scope="module")
def ours(converted, io) -> dict[str, np.ndarray]:
  """Our train-mode outputs, intermediates, loss terms and gradients, and eval-mode outputs, from
  one compiled program on the converted weights."""
  params, config = converted
  model = LNLN(config)
  masked = {"text_bert": io["text_bert_m"], "audio": io["audio_m"], "vision": io["vision_m"]}
  complete = {"text_bert": io["text_bert"], "audio": io["audio"], "vision": io["vision"]}
  weights = json.loads(str(io["loss_weights"]))
  capture = lambda module, method: (
    method == "__call__"
    and ((module.name or "") in CAPTURED or (module.name or "").startswith("hyper_"))
  )

  def loss_fn(p):
    out, state = model.apply(
      {"params": p},
      masked,
      complete,
      deterministic=True,
      capture_intermediates=capture,
      mutable=["intermediates"],
    )
    total, terms = lnln_loss(out, io["labels"], io["missing_rate_l"], weights)
    return total, (out, terms, state["intermediates"])

  def program(p):
    (total, (out, terms, inter)), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
    first = lambda name: inter[name]["__call__"][0]  # the masked-input call
    t = config.token_len
    results = {
      "train/pred": out["pred"],
      "train/w": out["w"],
      "train/rec": out["rec"],
      "train/full": out["full"],
      "train/disc_logits": out["disc_logits"],
      "disc_labels": out["disc_labels"],
      "train/bert_m": first("bert"),
      "train/bert_full": inter["bert"]["__call__"][1],
      "train/h_l": first("proj_l"),
      "train/h_a": first("proj_a"),
      "train/h_v": first("proj_v"),
      "train/h_p": first("proxy_generator")[:, :t],
      "train/h_hyper": first(f"hyper_{config.num_hyper_layers - 1}"),
      "train/fusion": first("fusion"),
      "loss/loss": total,
      **{f"loss/{k}": v for k, v in terms.items()},
      "grads": grads,
    }
    for i, h in enumerate(first("language_encoder")):
      results[f"train/language_hidden_{i}"] = h
    evaluated = model.apply({"params": p}, masked, deterministic=True)
    results.update(
      {"eval/pred": evaluated["pred"], "eval/w": evaluated["w"], "eval/keys": len(evaluated)}
    )
    return results

  results = jax.jit(program, compiler_options=FAST_COMPILE)(params)
  return jax.tree.map(np.asarray, results)


def assert_close(name: str, got, want, tol: float = TOL) -> None:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, f"{name}: shape {got.shape}, reference {want.shape}"
  err = float(np.max(np.abs(got - want))) if got.size else 0.0
  assert err < tol, f"{name}: max abs error {err:.3g} >= {tol:g}"


# ---- the conversion ------------------------------------------------------------------------------


def test_config_from_state_dict_reads_the_fixture_sizes(converted, io):
  _, config = converted
  for field in (
    "text_frames",
    "audio_frames",
    "vision_frames",
    "audio_dim",
    "vision_dim",
    "dim",
    "token_len",
    "heads",
    "dim_head",
    "mlp_dim",
    "depth",
    "fusion_depth",
    "num_hyper_layers",
    "hyper_heads",
    "hyper_dim_head",
  ):
    assert getattr(config, field) == int(io[field]), field
  bert = json.loads(str(io["bert_config"]))
  for field in (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
  ):
    assert getattr(config.bert, field) == bert[field], field
  assert (config.completeness_hidden, config.discriminator_hidden) == (64, 64)


def test_every_tensor_is_used_and_every_leaf_filled(state_dict, converted):
  params, config = converted
  flat = {
    "/".join(str(k.key) for k in path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  assert {p: v.shape for p, v in flat.items()} == expected_shapes(config)
  used = {reference_name(p)[0] for p in flat}
  assert used | (set(state_dict) & set(UNUSED)) == set(state_dict)
  assert set(state_dict) - used == {
    "bertmodel.model.pooler.dense.weight",
    "bertmodel.model.pooler.dense.bias",
  }
  for path, leaf in flat.items():
    name, transform = reference_name(path)
    want = state_dict[name].T if transform == LINEAR else state_dict[name]
    np.testing.assert_array_equal(leaf, want, err_msg=path)
    assert leaf.dtype == np.float32


def test_name_table_is_one_to_one_and_agrees_with_the_bert_loader():
  refs = [r for r, _, _ in NAME_TABLE]
  ours = [o for _, o, _ in NAME_TABLE]
  assert len(set(refs)) == len(refs) and len(set(ours)) == len(ours)
  for ref, our, _ in NAME_TABLE:
    if our.startswith("bert/"):  # the same names as models.bert's Hugging Face loader
      path = tuple(our.replace("{i}", "3").split("/")[1:])
      assert ref.replace("{i}", "3") == "bertmodel.model." + _hf_name(path)


def test_params_round_trip_through_msgpack(converted):
  params, _ = converted
  restored = flax.serialization.msgpack_restore(flax.serialization.msgpack_serialize(params))
  jax.tree.map(np.testing.assert_array_equal, restored, params)


def test_real_sizes_round_trip():
  """A state_dict in reference names with LNLN's real MOSEI sizes (docs/methods.md §4: d 128, 8
  heads of 64, depth 2, 3 hyper layers, fusion depth 4) gives back that config, and converts."""
  config = LNLNConfig.mosei(BertConfig.tiny())
  shapes = expected_shapes(config)
  state_dict = {}
  for path, shape in shapes.items():
    name, transform = reference_name(path)
    state_dict[name] = np.broadcast_to(np.float32(0), shape[::-1] if transform == LINEAR else shape)
  state_dict.update({name: np.zeros((1,), np.float32) for name in UNUSED})
  assert len(state_dict) == len(shapes) + len(UNUSED)
  assert config_from_state_dict(state_dict, bert_heads=2) == config
  params, got = convert(state_dict, bert_heads=2)
  assert got == config and sum(x.size for x in jax.tree.leaves(params)) == sum(
    int(np.prod(s)) for s in shapes.values()
  )


def _expect_error(state_dict, config=None, **kwargs) -> ReferenceConversionError:
  with pytest.raises(ReferenceConversionError) as info:
    convert(state_dict, config, bert_heads=2, **kwargs)
  return info.value


def test_missing_key_is_named(state_dict, converted):
  _, config = converted
  for name in (
    "dmml.1.layers.1.0.norm4.bias",
    "bertmodel.model.encoder.layer.1.output.dense.bias",
    "h_hyper",
  ):
    broken = {k: v for k, v in state_dict.items() if k != name}
    error = _expect_error(broken, config)
    assert error.missing == [name] and not error.unexpected and not error.mismatched
    assert name in str(error)
  with pytest.raises(ReferenceConversionError, match="'h_hyper'"):  # needed to read the sizes
    config_from_state_dict({k: v for k, v in state_dict.items() if k != "h_hyper"}, bert_heads=2)


def test_extra_key_is_named(state_dict, converted):
  _, config = converted
  broken = {
    **state_dict,
    "dmml.4.weight": np.zeros((1, 128), np.float32),
    "proj_l.1.encoder.layers.5.0.fn.to_q.weight": np.zeros((64, 128), np.float32),
  }
  error = _expect_error(broken, config, source="ckpt.safetensors")
  assert error.unexpected == ["dmml.4.weight", "proj_l.1.encoder.layers.5.0.fn.to_q.weight"]
  assert "dmml.4.weight" in str(error) and "ckpt.safetensors" in str(error)


def test_wrong_shape_is_named(state_dict, converted):
  _, config = converted
  broken = {
    **state_dict,
    "dmml.3.weight": state_dict["dmml.3.weight"].T,
    "proj_l.1.extra_token": np.zeros((1, 7, 128), np.float32),
  }
  error = _expect_error(broken, config)
  assert error.mismatched == [
    ("dmml.3.weight", (128, 1), (1, 128)),
    ("proj_l.1.extra_token", (1, 7, 128), (1, 8, 128)),
  ]
  assert "dmml.3.weight: got (128, 1), expected (1, 128)" in str(error)


# ---- parity --------------------------------------------------------------------------------------


def test_fixture_provenance(io):
  assert str(io["lnln_commit"]) == "80a052c62b7b3b7a6cb6956846e9d9c121f56eda"
  assert str(io["torch_version"]).startswith("2.") and str(io["transformers_version"])
  assert json.loads(str(io["loss_weights"])) == LNLN_LOSS_WEIGHTS
  assert io["perturbed"].size > 100  # every LayerNorm, zero bias and token, h_p, h_hyper


def test_train_forward_matches_reference(ours, io):
  b, t = io["labels"].shape[0], int(io["token_len"])
  assert_close("pred", ours["train/pred"], io["train/pred"][:, 0])
  for key in ("w", "rec", "full", "disc_logits"):
    assert_close(key, ours[f"train/{key}"], io[f"train/{key}"])
  np.testing.assert_array_equal(ours["disc_labels"], np.repeat([1, 0], b * t))


def test_intermediate_features_match_reference(ours, io):
  keys = [
    k
    for k in io
    if k.startswith("train/")
    and k.split("/")[1] not in ("pred", "w", "rec", "full", "disc_logits", "h_d")
  ]
  assert len(keys) >= 10
  for key in keys:
    assert_close(key, ours[key], io[key])
  w = ours["train/w"][:, :, None]
  assert_close("h_d", w * ours["train/h_l"] + (1 - w) * ours["train/h_p"], io["train/h_d"])


def test_loss_terms_match_reference(ours, io):
  for key in ("l_cc", "l_adv", "l_rec", "l_sp", "loss"):
    assert_close(key, ours[f"loss/{key}"], io[f"loss/{key}"])


def test_eval_forward_matches_reference(ours, io):
  assert ours["eval/keys"] == 2  # pred and w only: no training branch without complete inputs
  assert_close("eval pred", ours["eval/pred"], io["eval/pred"][:, 0])
  assert_close("eval w", ours["eval/w"], io["eval/w"])


def test_every_gradient_matches_reference(ours, io):
  """The gradient of the total loss for every parameter (through the GRL, the un-stopped
  complete-input targets and BERT's embeddings, [PAD] row included), in reference names."""
  grads = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(ours["grads"])[0]:
    name, transform = reference_name("/".join(str(k.key) for k in path))
    grads[name] = leaf.T if transform == LINEAR else leaf
  reference = {k[len("grad/") :]: v for k, v in io.items() if k.startswith("grad/")}
  assert set(io["no_grad"]) == {
    "bertmodel.model.pooler.dense.weight",
    "bertmodel.model.pooler.dense.bias",
  }  # not converted: unused
  assert len(reference) == len(grads) > 250
  bad = gradient_errors(grads, reference)
  assert not bad, bad
  pad_row = reference["bertmodel.model.embeddings.word_embeddings.weight"][0]
  assert (io["text_bert"][:, 0] == 0).sum() >= 10 and not pad_row.any()
