"""The `@triton.jit` kernels of the fused coordinate MLP (imported lazily: needs triton).

Shapes (N points, IN coordinate dims, F Fourier features, W width, L hidden layers,
OUT outputs; *_PAD is the next power of two >= 16, what `tl.dot` and `tl.arange` need):

    coords x      (N, IN)            fourier_b B     (F, IN)
    first layer   w_in (W, K0), b_in (W)      K0 = IN, or 2F with encoding "fourier"
    hidden layers L-1 blocks of [w (W, W), b (W)], as nn.Linear stores them, back to back
    output layer  w_out (OUT, W), b_out (OUT)
    y             (N, OUT)           z / dz          (L, N, W)  pre-activations / their grads

Three kernels, launched from `fused.py`:

- `mlp_forward_kernel`: one program per BLOCK_M points runs the whole network. The
  encoding is computed in-kernel and feeds the first layer directly; each layer's
  weights are loaded on chip and applied with `tl.dot`; the activations stay in
  registers. Only the pre-activations z (for backward) and y reach global memory.
- `mlp_backward_data_kernel`: one program per BLOCK_M points walks the layers in
  reverse, from dy to every layer's dz, with the activation derivatives recomputed
  from the saved z. It writes dz (and the output layer's d(pre-sigmoid)).
- `mlp_weight_grad_kernel`: dW = dz^T @ input and db = sum(dz) for a group of layers;
  each program reduces a fixed, contiguous chunk of points (a split-K GEMM over N)
  and writes its partial sums to its own slot; the caller sums the slots in a fixed
  order, so gradients are deterministic (no atomics). A layer's input is recomputed,
  never saved: act(z) of the layer below, or the encoding of the coords.
"""

from __future__ import annotations

import triton
import triton.language as tl

TWO_PI = tl.constexpr(6.283185307179586)  # 2 pi, rounded to fp32 where it multiplies


@triton.jit
def _matmul(a, b, acc, PRECISION: tl.constexpr):
    """acc + a @ b with fp32 accumulation; PRECISION: "ieee" | "tf32x3" | "tf32" | "bf16" inputs.

    "bf16-emulated" rounds the inputs to bf16 and multiplies in fp32: the same numbers
    as "bf16", for Triton's interpreter, whose tl.dot multiplies bf16 tensors' raw bits.
    """
    if PRECISION == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc, out_dtype=tl.float32)
    elif PRECISION == "bf16-emulated":
        return tl.dot(_round_to_bf16(a), _round_to_bf16(b), acc, input_precision="ieee", out_dtype=tl.float32)
    else:
        return tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=tl.float32)


@triton.jit
def _round_to_bf16(x):
    """fp32 x rounded to the nearest bf16 (ties to even, as the GPU converts), kept in fp32.

    Done on the bits because the interpreter's fp32 -> bf16 cast truncates.
    """
    bits = x.to(tl.uint32, bitcast=True)
    bits = bits + (0x7FFF + ((bits >> 16) & 1))
    return ((bits >> 16) << 16).to(tl.float32, bitcast=True)


@triton.jit
def _activation(z, w0, ACT: tl.constexpr):
    """relu(z) or sin(w0 * z), elementwise."""
    if ACT == "sine":
        return tl.sin(w0 * z)
    else:
        return tl.maximum(z, 0.0)


@triton.jit
def _fourier_projection(x_ptr, fb_ptr, rows, row_mask, IN: tl.constexpr, F: tl.constexpr,
                        F_PAD: tl.constexpr, BLOCK: tl.constexpr):
    """(2 pi x) @ B^T for a block of BLOCK points -> (BLOCK, F_PAD); padded features are 0."""
    feats = tl.arange(0, F_PAD)
    feat_mask = feats < F
    proj = tl.zeros((BLOCK, F_PAD), dtype=tl.float32)
    for k in tl.static_range(IN):
        xk = tl.load(x_ptr + rows * IN + k, mask=row_mask, other=0.0) * TWO_PI  # (BLOCK,)
        bk = tl.load(fb_ptr + feats * IN + k, mask=feat_mask, other=0.0)  # (F_PAD,)
        proj += xk[:, None] * bk[None, :]
    return proj


@triton.jit
def mlp_forward_kernel(
    x_ptr,  # (N, IN) fp32 coords
    fb_ptr,  # (F, IN) fp32 Fourier matrix B (unused with ENCODING == "none")
    w_in_ptr, b_in_ptr,  # (W, K0), (W,) first layer
    hid_ptr,  # hidden layers 2..L: L-1 blocks of [w (W, W), b (W)]
    w_out_ptr, b_out_ptr,  # (OUT, W), (OUT,) output layer
    y_ptr,  # (N, OUT) output
    z_ptr,  # (L, N, W) pre-activations, written when STORE_Z
    n_points,  # N
    w0,  # sine frequency (fp32)
    IN: tl.constexpr, ENCODING: tl.constexpr, F: tl.constexpr, F_PAD: tl.constexpr,
    WIDTH: tl.constexpr, HIDDEN: tl.constexpr, OUT: tl.constexpr, OUT_PAD: tl.constexpr,
    ACT: tl.constexpr, OUTPUT: tl.constexpr, STORE_Z: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < n_points
    cols = tl.arange(0, WIDTH)

    # First layer, with the encoding fused in: z = enc(x) @ w_in^T + b_in.
    z = tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32) + tl.load(b_in_ptr + cols)[None, :]
    if ENCODING == "fourier":
        proj = _fourier_projection(x_ptr, fb_ptr, rows, row_mask, IN, F, F_PAD, BLOCK_M)
        feats = tl.arange(0, F_PAD)
        # w_in^T split in its sin and cos halves, (F_PAD, W) each; padded rows are 0.
        w_t = w_in_ptr + cols[None, :] * (2 * F) + feats[:, None]
        w_mask = feats[:, None] < F
        z = _matmul(tl.sin(proj), tl.load(w_t, mask=w_mask, other=0.0), z, PRECISION)
        z = _matmul(tl.cos(proj), tl.load(w_t + F, mask=w_mask, other=0.0), z, PRECISION)
    else:
        # IN is tiny (2): outer products, exact fp32 whatever PRECISION says.
        for k in tl.static_range(IN):
            xk = tl.load(x_ptr + rows * IN + k, mask=row_mask, other=0.0)
            z += xk[:, None] * tl.load(w_in_ptr + cols * IN + k)[None, :]

    for layer in tl.static_range(HIDDEN):
        if layer > 0:
            # w^T of hidden layer `layer`, (W_in, W_out), loaded on chip.
            block = hid_ptr + (layer - 1) * (WIDTH * WIDTH + WIDTH)
            w_t = tl.load(block + cols[None, :] * WIDTH + cols[:, None])
            bias = tl.load(block + WIDTH * WIDTH + cols)
            z = _matmul(h, w_t, tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32) + bias[None, :], PRECISION)
        if STORE_Z:
            z_rows = rows + layer * n_points
            tl.store(z_ptr + z_rows[:, None] * WIDTH + cols[None, :], z, mask=row_mask[:, None])
        h = _activation(z, w0, ACT)

    outs = tl.arange(0, OUT_PAD)
    out_mask = outs < OUT
    w_t = tl.load(w_out_ptr + outs[None, :] * WIDTH + cols[:, None], mask=out_mask[None, :], other=0.0)
    bias = tl.load(b_out_ptr + outs, mask=out_mask, other=0.0)
    o = _matmul(h, w_t, tl.zeros((BLOCK_M, OUT_PAD), dtype=tl.float32) + bias[None, :], PRECISION)
    if OUTPUT == "sigmoid":
        o = tl.sigmoid(o)
    tl.store(y_ptr + rows[:, None] * OUT + outs[None, :], o, mask=row_mask[:, None] & out_mask[None, :])


@triton.jit
def mlp_backward_data_kernel(
    y_ptr,  # (N, OUT) forward output
    dy_ptr,  # (N, OUT) dloss/dy
    hid_ptr,  # hidden layers 2..L: L-1 blocks of [w (W, W), b (W)]
    w_out_ptr,  # (OUT, W) output weights
    z_ptr,  # (L, N, W) saved pre-activations
    dz_ptr,  # (L, N, W) out: dloss/dz of every hidden layer
    do_ptr,  # (N, OUT) out: dloss/d(output pre-activation)
    n_points,  # N
    w0,  # sine frequency (fp32)
    WIDTH: tl.constexpr, HIDDEN: tl.constexpr, OUT: tl.constexpr, OUT_PAD: tl.constexpr,
    ACT: tl.constexpr, OUTPUT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < n_points
    cols = tl.arange(0, WIDTH)
    outs = tl.arange(0, OUT_PAD)
    out_mask = outs < OUT
    io_mask = row_mask[:, None] & out_mask[None, :]

    d = tl.load(dy_ptr + rows[:, None] * OUT + outs[None, :], mask=io_mask, other=0.0)
    if OUTPUT == "sigmoid":
        y = tl.load(y_ptr + rows[:, None] * OUT + outs[None, :], mask=io_mask, other=0.0)
        d = d * (y * (1.0 - y))
    tl.store(do_ptr + rows[:, None] * OUT + outs[None, :], d, mask=io_mask)

    w = tl.load(w_out_ptr + outs[:, None] * WIDTH + cols[None, :], mask=out_mask[:, None], other=0.0)
    dh = _matmul(d, w, tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32), PRECISION)  # (BLOCK_M, W)
    for layer in tl.static_range(HIDDEN - 1, -1, -1):  # unrolled: `layer` is a constexpr
        z_offs = (rows + layer * n_points)[:, None] * WIDTH + cols[None, :]
        z = tl.load(z_ptr + z_offs, mask=row_mask[:, None], other=0.0)
        if ACT == "sine":
            dz = dh * tl.cos(w0 * z) * w0
        else:
            dz = tl.where(z > 0.0, dh, 0.0)
        tl.store(dz_ptr + z_offs, dz, mask=row_mask[:, None])
        if layer > 0:
            w = tl.load(hid_ptr + (layer - 1) * (WIDTH * WIDTH + WIDTH) + cols[:, None] * WIDTH + cols[None, :])
            dh = _matmul(dz, w, tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32), PRECISION)


@triton.jit
def mlp_weight_grad_kernel(
    g_ptr,  # (layers, N, G) grads of the layers' pre-activations (dz, or d for the output layer)
    src_ptr,  # (layers, N, K) pre-activations of the layers below (SOURCE == "act")
    x_ptr,  # (N, IN) coords (SOURCE == "coords" | "fourier")
    fb_ptr,  # (F, IN) Fourier matrix (SOURCE == "fourier")
    dw_ptr,  # where this launch's first dW sits in split 0's slot of the (splits, P) partials
    db_ptr,  # where this launch's first db sits in split 0's slot
    part_stride,  # P: elements between two splits' slots (a slot is laid out like the parameters)
    dw_layer_stride,  # elements between two layers in a slot: G*K + G (weight then bias)
    n_points,  # N
    chunk,  # points per program (a multiple of BLOCK_K)
    w0,  # sine frequency (fp32)
    G: tl.constexpr, G_PAD: tl.constexpr, K: tl.constexpr, K_PAD: tl.constexpr,
    SOURCE: tl.constexpr, IN: tl.constexpr, F: tl.constexpr, ACT: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_K: tl.constexpr,
):
    split = tl.program_id(0)
    layer = tl.program_id(1).to(tl.int64)
    gs = tl.arange(0, G_PAD)
    ks = tl.arange(0, K_PAD)
    g_mask = gs < G
    k_mask = ks < K

    acc = tl.zeros((G_PAD, K_PAD), dtype=tl.float32)  # dW, or its sin half (fourier)
    acc_cos = tl.zeros((G_PAD, K_PAD), dtype=tl.float32)  # cos half of dW (fourier)
    acc_b = tl.zeros((G_PAD,), dtype=tl.float32)
    start = split * chunk
    end = tl.minimum(start + chunk, n_points)
    for first in range(start, end, BLOCK_K):
        rows = first + tl.arange(0, BLOCK_K).to(tl.int64)
        row_mask = rows < end
        g = tl.load(g_ptr + (rows + layer * n_points)[:, None] * G + gs[None, :],
                    mask=row_mask[:, None] & g_mask[None, :], other=0.0)  # (BLOCK_K, G_PAD)
        acc_b += tl.sum(g, axis=0)
        g_t = tl.trans(g)
        if SOURCE == "act":
            z = tl.load(src_ptr + (rows + layer * n_points)[:, None] * K + ks[None, :],
                        mask=row_mask[:, None] & k_mask[None, :], other=0.0)
            acc = _matmul(g_t, _activation(z, w0, ACT), acc, PRECISION)
        elif SOURCE == "fourier":
            proj = _fourier_projection(x_ptr, fb_ptr, rows, row_mask, IN, F, K_PAD, BLOCK_K)
            acc = _matmul(g_t, tl.sin(proj), acc, PRECISION)
            acc_cos = _matmul(g_t, tl.cos(proj), acc_cos, PRECISION)
        else:
            # Raw coords as the input: K = IN columns, padded to K_PAD with zeros.
            x = tl.load(x_ptr + rows[:, None] * IN + ks[None, :],
                        mask=row_mask[:, None] & k_mask[None, :], other=0.0)
            acc = tl.dot(g_t, x, acc, input_precision="ieee")  # tiny K: keep the first layer exact

    slot = split * part_stride + layer * dw_layer_stride
    if SOURCE == "fourier":
        # dW is (G, 2F): sin half in columns [0, F), cos half in [F, 2F).
        offs = slot + gs[:, None] * (2 * F) + ks[None, :]
        mask = g_mask[:, None] & k_mask[None, :]
        tl.store(dw_ptr + offs, acc, mask=mask)
        tl.store(dw_ptr + offs + F, acc_cos, mask=mask)
    else:
        tl.store(dw_ptr + slot + gs[:, None] * K + ks[None, :], acc, mask=g_mask[:, None] & k_mask[None, :])
    tl.store(db_ptr + slot + gs, acc_b, mask=g_mask)


# ---- the whole training step in one kernel ------------------------------------------- #

HUBER_DELTA = tl.constexpr(0.1)  # steer.trainer's Huber loss: delta 0.1 suits [0, 1] colours


@triton.jit
def _derivative(z, w0, ACT: tl.constexpr):
    """d act(z) / dz, elementwise (relu: 1 where z > 0, as torch's)."""
    if ACT == "sine":
        return w0 * tl.cos(w0 * z)
    else:
        return tl.where(z > 0.0, 1.0, 0.0)


@triton.jit
def _loss_and_grad(diff, LOSS: tl.constexpr):
    """The elementwise loss of y - t and its derivative by y, as torch's mse, l1 and huber (delta 0.1)."""
    if LOSS == "l1":
        return tl.abs(diff), tl.where(diff > 0.0, 1.0, tl.where(diff < 0.0, -1.0, 0.0))
    elif LOSS == "huber":
        small = tl.abs(diff) < HUBER_DELTA
        loss = tl.where(small, 0.5 * diff * diff, HUBER_DELTA * (tl.abs(diff) - 0.5 * HUBER_DELTA))
        grad = tl.where(small, diff, tl.where(diff > 0.0, HUBER_DELTA, -HUBER_DELTA))
        return loss, grad
    else:
        return diff * diff, 2.0 * diff


@triton.jit
def _hidden_forward(h, hid_ptr, layer: tl.constexpr, w0, WIDTH: tl.constexpr, ACT: tl.constexpr,
                    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr):
    """Hidden layer `layer` (>= 1) on h: its pre-activation z and act(z)."""
    cols = tl.arange(0, WIDTH)
    block = hid_ptr + (layer - 1) * (WIDTH * WIDTH + WIDTH)
    w_t = tl.load(block + cols[None, :] * WIDTH + cols[:, None])
    bias = tl.load(block + WIDTH * WIDTH + cols)
    z = _matmul(h, w_t, tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32) + bias[None, :], PRECISION)
    return z, _activation(z, w0, ACT)


@triton.jit
def _hidden_backward(dh, z, below, acc_w, acc_b, hid_ptr, layer: tl.constexpr, w0, WIDTH: tl.constexpr,
                     ACT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr):
    """Hidden layer `layer` (>= 1) backwards: its dW and db added to the program's sums, and dh below."""
    cols = tl.arange(0, WIDTH)
    dz = dh * _derivative(z, w0, ACT)
    acc_w = _matmul(tl.trans(dz), below, acc_w, PRECISION)
    acc_b += tl.sum(dz, axis=0)
    w = tl.load(hid_ptr + (layer - 1) * (WIDTH * WIDTH + WIDTH) + cols[:, None] * WIDTH + cols[None, :])
    return _matmul(dz, w, tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32), PRECISION), acc_w, acc_b


@triton.jit
def mlp_train_step_kernel(
    x_ptr,  # (N, IN) fp32 coords of the step's points
    t_ptr,  # (N, OUT) fp32 targets
    fb_ptr,  # (F, IN) Fourier matrix B
    w_in_ptr, b_in_ptr, hid_ptr, w_out_ptr, b_out_ptr,  # the parameters, as in mlp_forward_kernel
    part_ptr,  # (programs, P) out: each program's sums of dloss/dparams, laid out like the parameters
    loss_ptr,  # (programs,) out: each program's sum of the elementwise loss
    n_points, chunk,  # N; points per program (a multiple of BLOCK_M)
    part_stride,  # P
    w0, scale,  # sine frequency; 1 / (N * OUT): the loss is a mean
    IN: tl.constexpr, IN_PAD: tl.constexpr, ENCODING: tl.constexpr, F: tl.constexpr, F_PAD: tl.constexpr,
    K0: tl.constexpr, K0_PAD: tl.constexpr,  # the first layer's inputs: IN, or 2F (fourier); padded: IN_PAD | F_PAD
    WIDTH: tl.constexpr, HIDDEN: tl.constexpr, OUT: tl.constexpr, OUT_PAD: tl.constexpr,
    ACT: tl.constexpr, OUTPUT: tl.constexpr, LOSS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """One optimisation step's loss and gradients: forward, loss, backward and dW for a chunk of points.

    Each program walks its own chunk, BLOCK_M points at a time: the encoding, every layer's
    pre-activations and activations stay on chip (HIDDEN <= 4 layers, kept as separate
    variables), the loss's gradient and the sigmoid's are taken in place, and dW, db and the
    loss are summed over the chunk in registers. The sums go to the program's own slot; the
    caller adds the slots in a fixed order, so a step is deterministic (no atomics).
    """
    pid = tl.program_id(0)
    cols = tl.arange(0, WIDTH)
    outs = tl.arange(0, OUT_PAD)
    out_mask = outs < OUT
    feats = tl.arange(0, F_PAD)
    ins = tl.arange(0, IN_PAD)

    acc_in = tl.zeros((WIDTH, K0_PAD), dtype=tl.float32)  # dW of the first layer (its sin half: fourier)
    acc_in_cos = tl.zeros((WIDTH, K0_PAD), dtype=tl.float32)  # its cos half (fourier)
    acc_b0 = tl.zeros((WIDTH,), dtype=tl.float32)
    acc_w1 = tl.zeros((WIDTH, WIDTH), dtype=tl.float32)
    acc_b1 = tl.zeros((WIDTH,), dtype=tl.float32)
    acc_w2 = tl.zeros((WIDTH, WIDTH), dtype=tl.float32)
    acc_b2 = tl.zeros((WIDTH,), dtype=tl.float32)
    acc_w3 = tl.zeros((WIDTH, WIDTH), dtype=tl.float32)
    acc_b3 = tl.zeros((WIDTH,), dtype=tl.float32)
    acc_out = tl.zeros((OUT_PAD, WIDTH), dtype=tl.float32)
    acc_bout = tl.zeros((OUT_PAD,), dtype=tl.float32)
    acc_loss = tl.zeros((BLOCK_M,), dtype=tl.float32)

    start = pid * chunk
    end = tl.minimum(start + chunk, n_points)
    for first in range(start, end, BLOCK_M):
        rows = first + tl.arange(0, BLOCK_M)
        row_mask = rows < end

        # ---- forward: every layer's z and act(z) kept ------------------------------ #
        z0 = tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32) + tl.load(b_in_ptr + cols)[None, :]
        if ENCODING == "fourier":
            proj = _fourier_projection(x_ptr, fb_ptr, rows, row_mask, IN, F, F_PAD, BLOCK_M)
            enc_sin = tl.sin(proj)
            enc_cos = tl.cos(proj)
            w_t = w_in_ptr + cols[None, :] * (2 * F) + feats[:, None]
            w_mask = feats[:, None] < F
            z0 = _matmul(enc_sin, tl.load(w_t, mask=w_mask, other=0.0), z0, PRECISION)
            z0 = _matmul(enc_cos, tl.load(w_t + F, mask=w_mask, other=0.0), z0, PRECISION)
        else:
            x = tl.load(x_ptr + rows[:, None] * IN + ins[None, :], mask=row_mask[:, None] & (ins[None, :] < IN),
                        other=0.0)  # (BLOCK_M, IN_PAD), zero padded
            for k in tl.static_range(IN):  # IN is tiny (2): outer products, exact fp32
                xk = tl.load(x_ptr + rows * IN + k, mask=row_mask, other=0.0)
                z0 += xk[:, None] * tl.load(w_in_ptr + cols * IN + k)[None, :]
        h0 = _activation(z0, w0, ACT)
        h = h0
        if HIDDEN > 1:
            z1, h1 = _hidden_forward(h0, hid_ptr, 1, w0, WIDTH, ACT, PRECISION, BLOCK_M)
            h = h1
        if HIDDEN > 2:
            z2, h2 = _hidden_forward(h1, hid_ptr, 2, w0, WIDTH, ACT, PRECISION, BLOCK_M)
            h = h2
        if HIDDEN > 3:
            z3, h3 = _hidden_forward(h2, hid_ptr, 3, w0, WIDTH, ACT, PRECISION, BLOCK_M)
            h = h3
        io_mask = row_mask[:, None] & out_mask[None, :]
        w_out_t = tl.load(w_out_ptr + outs[None, :] * WIDTH + cols[:, None], mask=out_mask[None, :], other=0.0)
        o = _matmul(h, w_out_t, tl.zeros((BLOCK_M, OUT_PAD), dtype=tl.float32)
                    + tl.load(b_out_ptr + outs, mask=out_mask, other=0.0)[None, :], PRECISION)
        if OUTPUT == "sigmoid":
            y = tl.sigmoid(o)
        else:
            y = o

        # ---- the loss and its gradient by the output's pre-activation --------------- #
        t = tl.load(t_ptr + rows[:, None] * OUT + outs[None, :], mask=io_mask, other=0.0)
        diff = tl.where(io_mask, y - t, 0.0)
        loss, d = _loss_and_grad(diff, LOSS)
        acc_loss += tl.sum(loss, axis=1)
        d = d * scale
        if OUTPUT == "sigmoid":
            d = d * (y * (1.0 - y))
        d = tl.where(io_mask, d, 0.0)

        # ---- backward ------------------------------------------------------------ #
        acc_out = _matmul(tl.trans(d), h, acc_out, PRECISION)
        acc_bout += tl.sum(d, axis=0)
        w_out = tl.load(w_out_ptr + outs[:, None] * WIDTH + cols[None, :], mask=out_mask[:, None], other=0.0)
        dh = _matmul(d, w_out, tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32), PRECISION)
        if HIDDEN > 3:
            dh, acc_w3, acc_b3 = _hidden_backward(dh, z3, h2, acc_w3, acc_b3, hid_ptr, 3, w0, WIDTH, ACT,
                                                  PRECISION, BLOCK_M)
        if HIDDEN > 2:
            dh, acc_w2, acc_b2 = _hidden_backward(dh, z2, h1, acc_w2, acc_b2, hid_ptr, 2, w0, WIDTH, ACT,
                                                  PRECISION, BLOCK_M)
        if HIDDEN > 1:
            dh, acc_w1, acc_b1 = _hidden_backward(dh, z1, h0, acc_w1, acc_b1, hid_ptr, 1, w0, WIDTH, ACT,
                                                  PRECISION, BLOCK_M)
        dz0 = tl.where(row_mask[:, None], dh * _derivative(z0, w0, ACT), 0.0)
        acc_b0 += tl.sum(dz0, axis=0)
        if ENCODING == "fourier":
            acc_in = _matmul(tl.trans(dz0), enc_sin, acc_in, PRECISION)
            acc_in_cos = _matmul(tl.trans(dz0), enc_cos, acc_in_cos, PRECISION)
        else:
            acc_in = tl.dot(tl.trans(dz0), x, acc_in, input_precision="ieee")  # tiny K: kept exact

    # ---- the program's sums to its slot (laid out like the parameters) ------------------ #
    slot = part_ptr + pid.to(tl.int64) * part_stride
    if ENCODING == "fourier":
        offs = cols[:, None] * K0 + feats[None, :]
        mask = feats[None, :] < F
        tl.store(slot + offs, acc_in, mask=mask)
        tl.store(slot + offs + F, acc_in_cos, mask=mask)
    else:
        tl.store(slot + cols[:, None] * K0 + ins[None, :], acc_in, mask=ins[None, :] < IN)
    tl.store(slot + WIDTH * K0 + cols, acc_b0)
    hidden = slot + WIDTH * K0 + WIDTH
    square = cols[:, None] * WIDTH + cols[None, :]
    if HIDDEN > 1:
        tl.store(hidden + square, acc_w1)
        tl.store(hidden + WIDTH * WIDTH + cols, acc_b1)
    if HIDDEN > 2:
        tl.store(hidden + (WIDTH * WIDTH + WIDTH) + square, acc_w2)
        tl.store(hidden + (WIDTH * WIDTH + WIDTH) + WIDTH * WIDTH + cols, acc_b2)
    if HIDDEN > 3:
        tl.store(hidden + 2 * (WIDTH * WIDTH + WIDTH) + square, acc_w3)
        tl.store(hidden + 2 * (WIDTH * WIDTH + WIDTH) + WIDTH * WIDTH + cols, acc_b3)
    out = hidden + (HIDDEN - 1) * (WIDTH * WIDTH + WIDTH)
    tl.store(out + outs[:, None] * WIDTH + cols[None, :], acc_out, mask=out_mask[:, None])
    tl.store(out + OUT * WIDTH + outs, acc_bout, mask=out_mask)
    tl.store(loss_ptr + pid, tl.sum(acc_loss, axis=0))
