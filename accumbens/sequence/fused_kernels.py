"""Pallas (Triton backend) kernels of the fused degree-2 power attention, chunk-parallel.

Tiled symmetric embedding
-------------------------
For degree 2 the kernels use a blocked form of the symmetric square that suits matrix units:
cut the head dimension into ``nb = d / 16`` blocks of 16 and keep, for each pair of blocks
``x <= y``, the ``16 x 16`` outer product of the two blocks, split in two *tiles* of 128
features (outer half ``h`` in {0, 1} takes rows ``8h .. 8h+7`` of block ``x``)::

    phi_tile(x, y, h)[16a + b] = m_xy * X[16x + 8h + a] * X[16y + b],  m_xy = 1 if x == y else 2

(``m`` on keys only). Summed over the ``T = nb (nb + 1)`` tiles this gives ``(q . k)^2``
exactly; it keeps 2560 features for ``d = 64`` instead of the minimal 2080 (the same layout as
the package's kernels), but every tile is a dense ``(c, 128)`` matrix made in registers as the
product of two small matrix products with 0/1 selection matrices,
``(X_x @ E_outer(h)) * (X_y @ E_inner)``, so the expanded keys/queries never touch global
memory and no register reshapes are needed. The gradient of a tile with respect to its two
factors is again two products with the transposed selection matrices.

Tile id ``t = 2 (y (y+1)/2 + x) + h``. Kernels loop over tiles with ``lax.fori_loop`` and decode
``(x, y, h)`` from ``t`` with integer arithmetic (:func:`_decode`), so the traced kernel body
(and the compile time) does not grow with the tile count; the blocks ``X_x``, ``X_y`` are
dynamic slices of the input refs.

Chunk-parallel structure (no kernel walks the chunks while doing matrix work)
-------------------------------------------------------------------------------
Forward, with ``c`` the chunk, ``N`` the chunk count, ``g`` chunk-local cumulative log gates
and ``gt`` chunk totals:

1. ``chunk_states``  grid (N, batch*kv_heads): each program forms its chunk's own contribution
   ``Delta_n = sum_j exp(gt_n - g_j) phi_k(k_j) v_j^T`` and ``dz_n = sum_j exp(gt_n - g_j) phi_k(k_j)``
   for every tile (phi expanded in registers), written in the state dtype (z in float32).
2. ``chunk_prefix``  an exclusive gated prefix over the chunk axis,
   ``S_0 = 0, S_{n+1} = exp(gt_n) S_n + Delta_n``: a streaming Pallas kernel (grid over
   batch*heads x tiles x row blocks, each program walks the chunks with a small float32 tile
   in registers, no matrix work), or ``lax.associative_scan``
   in XLA (:func:`chunk_prefix_xla`).
3. ``output``  grid (N, batch*q_heads): per chunk the ``c x c`` gated power attention plus the
   query of every state tile; writes ``y`` and the row normaliser ``den``.

Backward mirrors it: ``chunk_dstates`` (each chunk's queries' contribution
``Q_n = sum_i phi_q(q_i e^{g_i/2} s) dL/dnum_i^T``), the *reverse* exclusive prefix
``dS_n = dL/dS_{n+1}`` (``X <- exp(gt_n) X + Q_n`` walking down), then three per-chunk gradient
kernels: the chunk's own attention (``grads_intra``), queries through the state tiles
(``grads_query_state``) and keys/values through the state gradients (``grads_key_state``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

F32 = jnp.float32
TILE = 16  # block width of the tiled symmetric embedding
HALF = 8  # outer rows per feature tile
NT_FEATS = HALF * TILE  # features per tile
PREFIX_ROWS = 32  # rows of a state tile per program of the prefix kernel

# (num_warps, num_stages) per kernel; the benchmark may retune these before tracing.
# Chosen on a CPU from Triton 3.5.1 + ptxas (sm_90a) register and spill counts of these kernels at
# d = 64, c = 128 (benchmarks/power_attention_notes.md, item 14): 8 warps everywhere (4 spill
# kilobytes, 16 spill too), num_stages where it spilled least; not yet timed on a GPU.
KERNEL_CONFIG = {"chunk_states": (8, 2), "prefix": (4, 1), "output": (8, 1), "chunk_dstates": (8, 2),
                 "grads_k": (8, 2), "grads_q": (8, 2), "grads_intra_q": (8, 1), "grads_intra_k": (8, 1)}


def n_tiles(d: int) -> int:
    """Number of (c, 128) feature tiles for head dimension ``d``."""
    nb = d // TILE
    return nb * (nb + 1)


def _tile_id(x, y, h):
    return 2 * (y * (y + 1) // 2 + x) + h


def _tiles(nb: int):
    """Static list of (tile id, x, y, h, multiplier) in tile-id order (for tests and references)."""
    out = []
    for y in range(nb):
        for x in range(y + 1):
            for h in range(2):
                out.append((_tile_id(x, y, h), x, y, h, 1.0 if x == y else 2.0))
    return out


def _decode(t, nb: int):
    """Tile id -> (x, y, h, m) with integer arithmetic only (Triton-safe, no i1 values in
    arithmetic): ``p = t // 2 = y (y+1)/2 + x`` with ``0 <= x <= y``, so ``y`` counts the
    triangular numbers ``k (k+1)/2 <= p`` for ``k = 1 .. nb-1``."""
    p = t // 2
    h = t - 2 * p
    y = p * 0
    for kk in range(1, nb):
        y = y + jnp.minimum(jnp.maximum(p - kk * (kk + 1) // 2 + 1, 0), 1)
    x = p - y * (y + 1) // 2
    m = (1 + jnp.minimum(y - x, 1)).astype(F32)  # 1 on the diagonal, 2 off it
    return x, y, h, m


def _dot(a, b, mm, prec, ta: bool = False, tb: bool = False):
    """a @ b with optional transposes; operands cast to ``mm``, float32 accumulation."""
    dims = (((0 if ta else 1,), (1 if tb else 0,)), ((), ()))
    return jax.lax.dot_general(a.astype(mm), b.astype(mm), dims, precision=prec, preferred_element_type=F32)


def _dot_f32(a, b, mm, prec32, tb: bool = False):
    """a @ b to about float32 accuracy, for one operand exactly representable in ``mm`` (a 16-bit
    input such as v, or a 0/1 matrix) and one float32 operand. For 16-bit ``mm`` the float32
    operand is split into its rounded head and rounded remainder, two 16-bit products (relative
    error ~2^-17 in bf16): this keeps Triton's registers in 16-bit tiles, where three-pass TF32
    on a (128, 128) float32 tile made the output kernel spill. For float32 inputs: ``prec32``."""
    if jnp.dtype(mm).itemsize >= 4:
        return _dot(a, b, F32, prec32, tb=tb)

    def split(x):
        x = x.astype(F32)
        hi = x.astype(mm)
        return hi, (x - hi.astype(F32)).astype(mm)

    if a.dtype != mm:
        hi, lo = split(a)
        return _dot(hi, b, mm, None, tb=tb) + _dot(lo, b, mm, None, tb=tb)
    hi, lo = split(b)
    return _dot(a, hi, mm, None, tb=tb) + _dot(a, lo, mm, None, tb=tb)


def _sel_outer(h, mm):
    """(16, 128) 0/1 matrix: feature 16a+b of half h reads outer row 8h+a."""
    r = jax.lax.broadcasted_iota(jnp.int32, (TILE, NT_FEATS), 0)
    j = jax.lax.broadcasted_iota(jnp.int32, (TILE, NT_FEATS), 1)
    return (r == HALF * h + j // TILE).astype(mm)


def _sel_inner(mm):
    """(16, 128) 0/1 matrix: feature 16a+b reads inner row b."""
    r = jax.lax.broadcasted_iota(jnp.int32, (TILE, NT_FEATS), 0)
    j = jax.lax.broadcasted_iota(jnp.int32, (TILE, NT_FEATS), 1)
    return (r == j % TILE).astype(mm)


def _place(blk, x, d, mm, prec32):
    """(c, 16) block -> (c, d) with the block in columns ``16x .. 16x+15``, zeros elsewhere: a
    float32 product with a 0/1 placement matrix (lets a fori_loop over tiles accumulate the
    gradient of a dynamically chosen block into one (c, d) carry)."""
    a = jax.lax.broadcasted_iota(jnp.int32, (TILE, d), 0)
    col = jax.lax.broadcasted_iota(jnp.int32, (TILE, d), 1)
    return _dot_f32(blk, (col == a + TILE * x).astype(mm), mm, prec32)


def _factors(xo, xi, h, mm, prec):
    """The two (c,128) factors of a feature tile; the tile is their elementwise product.

    Returned in ``mm``: a 0/1 selection copies one (``mm``-rounded) input element, so the cast
    is exact, and for bfloat16 it halves the registers the (c, 128) factors hold."""
    return (_dot(xo, _sel_outer(h, mm), mm, prec).astype(mm), _dot(xi, _sel_inner(mm), mm, prec).astype(mm))


def _factors_t(xo, xi, h, mm, prec):
    """Transposed (128, c) factors of a feature tile, made directly (no transpose of a big tile):
    ``E^T @ x^T`` as a product whose second operand is the small (c, 16) block."""
    f = jax.lax.broadcasted_iota(jnp.int32, (NT_FEATS, TILE), 0)
    a = jax.lax.broadcasted_iota(jnp.int32, (NT_FEATS, TILE), 1)
    eo = (a == HALF * h + f // TILE).astype(mm)
    ei = (a == f % TILE).astype(mm)
    return _dot(eo, xo, mm, prec, tb=True).astype(mm), _dot(ei, xi, mm, prec, tb=True).astype(mm)


def _phi_transpose(dphi, A, B, h, mm, prec):
    """Gradient w.r.t. the (c,16) blocks xo, xi of the tile A*B given ``dphi`` (c,128)."""
    go = _dot(dphi * B, _sel_outer(h, mm), mm, prec, tb=True)
    gi = _dot(dphi * A, _sel_inner(mm), mm, prec, tb=True)
    return go, gi


def _params(num_warps: int, num_stages: int):
    from jax.experimental.pallas import triton as plgpu

    return plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def _call(kernel, out_shape, grid, args, *, interpret, config: str, poison):
    """pallas_call named ``config`` (its KERNEL_CONFIG key, which sets num_warps/num_stages).
    With ``poison`` the outputs start as NaN (aliased NaN inputs), so any element a kernel fails
    to write shows up as NaN downstream."""
    cp = None if interpret else _params(*KERNEL_CONFIG[config])
    if not poison:
        return pl.pallas_call(kernel, out_shape=out_shape, grid=grid, interpret=interpret, compiler_params=cp,
                              name=config)(*args)
    n_in, n_out = len(args), len(out_shape)
    nan_bufs = [jnp.full(o.shape, jnp.nan, o.dtype) for o in out_shape]

    def wrapped(*refs):
        kernel(*refs[:n_in], *refs[n_in + n_out:])

    return pl.pallas_call(wrapped, out_shape=out_shape, grid=grid, interpret=interpret, name=config,
                          input_output_aliases={n_in + i: i for i in range(n_out)}, compiler_params=cp)(*args, *nan_bufs)


def _state_shapes(B, Hk, N, nt, d, state_dtype):
    return (jax.ShapeDtypeStruct((B, Hk, N, nt, NT_FEATS, d), state_dtype),
            jax.ShapeDtypeStruct((B, Hk, N, nt, NT_FEATS), F32))


# ----------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------
def chunk_states(k, v, g, gt, *, c, state_dtype, mm, prec, interpret, poison=False):
    """Each chunk's own state contribution. k, v: (B, Tp, Hk, d); g: (B, Tp, Hk); gt: (B, N, Hk).

    Returns Delta (B, Hk, N, T, 128, d) in ``state_dtype`` and dz (B, Hk, N, T, 128) float32:
    ``sum_{j in chunk n} exp(gt_n - g_j) phi_k(k_j) [v_j^T | 1]`` tile by tile.
    """
    B, Tp, Hk, d = k.shape
    nb, nt, N = d // TILE, n_tiles(d), Tp // c

    def kernel(k_ref, v_ref, g_ref, gt_ref, s_ref, z_ref):
        n = pl.program_id(0)
        bh = pl.program_id(1)
        b = bh // Hk
        h = bh % Hk
        rows = pl.ds(n * c, c)
        e = jnp.exp((gt_ref[b, n, h] - g_ref[b, rows, h]) * 0.5)[:, None]
        vv = v_ref[b, rows, h, :]

        def body(t, carry):
            x, y, hf, m = _decode(t, nb)
            ko = k_ref[b, rows, h, pl.ds(x * TILE, TILE)].astype(F32) * e
            ki = k_ref[b, rows, h, pl.ds(y * TILE, TILE)].astype(F32) * e
            At, Bt = _factors_t(ko, ki, hf, mm, prec)
            # (128, c): the weighted key tile, transposed, rounded once to mm (m is 1 or 2: exact)
            phit = At * Bt * m.astype(At.dtype)
            s_ref[b, h, n, t, :, :] = _dot(phit, vv, mm, prec).astype(s_ref.dtype)
            z_ref[b, h, n, t, :] = jnp.sum(At.astype(F32) * Bt.astype(F32), axis=1) * m
            return carry

        jax.lax.fori_loop(0, nt, body, 0)

    return _call(kernel, _state_shapes(B, Hk, N, nt, d, state_dtype), (N, B * Hk), (k, v, g, gt),
                 interpret=interpret, config="chunk_states", poison=poison)


def chunk_prefix(delta, dz, gt, *, reverse: bool, interpret, poison=False, rows=None, dot_with=None):
    """Exclusive gated prefix over the chunk axis.

    Forward (``reverse=False``): ``out_0 = 0``, ``out_{n+1} = exp(gt_n) out_n + delta_n`` (the
    state *before* each chunk). Reverse: ``out_{N-1} = 0``, ``out_{n-1} = exp(gt_n) out_n + delta_n``
    (the state gradient *after* each chunk). Carried in float32; stored in ``delta``'s dtype.
    A streaming kernel: grid (batch*heads, tiles, row blocks), no matrix products. Not in place:
    with the input aliased to the output, a thread could overwrite an element that a thread
    holding a replica of it has not loaded yet (1-D ``z`` blocks are replicated across threads).

    ``dot_with=(S, z)`` (arrays shaped like ``delta``, ``dz``) also returns, per program and
    chunk, ``<S_n, out_n> + <z_n, outz_n>`` over the program's rows (float32 carry, not the
    rounded output): shape (B, Hk, N, T, 128 / rows); summed, it gives the gate gradient's
    whole-chunk term (see ``fused._gate_gradient``) without another pass over the states.
    """
    B, Hk, N, nt, F, d = delta.shape
    R = rows or min(PREFIX_ROWS, F)
    if F % R:
        raise ValueError(f"prefix rows {R} must divide {F}")
    with_dot = dot_with is not None

    def kernel(*refs):
        if with_dot:
            s_in, z_in, gt_ref, sx_ref, zx_ref, s_out, z_out, e_out = refs
        else:
            s_in, z_in, gt_ref, s_out, z_out = refs
        bh = pl.program_id(0)
        t = pl.program_id(1)
        rb = pl.program_id(2)
        b = bh // Hk
        h = bh % Hk
        rr = pl.ds(rb * R, R)

        def body(i, carry):
            S, z = carry
            n = N - 1 - i if reverse else i
            dS = s_in[b, h, n, t, rr, :].astype(F32)
            dzz = z_in[b, h, n, t, rr]
            s_out[b, h, n, t, rr, :] = S.astype(s_out.dtype)
            z_out[b, h, n, t, rr] = z
            if with_dot:
                e = (jnp.sum(sx_ref[b, h, n, t, rr, :].astype(F32) * S)
                     + jnp.sum(zx_ref[b, h, n, t, rr] * z))
                e_out[b, h, n, t, pl.ds(rb, 1)] = jnp.full((1,), e, F32)
            dec = jnp.exp(gt_ref[b, n, h])
            return S * dec + dS, z * dec + dzz

        jax.lax.fori_loop(0, N, body, (jnp.zeros((R, d), F32), jnp.zeros((R,), F32)))

    out_shape = [jax.ShapeDtypeStruct(delta.shape, delta.dtype), jax.ShapeDtypeStruct(dz.shape, F32)]
    args = (delta, dz, gt)
    if with_dot:
        out_shape.append(jax.ShapeDtypeStruct((B, Hk, N, nt, F // R), F32))
        args = args + tuple(dot_with)
    return _call(kernel, tuple(out_shape), (B * Hk, nt, F // R), args, interpret=interpret,
                 config="prefix", poison=poison)


def chunk_prefix_xla(delta, dz, gt, *, reverse: bool):
    """The same exclusive gated prefix as :func:`chunk_prefix`, by ``lax.associative_scan`` in XLA
    (float32 intermediates; log2(N) passes over the states)."""
    a = jnp.exp(jnp.transpose(gt, (0, 2, 1)))  # (B, Hk, N)

    def combine(e1, e2):  # e1 applied first, then e2
        a1, s1, z1 = e1
        a2, s2, z2 = e2
        return a1 * a2, a2[..., None, None, None] * s1 + s2, a2[..., None, None] * z1 + z2

    _, s, z = jax.lax.associative_scan(combine, (a, delta.astype(F32), dz), axis=2, reverse=reverse)
    zs = jnp.zeros_like(s[:, :, :1])
    zz = jnp.zeros_like(z[:, :, :1])
    if reverse:
        s, z = jnp.concatenate([s[:, :, 1:], zs], 2), jnp.concatenate([z[:, :, 1:], zz], 2)
    else:
        s, z = jnp.concatenate([zs, s[:, :, :-1]], 2), jnp.concatenate([zz, z[:, :, :-1]], 2)
    return s.astype(delta.dtype), z


def output_pass(q, k, v, g, S, z, *, c, scale, mm, prec, prec32, interpret, poison=False):
    """y (B, Tp, Hq, d) and den (B, Tp, Hq), float32. S, z: states before each chunk."""
    B, Tp, Hq, d = q.shape
    Hk = k.shape[2]
    r = Hq // Hk
    nb, nt, N = d // TILE, n_tiles(d), Tp // c

    def kernel(q_ref, k_ref, v_ref, g_ref, s_ref, z_ref, o_ref, den_ref):
        n = pl.program_id(0)
        bh = pl.program_id(1)
        b = bh // Hq
        hq = bh % Hq
        h = hq // r
        rows = pl.ds(n * c, c)
        qq = q_ref[b, rows, hq, :]
        kk = k_ref[b, rows, h, :]
        vv = v_ref[b, rows, h, :]
        gg = g_ref[b, rows, h]
        sc = _dot(qq, kk, mm, prec, tb=True) * scale
        ri = jax.lax.broadcasted_iota(jnp.int32, (c, c), 0)
        ci = jax.lax.broadcasted_iota(jnp.int32, (c, c), 1)
        E = jnp.exp(jnp.where(ri >= ci, gg[:, None] - gg[None, :], -jnp.inf))
        w = sc * sc * E
        # float32 weights here (not rounded to bf16): the gate gradient needs y to ~float32
        num = _dot_f32(w, vv, mm, prec32)
        den = jnp.sum(w, axis=1)
        ge = (scale * jnp.exp(gg * 0.5))[:, None]

        def body(t, carry):
            num, den = carry
            x, y, hf, _ = _decode(t, nb)
            qo = q_ref[b, rows, hq, pl.ds(x * TILE, TILE)].astype(F32) * ge
            qi = q_ref[b, rows, hq, pl.ds(y * TILE, TILE)].astype(F32) * ge
            A, Bf = _factors(qo, qi, hf, mm, prec)
            phi = A * Bf
            num = num + _dot(phi, s_ref[b, h, n, t, :, :], mm, prec)
            den = den + jnp.sum(A * (Bf * z_ref[b, h, n, t, :][None, :]), axis=1)  # float32, phi unrounded
            return num, den

        num, den = jax.lax.fori_loop(0, nt, body, (num, den))
        den_ok = jnp.where(den == 0, 1.0, den)
        o_ref[b, rows, hq, :] = (num / den_ok[:, None]).astype(o_ref.dtype)
        den_ref[b, rows, hq] = den

    out_shape = (jax.ShapeDtypeStruct((B, Tp, Hq, d), F32), jax.ShapeDtypeStruct((B, Tp, Hq), F32))
    return _call(kernel, out_shape, (N, B * Hq), (q, k, v, g, S, z), interpret=interpret,
                 config="output", poison=poison)


# ----------------------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------------------
def chunk_dstates(q, dn, dd, g, *, c, scale, state_dtype, mm, prec, interpret, poison=False):
    """Each chunk's queries' contribution to the gradient of the state they read:
    ``Q_n = sum_{i in chunk n, heads sharing the kv head} phi_q(s e^{g_i/2} q_i) [dn_i^T | dd_i]``.

    q: (B, Tp, Hq, d); dn: (B, Tp, Hq, d) float32 = dL/dnum; dd: (B, Tp, Hq) float32 = dL/dden.
    Returns (B, Hk, N, T, 128, d) in ``state_dtype`` and (B, Hk, N, T, 128) float32.
    """
    B, Tp, Hq, d = q.shape
    Hk = g.shape[2]
    r = Hq // Hk
    nb, nt, N = d // TILE, n_tiles(d), Tp // c

    def kernel(q_ref, dn_ref, dd_ref, g_ref, ds_ref, dz_ref):
        n = pl.program_id(0)
        bh = pl.program_id(1)
        b = bh // Hk
        h = bh % Hk
        rows = pl.ds(n * c, c)
        ge = (scale * jnp.exp(g_ref[b, rows, h] * 0.5))[:, None]

        def body(t, carry):
            x, y, hf, _ = _decode(t, nb)
            acc = jnp.zeros((NT_FEATS, d), F32)
            accz = jnp.zeros((NT_FEATS,), F32)
            for j in range(r):
                hq = h * r + j
                qo = q_ref[b, rows, hq, pl.ds(x * TILE, TILE)].astype(F32) * ge
                qi = q_ref[b, rows, hq, pl.ds(y * TILE, TILE)].astype(F32) * ge
                At, Bt = _factors_t(qo, qi, hf, mm, prec)
                phit = At * Bt  # (128, c)
                acc = acc + _dot(phit, dn_ref[b, rows, hq, :], mm, prec)
                accz = accz + jnp.sum(At * (Bt * dd_ref[b, rows, hq][None, :]), axis=1)
            ds_ref[b, h, n, t, :, :] = acc.astype(ds_ref.dtype)
            dz_ref[b, h, n, t, :] = accz
            return carry

        jax.lax.fori_loop(0, nt, body, 0)

    return _call(kernel, _state_shapes(B, Hk, N, nt, d, state_dtype), (N, B * Hk), (q, dn, dd, g),
                 interpret=interpret, config="chunk_dstates", poison=poison)


def grads_key_state(k, v, g, gt, dS, dz, *, c, mm, prec, prec32, interpret, poison=False):
    """Keys/values through the state after their chunk: dk, dv (B,Tp,Hk,d) and gk (B,Tp,Hk), float32.

    ``gk_j`` is the part of ``sum_i dL/dw_ij w_ij`` (key j as sender) from later chunks.
    """
    B, Tp, Hk, d = k.shape
    nb, nt, N = d // TILE, n_tiles(d), Tp // c

    def kernel(k_ref, v_ref, g_ref, gt_ref, ds_ref, dz_ref, dk_ref, dv_ref, gk_ref):
        n = pl.program_id(0)
        bh = pl.program_id(1)
        b = bh // Hk
        h = bh % Hk
        rows = pl.ds(n * c, c)
        vv = v_ref[b, rows, h, :]
        ek = jnp.exp((gt_ref[b, n, h] - g_ref[b, rows, h]) * 0.5)[:, None]

        def body(t, carry):
            dk, dv, gk = carry
            x, y, hf, m = _decode(t, nb)
            ko = k_ref[b, rows, h, pl.ds(x * TILE, TILE)].astype(F32) * ek
            ki = k_ref[b, rows, h, pl.ds(y * TILE, TILE)].astype(F32) * ek
            A, Bf = _factors(ko, ki, hf, mm, prec)
            phik = A * Bf
            dSt = ds_ref[b, h, n, t, :, :]
            dv = dv + _dot(phik * m.astype(phik.dtype), dSt, mm, prec)
            dphi = _dot(vv, dSt, mm, prec, tb=True) + dz_ref[b, h, n, t, :][None, :]
            gk = gk + jnp.sum(A * (Bf * dphi), axis=1) * m
            go, gi = _phi_transpose(dphi * m, A, Bf, hf, mm, prec)
            dk = dk + _place(go, x, d, mm, prec32) + _place(gi, y, d, mm, prec32)
            return dk, dv, gk

        init = (jnp.zeros((c, d), F32), jnp.zeros((c, d), F32), jnp.zeros((c,), F32))
        dk, dv, gk = jax.lax.fori_loop(0, nt, body, init)
        dk_ref[b, rows, h, :] = dk * ek
        dv_ref[b, rows, h, :] = dv
        gk_ref[b, rows, h] = gk

    out_shape = (
        jax.ShapeDtypeStruct((B, Tp, Hk, d), F32),
        jax.ShapeDtypeStruct((B, Tp, Hk, d), F32),
        jax.ShapeDtypeStruct((B, Tp, Hk), F32),
    )
    return _call(kernel, out_shape, (N, B * Hk), (k, v, g, gt, dS, dz), interpret=interpret,
                 config="grads_k", poison=poison)


def grads_query_state(q, g, S, z, dn, dd, *, c, scale, mm, prec, prec32, interpret, poison=False):
    """Queries through the state before their chunk: dq (B,Tp,Hq,d) and gq (B,Tp,Hq), float32.

    ``gq_i`` is the part of ``sum_j dL/dw_ij w_ij`` (query i as receiver) from earlier chunks.
    """
    B, Tp, Hq, d = q.shape
    Hk = g.shape[2]
    r = Hq // Hk
    nb, nt, N = d // TILE, n_tiles(d), Tp // c

    def kernel(q_ref, g_ref, s_ref, z_ref, dn_ref, dd_ref, dq_ref, gq_ref):
        n = pl.program_id(0)
        bh = pl.program_id(1)
        b = bh // Hq
        hq = bh % Hq
        h = hq // r
        rows = pl.ds(n * c, c)
        ge = (scale * jnp.exp(g_ref[b, rows, h] * 0.5))[:, None]
        dnn = dn_ref[b, rows, hq, :]
        ddd = dd_ref[b, rows, hq]

        def body(t, carry):
            dq, gq = carry
            x, y, hf, _ = _decode(t, nb)
            dphi = _dot(dnn, s_ref[b, h, n, t, :, :], mm, prec, tb=True) + ddd[:, None] * z_ref[b, h, n, t, :][None, :]
            qo = q_ref[b, rows, hq, pl.ds(x * TILE, TILE)].astype(F32) * ge
            qi = q_ref[b, rows, hq, pl.ds(y * TILE, TILE)].astype(F32) * ge
            A, Bf = _factors(qo, qi, hf, mm, prec)
            gq = gq + jnp.sum(A * (Bf * dphi), axis=1)
            go, gi = _phi_transpose(dphi, A, Bf, hf, mm, prec)
            dq = dq + _place(go, x, d, mm, prec32) + _place(gi, y, d, mm, prec32)
            return dq, gq

        dq, gq = jax.lax.fori_loop(0, nt, body, (jnp.zeros((c, d), F32), jnp.zeros((c,), F32)))
        dq_ref[b, rows, hq, :] = dq * ge
        gq_ref[b, rows, hq] = gq

    out_shape = (jax.ShapeDtypeStruct((B, Tp, Hq, d), F32), jax.ShapeDtypeStruct((B, Tp, Hq), F32))
    return _call(kernel, out_shape, (N, B * Hq), (q, g, S, z, dn, dd), interpret=interpret,
                 config="grads_q", poison=poison)


def grads_intra(q, k, v, g, dn, dd, *, c, scale, mm, prec, prec32, interpret, poison=False):
    """The chunk's own c x c attention: dq (B,Tp,Hq,d), dk, dv (B,Tp,Hk,d), gq (B,Tp,Hq), gk (B,Tp,Hk).

    Two kernels, the query side (grid (N, batch*q_heads)) and the key side (grid (N, batch*kv_heads),
    formed transposed so that no matrix needs transposing): one kernel holding both sides' (c, c)
    float32 tiles spilled 1.4 KB of registers per thread (ptxas, sm_90a, c = 128, 8 warps).
    """
    B, Tp, Hq, d = q.shape
    Hk = k.shape[2]
    r = Hq // Hk
    n_chunks = Tp // c

    def causal_gates(gg, transposed):
        ri = jax.lax.broadcasted_iota(jnp.int32, (c, c), 0)
        ci = jax.lax.broadcasted_iota(jnp.int32, (c, c), 1)
        if transposed:  # E^T[j, i] = exp(g_i - g_j) for i >= j
            return jnp.exp(jnp.where(ci >= ri, gg[None, :] - gg[:, None], -jnp.inf))
        return jnp.exp(jnp.where(ri >= ci, gg[:, None] - gg[None, :], -jnp.inf))

    def q_kernel(q_ref, k_ref, v_ref, g_ref, dn_ref, dd_ref, dq_ref, gq_ref):
        n = pl.program_id(0)
        bh = pl.program_id(1)
        b = bh // Hq
        hq = bh % Hq
        h = hq // r
        rows = pl.ds(n * c, c)
        E = causal_gates(g_ref[b, rows, h], False)
        kk = k_ref[b, rows, h, :]
        sc = _dot(q_ref[b, rows, hq, :], kk, mm, prec, tb=True) * scale
        dW = _dot_f32(dn_ref[b, rows, hq, :], v_ref[b, rows, h, :], mm, prec32, tb=True) + dd_ref[b, rows, hq][:, None]
        gq_ref[b, rows, hq] = jnp.sum(sc * sc * E * dW, axis=1)
        dq_ref[b, rows, hq, :] = _dot(dW * (2.0 * scale) * sc * E, kk, mm, prec)

    def k_kernel(q_ref, k_ref, v_ref, g_ref, dn_ref, dd_ref, dk_ref, dv_ref, gk_ref):
        n = pl.program_id(0)
        bh = pl.program_id(1)
        b = bh // Hk
        h = bh % Hk
        rows = pl.ds(n * c, c)
        Et = causal_gates(g_ref[b, rows, h], True)
        kk = k_ref[b, rows, h, :]
        vv = v_ref[b, rows, h, :]
        dk = jnp.zeros((c, d), F32)
        dv = jnp.zeros((c, d), F32)
        gk = jnp.zeros((c,), F32)
        for j in range(r):
            hq = h * r + j
            qq = q_ref[b, rows, hq, :]
            dnn = dn_ref[b, rows, hq, :]
            sct = _dot(kk, qq, mm, prec, tb=True) * scale
            wt = sct * sct * Et
            dWt = _dot_f32(vv, dnn, mm, prec32, tb=True) + dd_ref[b, rows, hq][None, :]
            gk = gk + jnp.sum(wt * dWt, axis=1)
            dv = dv + _dot(wt, dnn, mm, prec)
            dk = dk + _dot(dWt * (2.0 * scale) * sct * Et, qq, mm, prec)
        dk_ref[b, rows, h, :] = dk
        dv_ref[b, rows, h, :] = dv
        gk_ref[b, rows, h] = gk

    args = (q, k, v, g, dn, dd)
    dq, gq = _call(q_kernel, (jax.ShapeDtypeStruct((B, Tp, Hq, d), F32), jax.ShapeDtypeStruct((B, Tp, Hq), F32)),
                   (n_chunks, B * Hq), args, interpret=interpret, config="grads_intra_q",
                   poison=poison)
    dk, dv, gk = _call(k_kernel, (jax.ShapeDtypeStruct((B, Tp, Hk, d), F32), jax.ShapeDtypeStruct((B, Tp, Hk, d), F32),
                                  jax.ShapeDtypeStruct((B, Tp, Hk), F32)),
                       (n_chunks, B * Hk), args, interpret=interpret, config="grads_intra_k",
                       poison=poison)
    return dq, dk, dv, gq, gk


def grads_pass(q, k, v, g, gt, S, z, dS, dz, dn, dd, *, c, scale, mm, prec, prec32, interpret, poison=False):
    """dq (B,Tp,Hq,d), dk, dv (B,Tp,Hk,d), gq (B,Tp,Hq) and gk (B,Tp,Hk), all float32: the sums of
    the three gradient kernels (chunk-internal attention, queries via states, keys via states).

    ``gq_i = sum_j dL/dw_ij w_ij`` (query i as receiver) and ``gk_j = sum_i dL/dw_ij w_ij`` (key j
    as sender, summed over the heads sharing it); ``dL/dG = sum_heads gq - gk`` (see fused.py).
    """
    kw = dict(c=c, mm=mm, prec=prec, prec32=prec32, interpret=interpret, poison=poison)
    dq_i, dk_i, dv_i, gq_i, gk_i = grads_intra(q, k, v, g, dn, dd, scale=scale, **kw)
    dq_s, gq_s = grads_query_state(q, g, S, z, dn, dd, scale=scale, **kw)
    dk_s, dv_s, gk_s = grads_key_state(k, v, g, gt, dS, dz, **kw)
    return dq_i + dq_s, dk_i + dk_s, dv_i + dv_s, gq_i + gq_s, gk_i + gk_s
