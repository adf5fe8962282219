"""LNLN's building blocks in Flax linen (docs/methods.md §4 "Building blocks").

Every block is pre-norm, has no dropout, and uses PyTorch's default initialisation (Dense kernel
and bias uniform in ±1/sqrt(fan_in), LayerNorm scale 1 / bias 0, eps 1e-5), and mirrors the authors'
PyTorch modules one to one, so that a converted checkpoint maps leaf by leaf (Dense kernels
transposed). Parameter names follow the reference where it has names (`to_q`, `to_out`,
`pos_embedding`, `extra_token`, ...).

Performance options, none of which changes a parameter or (beyond float rounding) a result:
- `dtype`: the computation dtype of the linears and attention matmuls (mixed precision: parameters
  stay float32, inputs and kernels are cast, attention scores and softmax run in float32, LayerNorm
  and the residual stream stay float32). None (the default) computes everything in float32.
- `attention_chunk`: blocked attention (`blocked_attention`): the samples are processed
  `attention_chunk` at a time in a loop whose body (q/k/v projections, attention, output
  projection) is rematerialised, so the (H, Nq, Nk) scores and probabilities and the 4×-wide q, k,
  v exist one block at a time — in the forward and in the backward pass — instead of for the
  whole batch (528 MB of scores per layer for LNLN's 508 vision positions at batch 64, and 3 × 66
  MB of q, k, v), and stay in cache. Used where attention runs over at least `CHUNK_MIN_KEYS`
  keys. 0: plain attention.
- `keep` (TokenTransformer): only the first `keep` output positions are needed, so the last layer
  computes queries, the residual and the feed-forward for those positions only (its keys and values
  still cover every position) — exact, as attention is row-wise in the queries.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]
DType = Any

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
# Blocked attention is used where attention runs over at least this many keys (LNLN's audio and
# vision TokenTransformers: 383 / 508 positions; not its 8- to 58-position ones).
CHUNK_MIN_KEYS = 128


def compute_dtype(name: str | None) -> DType | None:
  """A config's dtype name -> the computation dtype of the mixed-precision layers.

  "float32" (or None) gives None: no casts at all, so float32 results are exactly those of the
  plain modules; "bfloat16" / "float16" give that dtype (parameters stay float32).
  """
  if name is None or name == "float32":
    return None
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"dtype={name!r}: expected one of {COMPUTE_DTYPES}")
  return jnp.dtype(name)


def torch_uniform_init(fan_in: int) -> Initializer:
  """PyTorch's `nn.Linear` default init for kernel and bias: U(−1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def dense(
  x: jax.Array, kernel: jax.Array, bias: jax.Array | None, dtype: DType | None = None
) -> jax.Array:
  """x @ kernel (+ bias), in `dtype` when given (inputs and parameters cast to it)."""
  if dtype is not None:
    x, kernel = x.astype(dtype), kernel.astype(dtype)
  y = jnp.matmul(x, kernel)
  if bias is not None:
    y = y + (bias if dtype is None else bias.astype(dtype))
  return y


class DenseParams(nn.Module):
  """The parameters of a `TorchDense` — same names, shapes and initialisation — returned instead
  of applied: `DenseParams(features, use_bias, name=n)(fan_in)` -> (kernel, bias or None)."""

  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, fan_in: int) -> tuple[jax.Array, jax.Array | None]:
    kernel = self.param("kernel", torch_uniform_init(fan_in), (fan_in, self.features))
    bias = (
      self.param("bias", torch_uniform_init(fan_in), (self.features,)) if self.use_bias else None
    )
    return kernel, bias


class TorchDense(nn.Module):
  """A linear layer (B, ..., D_in) -> (B, ..., features) initialised like PyTorch's `nn.Linear`.

  Parameters are `kernel` (D_in, features) and, with `use_bias`, `bias` (features,), as in
  `nn.Dense`; both are drawn from U(±1/sqrt(D_in)) in float32. With `dtype`, the input and the
  parameters are cast to it and the output has that dtype.
  """

  features: int
  use_bias: bool = True
  dtype: DType | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    kernel = self.param("kernel", torch_uniform_init(fan_in), (fan_in, self.features))
    bias = (
      self.param("bias", torch_uniform_init(fan_in), (self.features,)) if self.use_bias else None
    )
    return dense(x, kernel, bias, self.dtype)


def torch_dense(
  features: int, use_bias: bool = True, name: str | None = None, dtype: DType | None = None
) -> TorchDense:
  """A `TorchDense` layer (PyTorch-default init); see `TorchDense`."""
  return TorchDense(features, use_bias=use_bias, dtype=dtype, name=name)


class LayerNorm(nn.LayerNorm):
  """`nn.LayerNorm` with PyTorch's defaults: eps 1e-5 and the two-pass variance
  (docs/methods.md §4)."""

  epsilon: float = 1e-5
  use_fast_variance: bool = False


def _split_heads(x: jax.Array, heads: int) -> jax.Array:
  """(B, N, H·Dh) -> (B, H, N, Dh)."""
  b, n, inner = x.shape
  return x.reshape(b, n, heads, inner // heads).transpose(0, 2, 1, 3)


def _merge_heads(x: jax.Array) -> jax.Array:
  """(B, H, N, Dh) -> (B, N, H·Dh)."""
  b, h, n, dh = x.shape
  return x.transpose(0, 2, 1, 3).reshape(b, n, h * dh)


def _attend_heads(q: jax.Array, k: jax.Array, v: jax.Array, heads: int) -> jax.Array:
  """softmax(q kᵀ / sqrt(Dh)) v per head: q (B, Nq, H·Dh), k, v (B, Nk, H·Dh) -> (B, Nq, H·Dh).

  Computed as (e v) / rowsum(e) with e = exp(s − max s), s = (q / sqrt(Dh)) kᵀ: the same function
  as `jax.nn.softmax(s) v` (which also shifts by a gradient-stopped max), with the normalisation
  applied to the (Nq, Dh) output instead of the (Nq, Nk) probabilities and the scale to q instead
  of the scores — both O(N·Dh) instead of O(N²) per head, and a backward pass with two fewer
  (Nq, Nk) element-wise passes (measured 17–23% faster for LNLN's 508-frame attention, forward +
  backward). Equal to the softmax form up to float rounding; the scaling is exact when Dh is a
  power of 4 (scale a power of two: LNLN's 64 and 16). Lower-precision inputs get float32 scores,
  exponentials, sums and output accumulation (e is cast to v's dtype for the second matmul).
  """
  q, k, v = (_split_heads(t, heads) for t in (q, k, v))
  q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
  dots = jnp.einsum("bhid,bhjd->bhij", q, k, preferred_element_type=jnp.float32)
  shift = jax.lax.stop_gradient(jnp.max(dots, axis=-1, keepdims=True))
  e = jnp.exp(dots - shift)
  total = jnp.sum(e, axis=-1, keepdims=True)
  out = jnp.einsum("bhij,bhjd->bhid", e.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return _merge_heads((out / total).astype(v.dtype))


def multi_head_attend(q: jax.Array, k: jax.Array, v: jax.Array, heads: int) -> jax.Array:
  """softmax(q kᵀ / sqrt(Dh)) v per head, no mask.

  q (B, Nq, H·Dh), k and v (B, Nk, H·Dh) -> (B, Nq, H·Dh).
  """
  return _attend_heads(q, k, v, heads)


AttentionWeights = tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]


def attention(
  q_in: jax.Array,
  k_in: jax.Array,
  v_in: jax.Array,
  weights: AttentionWeights,
  heads: int,
  dtype: DType | None = None,
) -> jax.Array:
  """`Attention`'s computation from its inputs and weights (w_q, w_k, w_v, w_out, b_out):
  q_in (B, Nq, dim), k_in, v_in (B, Nk, dim) -> (B, Nq, dim_out)."""
  w_q, w_k, w_v, w_out, b_out = weights
  q, k, v = (
    dense(q_in, w_q, None, dtype),
    dense(k_in, w_k, None, dtype),
    dense(v_in, w_v, None, dtype),
  )
  return dense(multi_head_attend(q, k, v, heads), w_out, b_out, dtype)


def blocked_attention(
  q_in: jax.Array,
  k_in: jax.Array,
  v_in: jax.Array,
  weights: AttentionWeights,
  heads: int,
  chunk: int,
  dtype: DType | None = None,
) -> jax.Array:
  """`attention` computed `chunk` samples at a time and rematerialised (blocked attention).

  A `lax.map` over blocks of samples whose body — the q/k/v projections, the attention and the
  output projection — is `jax.checkpoint`-ed: the forward and the backward pass keep one block's
  (chunk, H, Nq, Nk) scores and probabilities and its (chunk, N, H·Dh) q, k, v alive at a time
  (the backward recomputes them block by block), and the only residuals are the (B, N, dim)
  inputs. (Saving the attention output as well, to spare the backward one matmul, measured slower
  on the 2-core CPU.) The weights' gradients are summed over the blocks. The batch is zero-padded
  to a multiple of `chunk`. Same result as `attention` up to float rounding, gradients included.
  """
  b = q_in.shape[0]
  pad = (-b) % chunk
  inputs = (q_in, k_in, v_in)
  if pad:
    inputs = tuple(jnp.pad(t, ((0, pad), (0, 0), (0, 0))) for t in inputs)
  blocks = tuple(t.reshape(-1, chunk, *t.shape[1:]) for t in inputs)
  body = jax.checkpoint(lambda block: attention(*block, weights, heads, dtype))
  out = jax.lax.map(body, blocks)
  return out.reshape(-1, *out.shape[2:])[:b]


class Attention(nn.Module):
  """Multi-head attention with separate query/key/value inputs (docs/methods.md §4 `Attention`).

  q, k, v are bias-free linears dim -> heads·dim_head; the output linear heads·dim_head -> dim has
  a bias. No padding mask. q_in (B, Nq, dim), k_in and v_in (B, Nk, dim) -> (B, Nq, dim).
  `dtype` and `chunk` (`blocked_attention` where there are at least `CHUNK_MIN_KEYS` keys): see
  the module docstring. The parameters are the same either way.
  """

  dim: int
  heads: int = 8
  dim_head: int = 64
  dtype: DType | None = None
  chunk: int = 0

  @nn.compact
  def __call__(self, q_in: jax.Array, k_in: jax.Array, v_in: jax.Array) -> jax.Array:
    inner = self.heads * self.dim_head
    if self.chunk <= 0 or k_in.shape[1] < CHUNK_MIN_KEYS:
      q = torch_dense(inner, use_bias=False, name="to_q", dtype=self.dtype)(q_in)
      k = torch_dense(inner, use_bias=False, name="to_k", dtype=self.dtype)(k_in)
      v = torch_dense(inner, use_bias=False, name="to_v", dtype=self.dtype)(v_in)
      attended = multi_head_attend(q, k, v, self.heads)
      return torch_dense(self.dim, name="to_out", dtype=self.dtype)(attended)
    w_q, _ = DenseParams(inner, use_bias=False, name="to_q")(q_in.shape[-1])
    w_k, _ = DenseParams(inner, use_bias=False, name="to_k")(k_in.shape[-1])
    w_v, _ = DenseParams(inner, use_bias=False, name="to_v")(v_in.shape[-1])
    w_out, b_out = DenseParams(self.dim, name="to_out")(inner)
    return blocked_attention(
      q_in, k_in, v_in, (w_q, w_k, w_v, w_out, b_out), self.heads, self.chunk, self.dtype
    )


class FeedForward(nn.Module):
  """Linear dim -> hidden, exact (erf) GELU, linear hidden -> dim: (B, N, dim) -> (B, N, dim)."""

  dim: int
  hidden: int
  dtype: DType | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = torch_dense(self.hidden, name="dense_in", dtype=self.dtype)(x)
    x = jax.nn.gelu(x, approximate=False)
    return torch_dense(self.dim, name="dense_out", dtype=self.dtype)(x)


class EncoderLayer(nn.Module):
  """One pre-norm transformer layer with three attention LayerNorms (docs/methods.md §4
  `EncoderLayer`).

  `x = Attention(LN_q(x), LN_k(c), LN_v(c)) + x; x = FF(LN(x)) + x` where the context c is x itself
  (self-attention) or, for the CrossTransformer, the source sequence.
  x (B, N, dim), context (B, M, dim) or None -> (B, N, dim). The sub-layer outputs are added to the
  float32 residual stream, so the output is float32 whatever `dtype` computes the linears.
  """

  dim: int
  heads: int = 8
  dim_head: int = 64
  mlp_dim: int = 128
  dtype: DType | None = None
  attention_chunk: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
    context = x if context is None else context
    attn = Attention(
      self.dim, self.heads, self.dim_head, self.dtype, self.attention_chunk, name="attn"
    )
    x = _residual(
      attn(
        LayerNorm(name="norm_q")(x),
        LayerNorm(name="norm_k")(context),
        LayerNorm(name="norm_v")(context),
      ),
      x,
    )
    ff = FeedForward(self.dim, self.mlp_dim, self.dtype, name="ff")
    return _residual(ff(LayerNorm(name="norm_ff")(x)), x)


def _residual(update: jax.Array, x: jax.Array) -> jax.Array:
  """update + x in x's dtype (the float32 residual stream under mixed precision)."""
  return update.astype(x.dtype) + x if update.dtype != x.dtype else update + x


def _check_input(module: str, x: jax.Array, max_frames: int, dim: int) -> None:
  if x.ndim != 3 or x.shape[-1] != dim:
    raise ValueError(f"{module}: input shape {x.shape}, expected (B, N, {dim})")
  if x.shape[1] > max_frames:
    raise ValueError(
      f"{module}: input has {x.shape[1]} frames, more than its num_frames={max_frames}"
    )


class TokenTransformer(nn.Module):
  """Learned extra tokens + position embedding + `depth` EncoderLayers (docs/methods.md §4
  `TokenTransformer`).

  If `token_len` is set, `token_len` learned tokens (init zeros) are prepended. A learned position
  embedding (init N(0, 1)) of length num_frames + token_len is added (its first N + token_len rows
  when the input has N ≤ num_frames frames). No final norm.
  x (B, N, dim) -> (B, token_len + N, dim), or with `save_hidden` the list of depth + 1 such tensors
  [after the position embedding, after layer 1, ...]. With `keep`, only the first `keep` output
  positions are computed by the last layer (B, keep, dim): they equal the first `keep` positions of
  the full output (not with `save_hidden`). `dtype`, `attention_chunk`: see the module docstring.
  """

  num_frames: int
  token_len: int | None
  dim: int = 128
  depth: int = 2
  heads: int = 8
  dim_head: int = 64
  mlp_dim: int = 128
  save_hidden: bool = False
  keep: int | None = None
  dtype: DType | None = None
  attention_chunk: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array | list[jax.Array]:
    if self.keep is not None and self.save_hidden:
      raise ValueError(f"TokenTransformer {self.name}: keep and save_hidden exclude each other")
    _check_input(f"TokenTransformer {self.name}", x, self.num_frames, self.dim)
    extra = self.token_len or 0
    pos = self.param(
      "pos_embedding", nn.initializers.normal(1.0), (1, self.num_frames + extra, self.dim)
    )
    if self.token_len is not None:
      tokens = self.param("extra_token", nn.initializers.zeros, (1, self.token_len, self.dim))
      x = jnp.concatenate([jnp.broadcast_to(tokens, (x.shape[0],) + tokens.shape[1:]), x], axis=1)
    x = x + pos[:, : x.shape[1]]
    hidden = [x]
    for i in range(self.depth):
      block = EncoderLayer(
        self.dim,
        self.heads,
        self.dim_head,
        self.mlp_dim,
        self.dtype,
        self.attention_chunk,
        name=f"layer_{i}",
      )
      if i == self.depth - 1 and self.keep is not None:
        x = block(x[:, : self.keep], x)  # the first `keep` queries over every key
      else:
        x = block(x)
      hidden.append(x)
    return hidden if self.save_hidden else x


class CrossTransformer(nn.Module):
  """Target-attends-to-source transformer used for LNLN's fusion (docs/methods.md §4
  `CrossTransformer`).

  One learned token (init zeros), a single parameter, is prepended to both source and target;
  separate position embeddings (init N(0, 1)) of lengths source_len + 1 and target_len + 1. The
  source is never updated; each layer is
  `t = Attn(LN_q(t), LN_k(s), LN_v(s)) + t; t = FF(LN(t)) + t`.
  source (B, S, dim), target (B, T, dim) -> (B, T + 1, dim).
  """

  source_len: int
  target_len: int
  dim: int = 128
  depth: int = 2
  heads: int = 8
  dim_head: int = 64
  mlp_dim: int = 128
  dtype: DType | None = None

  @nn.compact
  def __call__(self, source: jax.Array, target: jax.Array) -> jax.Array:
    _check_input(f"CrossTransformer {self.name} source", source, self.source_len, self.dim)
    _check_input(f"CrossTransformer {self.name} target", target, self.target_len, self.dim)
    normal = nn.initializers.normal(1.0)
    pos_s = self.param("pos_embedding_s", normal, (1, self.source_len + 1, self.dim))
    pos_t = self.param("pos_embedding_t", normal, (1, self.target_len + 1, self.dim))
    token = self.param("extra_token", nn.initializers.zeros, (1, 1, self.dim))
    token = jnp.broadcast_to(token, (source.shape[0], 1, self.dim))
    s = jnp.concatenate([token, source], axis=1)
    s = s + pos_s[:, : s.shape[1]]
    t = jnp.concatenate([token, target], axis=1)
    t = t + pos_t[:, : t.shape[1]]
    for i in range(self.depth):
      t = EncoderLayer(
        self.dim, self.heads, self.dim_head, self.mlp_dim, self.dtype, name=f"layer_{i}"
      )(t, s)
    return t


class HyperLayer(nn.Module):
  """Language-guided hyper-modality update (docs/methods.md §4 `HyperLayer`, the reference's
  `PreNorm_hyper(HhyperLearningLayer)`).

  The four inputs are LayerNorm-ed (`norm_dom`, `norm_a`, `norm_v`, `norm_hyper`); q = W_q h_dom;
  attention over (W_ka h_a, W_va h_a) plus attention over (W_kv h_v, W_vv h_v), all five projections
  bias-free dim -> heads·dim_head; output = LN(h_hyper) + W_out(attn_a + attn_v), W_out with bias.
  The residual is the *normalised* h_hyper, as in the reference.
  h_dom, h_hyper (B, N, dim), h_a (B, Na, dim), h_v (B, Nv, dim) -> (B, N, dim).
  """

  dim: int = 128
  heads: int = 8
  dim_head: int = 16
  dtype: DType | None = None

  @nn.compact
  def __call__(
    self, h_dom: jax.Array, h_a: jax.Array, h_v: jax.Array, h_hyper: jax.Array
  ) -> jax.Array:
    inner = self.heads * self.dim_head
    h_dom = LayerNorm(name="norm_dom")(h_dom)
    h_a = LayerNorm(name="norm_a")(h_a)
    h_v = LayerNorm(name="norm_v")(h_v)
    h_hyper = LayerNorm(name="norm_hyper")(h_hyper)

    def proj(name: str, x: jax.Array) -> jax.Array:
      return torch_dense(inner, use_bias=False, name=name, dtype=self.dtype)(x)

    q = proj("to_q", h_dom)
    attn_a = multi_head_attend(q, proj("to_k_a", h_a), proj("to_v_a", h_a), self.heads)
    attn_v = multi_head_attend(q, proj("to_k_v", h_v), proj("to_v_v", h_v), self.heads)
    return _residual(
      torch_dense(self.dim, name="to_out", dtype=self.dtype)(attn_a + attn_v), h_hyper
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _grad_reverse(x: jax.Array, alpha: float) -> jax.Array:
  return x


def _grad_reverse_fwd(x: jax.Array, alpha: float) -> tuple[jax.Array, None]:
  return x, None


def _grad_reverse_bwd(alpha: float, _: None, g: jax.Array) -> tuple[jax.Array]:
  return (-alpha * g,)


_grad_reverse.defvjp(_grad_reverse_fwd, _grad_reverse_bwd)


def grad_reverse(x: jax.Array, alpha: float = 1.0) -> jax.Array:
  """Gradient reversal layer (docs/methods.md §4 `GRL`): identity forward, gradient × (−alpha)
  backward.

  `alpha` is a static Python number.
  """
  return _grad_reverse(x, float(alpha))
