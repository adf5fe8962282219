"""A one-layer unidirectional LSTM with PyTorch conventions over packed (variable-length) sequences.

Used by GEAR's audio and vision extractors (docs/methods.md §5). Parameters keep PyTorch's `nn.LSTM`
layout and names (without the `_l0` suffix), so a PyTorch state dict converts by copying tensors:

  weight_ih (4H, D), weight_hh (4H, H), bias_ih (4H,), bias_hh (4H,)

with gate blocks in the order input, forget, cell (g), output, and every tensor initialised
U(-1/sqrt(H), 1/sqrt(H)) as PyTorch does.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from msa_jax.models.layers import torch_uniform_init


def lstm_cell(
  weight_hh: jax.Array, carry: tuple[jax.Array, jax.Array], x_proj: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """One LSTM step in PyTorch's equations (gate order i, f, g, o).

  Args:
    weight_hh: (4H, H) recurrent weight.
    carry: (h, c), each (B, H).
    x_proj: (B, 4H) = x_t W_ih^T + b_ih + b_hh (input projection and both biases, precomputed).

  Returns:
    The new (h, c), each (B, H).
  """
  h, c = carry
  gates = x_proj + h @ weight_hh.T
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return h, c


class TorchLSTM(nn.Module):
  """One-layer unidirectional LSTM returning each sample's final hidden state (docs/methods.md §5).

  `TorchLSTM(hidden_size)(x, lengths)` maps x (B, T, D) and lengths (B,) int to h (B, H), the hidden
  state after step `lengths[b] - 1` of sample b (what `pack_padded_sequence` + `nn.LSTM` returns as
  `h_n`); frames at positions >= length never influence the result (nor its gradients; they are
  zeroed before use, so even non-finite padding is harmless). A length of 0 gives the zero state.
  The initial state is zero. Time is scanned with `jax.lax.scan`.
  """

  hidden_size: int

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    if x.ndim != 3:
      raise ValueError(f"TorchLSTM: input has shape {x.shape}, expected (B, T, D)")
    batch, steps, dim = x.shape
    if lengths.shape != (batch,):
      raise ValueError(f"TorchLSTM: lengths has shape {lengths.shape}, expected ({batch},)")
    hid = self.hidden_size
    init = torch_uniform_init(hid)
    weight_ih = self.param("weight_ih", init, (4 * hid, dim))
    weight_hh = self.param("weight_hh", init, (4 * hid, hid))
    bias_ih = self.param("bias_ih", init, (4 * hid,))
    bias_hh = self.param("bias_hh", init, (4 * hid,))

    valid = jnp.arange(steps)[None, :] < lengths[:, None]
    x = jnp.where(valid[..., None], x, 0.0)
    x_proj = x @ weight_ih.T + (bias_ih + bias_hh)

    def step(carry, inputs):
      x_t, valid_t = inputs
      new = lstm_cell(weight_hh, carry, x_t)
      keep = valid_t[:, None]
      return tuple(jnp.where(keep, n, o) for n, o in zip(new, carry)), None

    zeros = jnp.zeros((batch, hid), x_proj.dtype)
    (h, _), _ = jax.lax.scan(
      step, (zeros, zeros), (jnp.swapaxes(x_proj, 0, 1), jnp.swapaxes(valid, 0, 1))
    )
    return h
