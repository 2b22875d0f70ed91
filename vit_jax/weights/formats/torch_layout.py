"""PyTorch parameter layouts <-> ours, as NumPy arrays (exact: transposes and reshapes only).

  nn.Linear  weight [out, in], bias [out]     Dense kernel [in, out], bias [out]
  nn.Conv2d  weight [out, in, kh, kw] (NCHW)  Conv kernel [kh, kw, in, out] (NHWC)
  q / k / v  weight [heads*head_dim, D]       kernel [D, heads, head_dim], bias [heads, head_dim]
  attn out   weight [D, heads*head_dim]       kernel [heads, head_dim, D], bias [D]

PyTorch's head order inside the `heads*head_dim` rows is head-major, as our [heads, head_dim].
"""

import numpy as np


def dense(weight, bias):
  """nn.Linear -> (kernel [in, out], bias [out])."""
  return np.asarray(weight).T, np.asarray(bias)


def linear(kernel, bias):
  """Dense kernel [in, out], bias -> nn.Linear (weight [out, in], bias)."""
  return np.ascontiguousarray(np.asarray(kernel).T), np.asarray(bias)


def conv(weight):
  """nn.Conv2d weight [out, in, kh, kw] -> kernel [kh, kw, in, out]."""
  return np.transpose(np.asarray(weight), (2, 3, 1, 0))


def torch_conv(kernel):
  """Conv kernel [kh, kw, in, out] -> nn.Conv2d weight [out, in, kh, kw]."""
  return np.ascontiguousarray(np.transpose(np.asarray(kernel), (3, 2, 0, 1)))


def to_heads(weight, bias, num_heads: int):
  """A q/k/v nn.Linear -> (kernel [D, heads, head_dim], bias [heads, head_dim])."""
  weight = np.asarray(weight)
  out, dim = weight.shape
  if out % num_heads:
    raise ValueError(
      f'an attention projection of {out} outputs does not split into {num_heads} heads.'
    )
  head_dim = out // num_heads
  return (weight.T.reshape(dim, num_heads, head_dim), np.asarray(bias).reshape(num_heads, head_dim))


def from_heads(kernel, bias):
  """kernel [D, heads, head_dim], bias [heads, head_dim] -> nn.Linear (weight, bias)."""
  kernel = np.asarray(kernel)
  return (np.ascontiguousarray(kernel.reshape(kernel.shape[0], -1).T), np.asarray(bias).reshape(-1))


def out_to_heads(weight, bias, num_heads: int):
  """The output nn.Linear -> (kernel [heads, head_dim, D], bias [D])."""
  weight = np.asarray(weight)
  dim, inner = weight.shape
  return weight.T.reshape(num_heads, inner // num_heads, dim), np.asarray(bias)


def out_from_heads(kernel, bias):
  """kernel [heads, head_dim, D], bias [D] -> the output nn.Linear (weight [D, inner], bias)."""
  kernel = np.asarray(kernel)
  return np.ascontiguousarray(kernel.reshape(-1, kernel.shape[-1]).T), np.asarray(bias)
