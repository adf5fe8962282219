"""Makes the GEAR parity fixture from the authors' PyTorch code (docs/methods.md §5, §9).

Run once, in a throwaway virtualenv (torch is never a dependency of msa_jax), from the repository
root, on the authors' code at commit cab45ac62bd7f7880b5abadd15ff5136cad91761:

  python -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.13.0 transformers safetensors numpy
  git clone https://github.com/Teng-Sun/GEAR /tmp/gear_ref
  /tmp/torchvenv/bin/python scripts/reference/make_gear_fixture.py --ref /tmp/gear_ref

It writes
  tests/fixtures/gear_reference.safetensors  the IFL_ES state_dict (reference names, float32);
  tests/fixtures/gear_reference_io.npz       inputs, recorded swap permutations, sizes, every
                                             output, every loss term and, per variant, every
                                             parameter's gradient of the total (see `main`).

What it does, using the authors' modules unchanged (`src/models/IFL_ES.py`):
- the two text BERTs load a tiny random BERT (hidden 32, 2 layers, 2 heads, intermediate 64,
  vocab 64, BERT dropouts 0) written to a temporary directory, through the authors' own
  `BertTextEncoder` `from_pretrained` calls;
- small sizes (swap_dim 8, 4 fusion heads, LSTM hidden 6 / 7, post-LSTM out 5 / 6, post-fusion 12);
  the fusion `nn.TransformerEncoderLayer` keeps PyTorch's feed-forward width 2048, which the
  reference does not set;
- every dropout is set to 0 after construction (including `MultiheadAttention.dropout`), so the
  train-mode forward is deterministic;
- N(0, 0.1²) noise is added to every parameter: the LayerNorm scales and biases (BERT and fusion
  Transformer), the zero attention in/out-projection biases, the zero BERT biases and padding row,
  and the two deep-copied fusion layers and the two identical BERTs all differ afterwards, so a
  wrong LayerNorm, bias or robust/bias mix-up cannot hide;
- the forward runs as `trains.py` `Train.do_train` does at epoch 6 (> swap_epochs = 5, swap on),
  with the per-modality `np.random.permutation` draws recorded; the loss is computed as its
  `do_train` does (transcribed below, `training_loss`), with λ_swap = 0.5 (not 1, so that each
  place it multiplies is checked) and λ_dis = 15, for four settings of the reference's switches:
    tanh_min      --gce tanh --weight min, q = 0.7   (msa_jax's published setting,
                                                      docs/methods.md §9)
    sigmoid_avg   --gce sigmoid --weight avg
    off_none      --gce '' --weight ''               (the reference defaults: bias loss 0, no IPW)
    tanh_min_noswap  tanh / min at epoch 1 (before swap_epochs: no swap terms)
  q = 0.7 is set on the args object before construction: the reference's run.py declares `--q`
  as an int (default 1), so it cannot be given 0.7 on the command line (docs/methods.md §5).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import subprocess
import sys
import tempfile
import types

import numpy as np
import safetensors
import safetensors.numpy
import torch
import transformers
from torch import nn

GEAR_COMMIT = "cab45ac62bd7f7880b5abadd15ff5136cad91761"
MODALITIES = ("text", "audio", "vision")
REF_MODALITY = {"text": "text_model", "audio": "audio_model", "vision": "video_model"}

BERT = dict(
  vocab_size=64,
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=2,
  intermediate_size=64,
  max_position_embeddings=16,
  type_vocab_size=2,
  hidden_dropout_prob=0.0,
  attention_probs_dropout_prob=0.0,
)
SIZES = dict(
  batch=6,
  text_len=8,
  audio_frames=8,
  vision_frames=6,
  audio_in=5,
  vision_in=7,
  audio_hidden=6,
  vision_hidden=7,
  audio_out=5,
  vision_out=6,
  swap_dim=8,
  fusion_layers=2,
  fusion_heads=4,
  post_fusion_dim=12,
)
AUDIO_LENGTHS = (8, 5, 1, 8, 3, 6)
VISION_LENGTHS = (6, 2, 4, 6, 1, 5)
TEXT_LENGTHS = (8, 5, 3, 8, 2, 6)
LAMBDA_DIS, LAMBDA_SWAP, Q = 15, 0.5, 0.7
NOISE_STD = 0.1
SWAP_EPOCH, NO_SWAP_EPOCH, SWAP_EPOCHS = 6, 1, 5
# name -> (--gce, --weight, epoch)
VARIANTS = {
  "tanh_min": ("tanh", "min", SWAP_EPOCH),
  "sigmoid_avg": ("sigmoid", "avg", SWAP_EPOCH),
  "off_none": ("", "", SWAP_EPOCH),
  "tanh_min_noswap": ("tanh", "min", NO_SWAP_EPOCH),
}


def reference_args(bert_dir: pathlib.Path) -> types.SimpleNamespace:
  """The `args` the reference's modules read: run.py's defaults with the tiny sizes above."""
  return types.SimpleNamespace(
    need_data_aligned=False,
    use_finetune=True,
    transformers="bert",
    pretrained=str(bert_dir),
    feature_dims=[BERT["hidden_size"], SIZES["audio_in"], SIZES["vision_in"]],
    text_out=BERT["hidden_size"],
    swap_dim=SIZES["swap_dim"],
    a_lstm_hidden_size=SIZES["audio_hidden"],
    v_lstm_hidden_size=SIZES["vision_hidden"],
    audio_out=SIZES["audio_out"],
    video_out=SIZES["vision_out"],
    a_lstm_layers=1,
    v_lstm_layers=1,
    a_lstm_dropout=0.0,
    v_lstm_dropout=0.0,
    post_text_dropout=0.0,
    post_audio_dropout=0.0,
    post_video_dropout=0.0,
    post_fusion_dropout=0.0,
    post_fusion_dim=SIZES["post_fusion_dim"],
    trans_layers=SIZES["fusion_layers"],
    trans_heads=SIZES["fusion_heads"],
    q=Q,
    lambda_dis=LAMBDA_DIS,
    lambda_swap=LAMBDA_SWAP,
    swap_epochs=SWAP_EPOCHS,
    gce="tanh",
    weight="min",
    device="cpu",
    train_mode="regression",
  )


def write_tiny_bert(directory: pathlib.Path) -> None:
  """A random tiny BERT and a 64-token vocabulary, loadable by `from_pretrained(directory)`."""
  config = transformers.BertConfig(**BERT)
  transformers.BertModel(config).save_pretrained(directory)
  special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  vocab = special + [f"tok{i}" for i in range(BERT["vocab_size"] - len(special))]
  (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")


def zero_dropouts(model: nn.Module) -> None:
  """Sets every dropout probability to 0 (train mode then equals the deterministic forward)."""
  for module in model.modules():
    if isinstance(module, nn.Dropout):
      module.p = 0.0
    if isinstance(module, nn.MultiheadAttention):
      module.dropout = 0.0
    config = getattr(module, "config", None)
    if isinstance(config, transformers.BertConfig):
      assert config.hidden_dropout_prob == 0.0 and config.attention_probs_dropout_prob == 0.0


@torch.no_grad()
def perturb(model: nn.Module, generator: torch.Generator) -> None:
  """Adds N(0, NOISE_STD²) to every parameter, so no tensor keeps a constant initial value."""
  for _, param in model.named_parameters():
    param.add_(NOISE_STD * torch.randn(param.shape, generator=generator))


def make_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Random batch: text (B, 3, L) [ids, mask, segments] as MMSA's float array, padded audio/vision
  (padding filled with large values that must never matter), lengths, and labels: half in
  [-3, 3], half in [-0.5, 0.5] so that some bias errors are small (GMAE weights near 1)."""
  b, length = SIZES["batch"], SIZES["text_len"]
  mask = (np.arange(length)[None, :] < np.asarray(TEXT_LENGTHS)[:, None]).astype(np.float32)
  ids = rng.integers(5, BERT["vocab_size"], size=(b, length))
  ids[:, 0] = 2  # [CLS]
  ids = np.where(mask > 0, ids, 0)
  segments = np.where(mask > 0, rng.integers(0, 2, size=(b, length)), 0)
  text = np.stack([ids, mask, segments], axis=1).astype(np.float32)

  def frames(steps: int, dim: int, lengths: tuple[int, ...]) -> np.ndarray:
    x = rng.normal(size=(b, steps, dim)).astype(np.float32)
    pad = np.arange(steps)[None, :] >= np.asarray(lengths)[:, None]
    x[pad] = 50.0
    return x

  return {
    "text_bert": text,
    "audio": frames(SIZES["audio_frames"], SIZES["audio_in"], AUDIO_LENGTHS),
    "vision": frames(SIZES["vision_frames"], SIZES["vision_in"], VISION_LENGTHS),
    "audio_lengths": np.asarray(AUDIO_LENGTHS, np.int64),
    "vision_lengths": np.asarray(VISION_LENGTHS, np.int64),
    "labels": np.concatenate(
      [rng.uniform(-3, 3, size=b - b // 2), rng.uniform(-0.5, 0.5, size=b // 2)]
    ).astype(np.float32),
  }


@contextlib.contextmanager
def recorded_permutations(seed: int):
  """Seeds numpy and records every `np.random.permutation` draw (the reference's swap)."""
  drawn: list[np.ndarray] = []
  original = np.random.permutation

  def recording(n):
    perm = original(n)
    drawn.append(np.asarray(perm))
    return perm

  np.random.seed(seed)
  np.random.permutation = recording
  try:
    yield drawn
  finally:
    np.random.permutation = original


class Recorder:
  """Forward hooks collecting the outputs of named submodules, one list entry per call."""

  def __init__(self, model: nn.Module, names: list[str]):
    self.calls: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    modules = dict(model.named_modules())
    self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

  def _hook(self, name: str):
    def hook(_module, _inputs, output):
      self.calls[name].append(output.detach().clone())

    return hook

  def remove(self) -> None:
    for h in self.handles:
      h.remove()


def training_loss(model: nn.Module, args, batch: dict[str, torch.Tensor], epochs: int):
  """One forward and loss as `trains.py` `Train.do_train` computes them (lines 134-154).

  Returns the per-modality losses, bias errors, features, swap features, fusion loss and
  prediction, the IPW weights and the total.
  """
  model_text, model_audio = model.text_model, model.audio_model
  model_video, model_fusion = model.video_model, model.fusion_model
  text, audio, vision = batch["text_bert"], batch["audio"], batch["vision"]
  audio_lengths, vision_lengths = batch["audio_lengths"], batch["vision_lengths"]
  labels = batch["labels"].view(-1, 1)

  loss_text_gce, loss_text_b, feature_t, swap_t = model_text(text, labels, epochs)
  loss_audio_gce, loss_audio_b, feature_a, swap_a = model_audio(
    audio, audio_lengths, labels, epochs
  )
  loss_video_gce, loss_video_b, feature_v, swap_v = model_video(
    vision, vision_lengths, labels, epochs
  )
  loss_fusion, outputs = model_fusion(
    feature_t, feature_a, feature_v, labels, swap_t, swap_a, swap_v, epochs
  )

  if args.weight == "avg":
    avgloss = (loss_text_b + loss_audio_b + loss_video_b) / 3
    loss_weight = avgloss / (avgloss + loss_fusion.detach() + 1e-8)
    loss = loss_text_gce + loss_audio_gce + loss_video_gce + (loss_fusion * loss_weight).mean()
  elif args.weight == "min":
    minloss = torch.minimum(loss_text_b, torch.minimum(loss_audio_b, loss_video_b))
    loss_weight = minloss / (minloss + loss_fusion.detach() + 1e-8)
    loss = loss_text_gce + loss_audio_gce + loss_video_gce + (loss_fusion * loss_weight).mean()
  else:
    loss_weight = torch.ones_like(loss_fusion)
    loss = loss_text_gce + loss_audio_gce + loss_video_gce + loss_fusion.mean()

  return {
    "bias_loss": dict(zip(MODALITIES, (loss_text_gce, loss_audio_gce, loss_video_gce))),
    "bias_error": dict(zip(MODALITIES, (loss_text_b, loss_audio_b, loss_video_b))),
    "feature": dict(zip(MODALITIES, (feature_t, feature_a, feature_v))),
    "feature_swap": dict(zip(MODALITIES, (swap_t, swap_a, swap_v))),
    "fusion_loss": loss_fusion,
    "pred": outputs,
    "ipw": loss_weight,
    "total": loss,
  }


def _np(t) -> np.ndarray:
  return t.detach().cpu().numpy().astype(np.float32)


def _flat(t) -> np.ndarray:
  """(B, 1) or (B,) tensor -> (B,) float32 array; a 1-element tensor -> scalar array."""
  a = _np(t)
  return a.reshape(-1) if a.size > 1 else a.reshape(())


def run_variant(
  model, args, batch, gce: str, weight: str, epochs: int, seed: int
) -> tuple[dict, dict, list[np.ndarray]]:
  """Runs `training_loss` with the given switches; returns (results, hooked calls, perms)."""
  args.gce, args.weight = gce, weight
  hooked = []
  for m in MODALITIES:
    ref = REF_MODALITY[m]
    hooked += [f"{ref}.model_c", f"{ref}.model_b", f"{ref}.model_b.final", f"{ref}.bias_criterion"]
  hooked += ["fusion_model.fusion", "fusion_model.criterion"]
  recorder = Recorder(model, hooked)
  try:
    with recorded_permutations(seed) as perms:
      results = training_loss(model, args, batch, epochs)
  finally:
    recorder.remove()
  return results, recorder.calls, perms


def gear_commit(ref: pathlib.Path) -> str:
  """The reference checkout's commit if it is a git clone, else the pinned `GEAR_COMMIT`."""
  if not (ref / ".git").exists():
    return GEAR_COMMIT
  try:
    out = subprocess.run(
      ["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return GEAR_COMMIT


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--ref",
    type=pathlib.Path,
    required=True,
    help="the authors' GEAR checkout (holding src/models/IFL_ES.py)",
  )
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("tests/fixtures"))
  parser.add_argument("--seed", type=int, default=0)
  opts = parser.parse_args()

  sys.path.insert(0, str(opts.ref / "src"))
  from models.IFL_ES import IFL_ES  # the authors' model, unchanged

  torch.manual_seed(opts.seed)
  generator = torch.Generator().manual_seed(opts.seed + 1)
  rng = np.random.default_rng(opts.seed + 2)
  with tempfile.TemporaryDirectory() as tmp:
    bert_dir = pathlib.Path(tmp)
    write_tiny_bert(bert_dir)
    args = reference_args(bert_dir)
    model = IFL_ES(args)
  zero_dropouts(model)
  perturb(model, generator)
  model.train()

  inputs = make_inputs(rng)
  batch = {k: torch.from_numpy(v) for k, v in inputs.items()}
  arrays: dict[str, np.ndarray] = {k: v for k, v in inputs.items()}
  permutation_seed = opts.seed + 3

  main_results, calls, perms = run_variant(
    model, args, batch, *VARIANTS["tanh_min"], seed=permutation_seed
  )
  if len(perms) != len(MODALITIES):
    raise RuntimeError(f"expected {len(MODALITIES)} permutation draws, got {len(perms)}")
  for m, perm in zip(MODALITIES, perms):
    arrays[f"perm_{m}"] = perm.astype(np.int32)
  for m in MODALITIES:
    ref = REF_MODALITY[m]
    arrays[f"z_robust_{m}"] = _np(calls[f"{ref}.model_c"][0])
    arrays[f"z_bias_{m}"] = _np(calls[f"{ref}.model_b"][0])
    arrays[f"feature_{m}"] = _np(main_results["feature"][m])
    arrays[f"feature_swap_{m}"] = _np(main_results["feature_swap"][m])
    bias_preds = calls[f"{ref}.model_b.final"]
    assert len(bias_preds) == 2, f"{ref}.model_b.final called {len(bias_preds)} times"
    arrays[f"bias_pred_{m}"] = _flat(bias_preds[0])
    arrays[f"bias_pred_swap_{m}"] = _flat(bias_preds[1])
    arrays[f"bias_error_{m}"] = _flat(main_results["bias_error"][m])
  fusion_calls = calls["fusion_model.fusion"]
  assert len(fusion_calls) == 2, f"fusion MLP called {len(fusion_calls)} times"
  arrays["pred"] = _flat(fusion_calls[0])
  arrays["pred_swap"] = _flat(fusion_calls[1])
  np.testing.assert_array_equal(arrays["pred"], _flat(main_results["pred"]))

  for name, (gce, weight, epochs) in VARIANTS.items():
    results, calls, drawn = run_variant(model, args, batch, gce, weight, epochs, permutation_seed)
    swapping = epochs > SWAP_EPOCHS
    for perm, m in zip(drawn, MODALITIES):
      np.testing.assert_array_equal(perm, arrays[f"perm_{m}"])
    assert len(drawn) == (3 if swapping else 0)
    np.testing.assert_allclose(_flat(results["pred"]), arrays["pred"], rtol=0, atol=0)
    prefix = f"loss.{name}."
    for m in MODALITIES:
      gce_calls = calls[f"{REF_MODALITY[m]}.bias_criterion"]
      arrays[prefix + f"bias_{m}"] = _flat(results["bias_loss"][m])
      arrays[prefix + f"gmae_{m}"] = _flat(gce_calls[0])
      if swapping:
        arrays[prefix + f"gmae_swap_{m}"] = _flat(gce_calls[1])
    arrays[prefix + "fusion_loss"] = _flat(results["fusion_loss"])
    arrays[prefix + "ipw"] = _flat(results["ipw"])
    arrays[prefix + "total"] = _flat(results["total"])
    # Every parameter's gradient of the total, as `do_train`'s `loss.backward()` computes it.
    model.zero_grad(set_to_none=True)
    results["total"].backward()
    for param_name, param in model.named_parameters():
      if param.grad is not None:
        arrays[f"grad.{name}.{param_name}"] = _np(param.grad)

  meta = {
    "gear_commit": gear_commit(opts.ref),
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "safetensors": safetensors.__version__,
    "numpy": np.__version__,
    "seed": opts.seed,
    "bert": BERT,
    "sizes": SIZES,
    "lambda_dis": LAMBDA_DIS,
    "lambda_swap": LAMBDA_SWAP,
    "q": Q,
    "swap_epochs": SWAP_EPOCHS,
    "noise_std": NOISE_STD,
    "variants": {k: {"gce": g, "weight": w, "epoch": e} for k, (g, w, e) in VARIANTS.items()},
    "command": "scripts/reference/make_gear_fixture.py --ref /tmp/gear_ref",
  }
  arrays["meta_json"] = np.asarray(json.dumps(meta, sort_keys=True))

  state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
  opts.out.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(
    state,
    str(opts.out / "gear_reference.safetensors"),
    metadata={"gear_commit": meta["gear_commit"], "torch": torch.__version__},
  )
  np.savez_compressed(opts.out / "gear_reference_io.npz", **arrays)
  print(
    f"wrote {len(state)} tensors and {len(arrays)} arrays to {opts.out}; meta: "
    f"{json.dumps({k: meta[k] for k in ('gear_commit', 'torch', 'transformers')})}"
  )
  for name in VARIANTS:
    print(f"  {name}: total {float(arrays[f'loss.{name}.total']):.6f}")


if __name__ == "__main__":
  main()
