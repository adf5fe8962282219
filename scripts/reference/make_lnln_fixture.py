"""Makes the LNLN parity fixture from the authors' PyTorch code (docs/methods.md §4, §9).

Run once, in a throwaway virtualenv (torch is never a dependency of msa_jax), from the repository
root, on the authors' code at commit 80a052c62b7b3b7a6cb6956846e9d9c121f56eda:

  python -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.13.0 transformers safetensors numpy einops
  git clone https://github.com/Haoyu-ha/LNLN /tmp/lnln_ref
  /tmp/torchvenv/bin/python scripts/reference/make_lnln_fixture.py --ref /tmp/lnln_ref \
      --commit 80a052c62b7b3b7a6cb6956846e9d9c121f56eda

(`--commit` may be left out when `--ref` is a git checkout.) It writes
  tests/fixtures/lnln_reference.safetensors  the LNLN state_dict (reference names, float32);
  tests/fixtures/lnln_reference_io.npz       inputs, sizes, every output, intermediate features,
                                             every loss term, every gradient (see `main`).

What it does, using the authors' modules unchanged (`models/lnln.py`, `core/losses.py`,
`core/dataset.py`):
- the authors' `BertTextEncoder` loads, through its own `from_pretrained` calls, a tiny random BERT
  (hidden 32, 2 layers, 2 heads, intermediate 64, vocab 160, both BERT dropouts 0, so that the
  train-mode forward is deterministic) written to a temporary directory;
- the authors' `build_model(args)` with their config layout, at the smallest sizes their code
  allows: d = 128 and 8 tokens are hard-coded in `models/lnln.py`, dim_head 64 in
  `basic_layers.Transformer`; we take heads 1 (inner 64) in every Transformer, depth 1 everywhere
  except the fusion CrossTransformer (depth 2), 2 hyper layers (8 heads, dim_head 16, as every
  reference config), frames (L 12, V 9, A 10) and input dims (L 32, V 7, A 5);
- N(0, 0.2²) noise is added to every constant-initialised tensor — all LayerNorm scales and biases
  (BERT included), the zero BERT biases, BERT's zero padding-embedding row, the zero extra tokens,
  the ones-initialised `h_p` and `h_hyper` — so that a wrong LayerNorm, bias or token cannot hide;
  the script checks afterwards that no parameter (or row of a matrix) is constant;
- a batch of 4 with padding, [CLS] = 101 first and [SEP] = 102 last, a two-segment sample, and
  zero-padded audio/vision frames; the masked inputs come from the authors' own
  `MMDataset.generate_m` (seed 1111, [UNK] = 100 for dropped tokens, zeroed frames) at per-sample
  nominal missing rates r_l, r_a, r_v (one sample at rate 0, as half of a training batch);
- the train-mode forward is called as `train.py` `train()` calls it,
  `model((vision, audio, text), (vision_m, audio_m, text_m))`, with the labels built as there
  (completeness 1 − r_l, effectiveness 1 for the B·8 h_d rows then 0), and the loss is the
  authors' `MultimodalLoss` with α 0.9, β 0.8, γ 0.1, σ 1.0 (MOSI/MOSEI); `backward()` of the total
  then gives the gradient of every parameter (names of those it does not reach: `no_grad`);
- the eval-mode forward is called as `evaluate()` calls it, `model((None, None, None), masked)`,
  under `torch.no_grad()`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import safetensors
import safetensors.torch
import torch
import transformers
from torch import nn

LNLN_COMMIT = "80a052c62b7b3b7a6cb6956846e9d9c121f56eda"
SEED = 1111
B = 4
TEXT_LEN, VISION_FRAMES, AUDIO_FRAMES = 12, 9, 10
VISION_DIM, AUDIO_DIM = 7, 5
TOKENS = 8  # hard-coded in the reference's models/lnln.py ([:, :8])
DIM = 128  # hard-coded in the reference's models/lnln.py (h_hyper, h_p)
BERT = dict(
  vocab_size=160,
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=2,
  intermediate_size=64,
  max_position_embeddings=64,
  type_vocab_size=2,
  hidden_dropout_prob=0.0,
  attention_probs_dropout_prob=0.0,
)
HEADS, DEPTH, FUSION_DEPTH, HYPER_LAYERS, HYPER_HEADS = 1, 1, 2, 2, 8
LOSS_WEIGHTS = dict(alpha=0.9, beta=0.8, gamma=0.1, sigma=1.0)
NOISE_STD = 0.2
# Per-sample nominal missing rates (language, audio, vision); sample 0 keeps its text complete.
MISSING_RATES = {"l": (0.0, 0.35, 0.7, 0.9), "a": (0.5, 0.0, 0.3, 0.8), "v": (0.2, 0.6, 0.0, 0.9)}
TEXT_LENGTHS, AUDIO_LENGTHS, VISION_LENGTHS = (12, 9, 5, 12), (10, 7, 4, 10), (9, 5, 9, 3)


def reference_args(bert_dir: pathlib.Path) -> dict:
  """The reference's config dict (configs/train_mosi.yaml layout) at the fixture's sizes."""

  def transformer(length: int, token_length: int | None = None, depth: int = DEPTH) -> dict:
    out = dict(input_length=length, depth=depth, heads=HEADS, input_dim=DIM, hidden_dim=DIM)
    if token_length is not None:
      out["token_length"] = token_length
    return out

  return {
    "base": dict(seed=SEED, **LOSS_WEIGHTS),
    "model": {
      "feature_extractor": dict(
        bert_pretrained=str(bert_dir),
        input_length=[TEXT_LEN, VISION_FRAMES, AUDIO_FRAMES],
        token_length=[TOKENS] * 3,
        heads=HEADS,
        input_dims=[BERT["hidden_size"], VISION_DIM, AUDIO_DIM],
        hidden_dims=[DIM] * 3,
        depth=DEPTH,
      ),
      "dmc": {
        "proxy_dominant_feature_generator": transformer(3 * TOKENS, TOKENS),
        "effectiveness_discriminator": dict(input_dim=DIM, hidden_dim=64, out_dim=2),
        "completeness_check": transformer(TOKENS, 1),
      },
      "reconstructor": transformer(TOKENS),
      "dmml": {
        "language_encoder": transformer(TOKENS, TOKENS),
        "hyper_modality_learning": dict(
          depth=HYPER_LAYERS, heads=HYPER_HEADS, input_dim=DIM, hidden_dim=DIM
        ),
        "fuison_transformer": dict(
          source_length=TOKENS,
          tgt_length=TOKENS,
          depth=FUSION_DEPTH,
          heads=HEADS,
          input_dim=DIM,
          hidden_dim=DIM,
        ),
        "regression": dict(input_dim=DIM, out_dim=1),
      },
    },
  }


def write_tiny_bert(directory: pathlib.Path) -> None:
  """A random tiny BERT (with its pooler, as bert-base has) and a vocabulary with [PAD] = 0,
  [UNK] = 100, [CLS] = 101, [SEP] = 102, [MASK] = 103, loadable by `from_pretrained(directory)`."""
  config = transformers.BertConfig(**BERT)
  transformers.BertModel(config).save_pretrained(directory)
  vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  vocab += [f"tok{i}" for i in range(BERT["vocab_size"] - len(vocab))]
  (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")


def perturb_constants(model: nn.Module, generator: torch.Generator) -> list[str]:
  """Adds N(0, NOISE_STD²) noise to every constant parameter and to every constant row of a
  matrix (BERT's zero padding embedding); returns the perturbed names. Fails if any parameter or
  row is still constant afterwards."""
  perturbed = []
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = NOISE_STD * torch.randn(p.shape, generator=generator)
      if p.numel() > 1 and bool((p == p.reshape(-1)[0]).all()):
        p.add_(noise)
        perturbed.append(name)
      elif p.dim() == 2:
        rows = (p == p[:, :1]).all(dim=1)
        if bool(rows.any()):
          p[rows] += noise[rows]
          perturbed.append(f"{name}[rows {rows.nonzero().flatten().tolist()}]")
    for name, p in model.named_parameters():
      if p.numel() > 1 and bool((p == p.reshape(-1)[0]).all()):
        raise AssertionError(f"{name} is still constant")
      if p.dim() == 2 and bool((p == p[:, :1]).all(dim=1).any()):
        raise AssertionError(f"{name} still has a constant row")
  return perturbed


def make_inputs(rng: np.random.Generator, generate_m) -> dict[str, np.ndarray]:
  """Complete inputs, and masked ones from the reference's own `MMDataset.generate_m`."""
  text = np.zeros((B, 3, TEXT_LEN), np.float32)  # the reference's dataset holds text as float32
  for i, n in enumerate(TEXT_LENGTHS):
    text[i, 0, :n] = rng.integers(104, BERT["vocab_size"], n)
    text[i, 0, 0], text[i, 0, n - 1] = 101, 102
    text[i, 1, :n] = 1
  text[1, 2, 4 : TEXT_LENGTHS[1]] = 1  # a second segment

  def frames(steps: int, dim: int, lengths: tuple[int, ...]) -> np.ndarray:
    x = rng.normal(size=(B, steps, dim)).astype(np.float32)
    for i, n in enumerate(lengths):
      x[i, n:] = 0.0
    return x

  audio = frames(AUDIO_FRAMES, AUDIO_DIM, AUDIO_LENGTHS)
  vision = frames(VISION_FRAMES, VISION_DIM, VISION_LENGTHS)
  rates = {m: np.asarray(r, np.float64).reshape(B, 1) for m, r in MISSING_RATES.items()}
  # As MMDataset.__getitem__ at index 0 of a training epoch (dataset.py).
  ids_m = generate_m(None, text[:, 0, :], text[:, 1, :], None, rates["l"], SEED, mode="text")[0]
  text_m = np.concatenate([ids_m[:, None], text[:, 1:2], text[:, 2:3]], axis=1).astype(np.float32)
  audio_m = generate_m(
    None, audio, None, np.asarray(AUDIO_LENGTHS), rates["a"], SEED, mode="audio"
  )[0].astype(np.float32)
  vision_m = generate_m(
    None, vision, None, np.asarray(VISION_LENGTHS), rates["v"], SEED, mode="vision"
  )[0].astype(np.float32)
  labels = rng.uniform(-3.0, 3.0, size=B).astype(np.float32)
  return {
    "text": text,
    "text_m": text_m,
    "audio": audio,
    "audio_m": audio_m,
    "vision": vision,
    "vision_m": vision_m,
    "labels": labels,
    **{f"missing_rate_{m}": r[:, 0].astype(np.float32) for m, r in rates.items()},
  }


class Recorder:
  """Records module inputs/outputs through forward hooks (each call appended, in call order)."""

  def __init__(self):
    self.calls: dict[str, list] = {}
    self.handles = []

  def output(self, key: str, module: nn.Module) -> None:
    self.handles.append(
      module.register_forward_hook(lambda _m, _i, out: self.calls.setdefault(key, []).append(out))
    )

  def first_input(self, key: str, module: nn.Module) -> None:
    self.handles.append(
      module.register_forward_hook(
        lambda _m, inputs, _o: self.calls.setdefault(key, []).append(inputs[0])
      )
    )

  def remove(self) -> None:
    for h in self.handles:
      h.remove()


def _np(t: torch.Tensor) -> np.ndarray:
  return t.detach().cpu().numpy().astype(np.float32)


def lnln_commit(ref: pathlib.Path, given: str | None) -> str:
  """The reference commit: `--commit`, else `git rev-parse HEAD` in `--ref`."""
  if given:
    return given
  try:
    return subprocess.run(
      ["git", "-C", str(ref), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError) as e:
    raise SystemExit(f"{ref} is not a git checkout; pass --commit (e.g. {LNLN_COMMIT})") from e


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ref", type=pathlib.Path, required=True, help="the LNLN repository")
  parser.add_argument("--commit", default=None, help="its commit, if --ref is not a git checkout")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("tests/fixtures"))
  opts = parser.parse_args()
  commit = lnln_commit(opts.ref, opts.commit)
  sys.path.insert(0, str(opts.ref.resolve()))
  from core.dataset import MMDataset  # the authors' modules, unchanged
  from core.losses import MultimodalLoss
  from models.lnln import build_model

  torch.manual_seed(SEED)
  generator = torch.Generator().manual_seed(SEED + 1)
  with tempfile.TemporaryDirectory() as tmp:
    write_tiny_bert(pathlib.Path(tmp))
    args = reference_args(pathlib.Path(tmp))
    model = build_model(args)
  perturbed = perturb_constants(model, generator)
  inputs = make_inputs(np.random.default_rng(SEED), MMDataset.generate_m)
  t = {k: torch.from_numpy(v) for k, v in inputs.items()}

  rec = Recorder()
  rec.output("bert", model.bertmodel)
  for m in "lav":
    rec.output(f"proj_{m}", getattr(model, f"proj_{m}"))
  rec.output("proxy", model.proxy_dominate_modality_generator)
  rec.first_input("h_d", model.dmml[0])
  rec.output("language_encoder", model.dmml[0])
  rec.output("h_hyper", model.dmml[1])
  rec.output("fusion", model.dmml[2])

  # train.py train(): model.train(), labels, forward, MultimodalLoss, backward.
  model.train()
  complete_input = (t["vision"], t["audio"], t["text"])
  incomplete_input = (t["vision_m"], t["audio_m"], t["text_m"])
  sentiment_labels = t["labels"].reshape(B, 1)
  completeness_labels = 1.0 - t["missing_rate_l"].reshape(B, 1)
  effectiveness_labels = torch.cat(
    [torch.ones(len(sentiment_labels) * 8), torch.zeros(len(sentiment_labels) * 8)]
  ).long()
  label = {
    "sentiment_labels": sentiment_labels,
    "completeness_labels": completeness_labels,
    "effectiveness_labels": effectiveness_labels,
  }
  out = model(complete_input, incomplete_input)
  loss = MultimodalLoss(args)(out, label)
  loss["loss"].backward()
  rec.remove()
  # Every parameter's gradient; those the loss does not reach (BERT's pooler) have none.
  grads = {f"grad/{n}": _np(p.grad) for n, p in model.named_parameters() if p.grad is not None}
  no_grad = [n for n, p in model.named_parameters() if p.grad is None]

  # train.py evaluate(): model.eval(), no complete inputs, no_grad.
  model.eval()
  with torch.no_grad():
    out_eval = model((None, None, None), incomplete_input)

  c = rec.calls
  ints = lambda x: np.asarray(x, np.int32)
  arrays = {
    # inputs, in the canonical msa_jax layout: text_bert (B, 3, L) int32
    "text_bert": inputs["text"].astype(np.int32),
    "text_bert_m": inputs["text_m"].astype(np.int32),
    **{
      k: inputs[k]
      for k in (
        "audio",
        "audio_m",
        "vision",
        "vision_m",
        "labels",
        "missing_rate_l",
        "missing_rate_a",
        "missing_rate_v",
      )
    },
    "text_lengths": ints(TEXT_LENGTHS),
    "audio_lengths": ints(AUDIO_LENGTHS),
    "vision_lengths": ints(VISION_LENGTHS),
    # sizes
    "bert_config": np.asarray(json.dumps(BERT)),
    "text_frames": ints(TEXT_LEN),
    "audio_frames": ints(AUDIO_FRAMES),
    "vision_frames": ints(VISION_FRAMES),
    "audio_dim": ints(AUDIO_DIM),
    "vision_dim": ints(VISION_DIM),
    "dim": ints(DIM),
    "token_len": ints(TOKENS),
    "heads": ints(HEADS),
    "dim_head": ints(64),
    "mlp_dim": ints(DIM),
    "depth": ints(DEPTH),
    "fusion_depth": ints(FUSION_DEPTH),
    "num_hyper_layers": ints(HYPER_LAYERS),
    "hyper_heads": ints(HYPER_HEADS),
    "hyper_dim_head": ints(DIM // HYPER_HEADS),
    "loss_weights": np.asarray(json.dumps(LOSS_WEIGHTS)),
    # train-mode outputs (model.train(), complete + masked inputs)
    "train/pred": _np(out["sentiment_preds"]),
    "train/w": _np(out["w"]),
    "train/disc_logits": _np(out["effectiveness_discriminator_out"]),
    "train/rec": _np(out["rec_feats"]),
    "train/full": _np(out["complete_feats"]),
    # intermediate features of the masked branch (first call of each module)
    "train/bert_m": _np(c["bert"][0]),
    "train/bert_full": _np(c["bert"][1]),
    "train/h_l": _np(c["proj_l"][0][:, :8]),
    "train/h_a": _np(c["proj_a"][0][:, :8]),
    "train/h_v": _np(c["proj_v"][0][:, :8]),
    "train/h_p": _np(c["proxy"][0][:, :8]),
    "train/h_d": _np(c["h_d"][0]),
    **{f"train/language_hidden_{i}": _np(h) for i, h in enumerate(c["language_encoder"][0])},
    "train/h_hyper": _np(c["h_hyper"][0]),
    "train/fusion": _np(c["fusion"][0]),
    # loss terms (MultimodalLoss), total, and gradients of the total
    **{f"loss/{k}": np.float32(v.item()) for k, v in loss.items()},
    **grads,
    "no_grad": np.asarray(no_grad),
    # eval-mode outputs (model.eval(), masked inputs only, no_grad)
    "eval/pred": _np(out_eval["sentiment_preds"]),
    "eval/w": _np(out_eval["w"]),
    # provenance
    "torch_version": np.asarray(torch.__version__),
    "transformers_version": np.asarray(transformers.__version__),
    "lnln_commit": np.asarray(commit),
    "perturbed": np.asarray(perturbed),
  }
  state_dict = {k: v.detach().contiguous().to(torch.float32) for k, v in model.state_dict().items()}
  opts.out.mkdir(parents=True, exist_ok=True)
  safetensors.torch.save_file(
    state_dict,
    opts.out / "lnln_reference.safetensors",
    metadata={
      "lnln_commit": commit,
      "torch": torch.__version__,
      "transformers": transformers.__version__,
    },
  )
  np.savez_compressed(opts.out / "lnln_reference_io.npz", **arrays)
  print(
    f"{len(state_dict)} tensors, {sum(v.numel() for v in state_dict.values())} values; "
    f"{len(perturbed)} perturbed; loss " + ", ".join(f"{k} {v.item():.6f}" for k, v in loss.items())
  )


if __name__ == "__main__":
  main()
