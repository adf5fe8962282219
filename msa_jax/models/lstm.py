"""A one-layer unidirectional LSTM with PyTorch conventions over packed (variable-length) sequences.

Used by GEAR's audio and vision extractors (docs/methods.md §5). Parameters (`TorchLSTMWeights`)
keep PyTorch's `nn.LSTM` layout and names (without the `_l0` suffix), so a PyTorch state dict
converts by copying tensors:

  weight_ih (4H, D), weight_hh (4H, H), bias_ih (4H,), bias_hh (4H,)

with gate blocks in the order input, forget, cell (g), output, and every tensor initialised
U(-1/sqrt(H), 1/sqrt(H)) as PyTorch does.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from msa_jax.models.layers import torch_uniform_init

# (weight_ih, weight_hh, bias_ih, bias_hh)
LSTMWeights = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


class TorchLSTMWeights(nn.Module):
  """The parameters of a one-layer unidirectional `nn.LSTM` of `hidden_size` over inputs of width
  `dim`: `TorchLSTMWeights(hidden_size)(dim)` -> (weight_ih, weight_hh, bias_ih, bias_hh), in
  PyTorch's layout and initialisation (module docstring). `lstm_final_states` runs them."""

  hidden_size: int

  @nn.compact
  def __call__(self, dim: int) -> LSTMWeights:
    hid = self.hidden_size
    init = torch_uniform_init(hid)
    return (
      self.param("weight_ih", init, (4 * hid, dim)),
      self.param("weight_hh", init, (4 * hid, hid)),
      self.param("bias_ih", init, (4 * hid,)),
      self.param("bias_hh", init, (4 * hid,)),
    )


def _check_sequence(x: jax.Array, lengths: jax.Array) -> None:
  if x.ndim != 3:
    raise ValueError(f"LSTM: input has shape {x.shape}, expected (B, T, D)")
  if lengths.shape != (x.shape[0],):
    raise ValueError(f"LSTM: lengths has shape {lengths.shape}, expected ({x.shape[0]},)")


def lstm_final_states(runs: list[tuple[LSTMWeights, jax.Array, jax.Array]]) -> list[jax.Array]:
  """The final hidden states of several one-layer LSTMs in PyTorch's equations (gate order i, f,
  g, o), computed in one time loop.

  Each run is (weights, x (B, T, D), lengths (B,) int) and gives h (B, H), the hidden state after
  step `lengths[b] - 1` of sample b (what `pack_padded_sequence` + `nn.LSTM` returns as `h_n`),
  from a zero initial state. Frames at positions >= length never influence the result (nor its
  gradients; they are zeroed before use, so even non-finite padding is harmless); a length of 0
  gives the zero state. The loop (`jax.lax.scan`) runs max T steps; in each, every run takes its
  step (runs of equal weight and input shapes together, as one batched product), a run's steps
  past its own T counting as padding. Independent LSTMs that separate scans would run one after
  another (GEAR's four: audio and vision, robust and bias extractor) thus form one sequential
  chain of max T steps instead of their sum; the values are those of separate scans up to float
  rounding, gradients included.
  """
  for _, x, lengths in runs:
    _check_sequence(x, lengths)
  steps = max(x.shape[1] for _, x, _ in runs)
  groups: dict[tuple, list[int]] = {}
  for i, (w, x, _) in enumerate(runs):
    groups.setdefault((w[0].shape, w[1].shape, x.shape), []).append(i)
  x_proj, valid, w_hh = [], [], []
  for members in groups.values():
    projs, masks = [], []
    for i in members:
      (weight_ih, _, bias_ih, bias_hh), x, lengths = runs[i]
      t = x.shape[1]
      mask = jnp.arange(steps)[None, :] < jnp.minimum(lengths, t)[:, None]  # (B, steps)
      x = jnp.where(mask[:, :t, None], x, 0.0)
      proj = x @ weight_ih.T + (bias_ih + bias_hh)
      projs.append(jnp.pad(proj, ((0, 0), (0, steps - t), (0, 0))))
      masks.append(mask)
    x_proj.append(jnp.stack(projs).transpose(2, 0, 1, 3))  # (steps, G, B, 4H)
    valid.append(jnp.stack(masks).transpose(2, 0, 1))  # (steps, G, B)
    w_hh.append(jnp.stack([runs[i][0][1] for i in members]))  # (G, 4H, H)

  def step(carries, inputs):
    new_carries = []
    for (h, c), w, (x_t, valid_t) in zip(carries, w_hh, inputs):
      gates = x_t + jnp.einsum("gbh,gkh->gbk", h, w)
      i, f, g, o = jnp.split(gates, 4, axis=-1)
      c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
      keep = valid_t[..., None]
      new_carries.append((jnp.where(keep, h_new, h), jnp.where(keep, c_new, c)))
    return new_carries, None

  init = [(jnp.zeros((*p.shape[1:3], w.shape[2]), p.dtype),) * 2 for p, w in zip(x_proj, w_hh)]
  finals, _ = jax.lax.scan(step, init, list(zip(x_proj, valid)))
  out: list[jax.Array] = [None] * len(runs)  # type: ignore[list-item]
  for members, (h, _) in zip(groups.values(), finals):
    for j, i in enumerate(members):
      out[i] = h[j]
  return out
