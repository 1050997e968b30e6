"""Sparse kernels for training top-k dictionaries: the same math as the dense
`CrossCoder.pre_activations` / `decode_scaled`, restricted to the kept (token, latent) entries.

With k of F latents kept per token, only the kept entries carry gradient, so the dense backward
of the encoder (x^T grad_pre) and the dense decoder (f W_dec, and its two backward products) do
F/k times more work than needed. Here the encoder pass is dense but graph-free; the kept values
are read from it by `KeptPreActivations`, whose backward is a sparse product; the decoder is
`SparseDecode`, a CSR product whose backward samples grad_out W_dec^T at the kept entries only
(`torch.sparse.sampled_addmm`). The test suite checks values and gradients against the dense
formulas.

Layouts: x [batch, S*d] (sources flattened), W_enc [S*d, F], W_dec [F, S*d]; kept entries as
(rows, cols) sorted by row (what `Tensor.nonzero` returns), with values [nnz].
"""

import warnings

import torch
from jaxtyping import Float, Int
from torch import Tensor

# The kernels build their sparse tensors from indices they just computed (valid by construction).
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


def _coo(rows: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape, check_invariants=False)


class KeptPreActivations(torch.autograd.Function):
    """values_n = pre[rows_n, cols_n] with pre = x W_enc + b_enc precomputed without a graph
    (ReLU(pre) may be passed instead: the caller applies ReLU to the values anyway); gradients
    flow to W_enc and b_enc through the kept entries only."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, pre, rows, cols):  # type: ignore[override]
        ctx.save_for_backward(x, rows, cols)
        ctx.n_latents = W_enc.shape[1]
        return pre[rows, cols]

    @staticmethod
    def backward(ctx, grad_values):  # type: ignore[override]
        x, rows, cols = ctx.saved_tensors
        n_latents = ctx.n_latents
        # dL/dW_enc[:, j] = sum_{n: cols_n = j} grad_n x[rows_n]  ->  (G^T x)^T, G sparse [B, F]
        grad_t = torch.sparse.mm(_coo(cols, rows, grad_values, (n_latents, x.shape[0])), x)
        grad_b = torch.zeros(n_latents, dtype=grad_values.dtype, device=grad_values.device)
        grad_b.index_add_(0, cols, grad_values)
        return None, grad_t.t(), grad_b, None, None, None


class SparseDecode(torch.autograd.Function):
    """out = F W_dec for the sparse code F[rows_n, cols_n] = values_n, F of shape [batch, F]."""

    @staticmethod
    def forward(ctx, rows, cols, values, W_dec, batch):  # type: ignore[override]
        crow = torch.searchsorted(rows, torch.arange(batch + 1, device=rows.device))
        code = torch.sparse_csr_tensor(
            crow, cols, values, (batch, W_dec.shape[0]), check_invariants=False
        )
        ctx.save_for_backward(rows, cols, crow, values, W_dec)
        return torch.sparse.mm(code, W_dec)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        rows, cols, crow, values, W_dec = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        batch = grad_out.shape[0]
        # dL/dvalues_n = grad_out[rows_n] . W_dec[cols_n]: (grad_out W_dec^T) sampled at the code
        pattern = torch.sparse_csr_tensor(
            crow, cols, torch.zeros_like(values), (batch, W_dec.shape[0])
        )
        grad_values = torch.sparse.sampled_addmm(pattern, grad_out, W_dec.t(), beta=0.0).values()
        # dL/dW_dec = F^T grad_out
        grad_W = torch.sparse.mm(_coo(cols, rows, values, (W_dec.shape[0], batch)), grad_out)
        return None, None, grad_values, grad_W, None


def kept_pre_activations(
    x: Float[Tensor, "batch sd"],
    W_enc: Float[Tensor, "sd F"],
    b_enc: Float[Tensor, " F"],
    pre: Float[Tensor, "batch F"],
    rows: Int[Tensor, " nnz"],
    cols: Int[Tensor, " nnz"],
) -> Float[Tensor, " nnz"]:
    return KeptPreActivations.apply(x, W_enc, b_enc, pre, rows, cols)


def sparse_decode(
    rows: Int[Tensor, " nnz"],
    cols: Int[Tensor, " nnz"],
    values: Float[Tensor, " nnz"],
    W_dec: Float[Tensor, "F sd"],
    batch: int,
) -> Float[Tensor, "batch sd"]:
    return SparseDecode.apply(rows, cols, values, W_dec, batch)
