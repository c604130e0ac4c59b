"""Pallas (Triton backend) kernels of the fused degree-2 power attention.

Tiled symmetric embedding
-------------------------
For degree 2 the kernels use a blocked form of the symmetric square that suits matrix units:
cut the head dimension into ``nb = d / 16`` blocks of 16 and keep, for each pair of blocks
``x <= y``, the ``16 x 16`` outer product of the two blocks, split in two *tiles* of 128
features (outer half ``h`` in {0, 1} takes rows ``8h .. 8h+7`` of block ``x``)::

    phi_tile(x, y, h)[16a + b] = m_xy * X[16x + 8h + a] * X[16y + b],  m_xy = 1 if x == y else 2

(``m`` on keys only). Summed over the ``nb (nb + 1)`` tiles this gives ``(q . k)^2`` exactly;
it keeps 2560 features for ``d = 64`` instead of the minimal 2080 (the same layout as the
package's kernels), but every tile is a dense ``(c, 128)`` matrix made in registers as the
product of two small matrix products with 0/1 selection matrices,
``(X_x @ E_outer(h)) * (X_y @ E_inner)``, so the expanded keys/queries never touch global memory
and no register reshapes are needed. The gradient of a tile with respect to its two factors
is again two products with the transposed selection matrices.

Kernels (``c`` the chunk, ``N`` the chunk count, ``T = nb(nb+1)/2`` tiles):

* ``state``   grid (batch*kv_heads, nb, nb*value_blocks); each program owns one state tile
  (128 x value_block, float32, in registers) and walks the chunks in order, writing the state
  *before* each chunk (in the input dtype) and its normaliser (float32).
* ``output``  grid (N, batch*q_heads); per chunk: the ``c x c`` gated power attention plus the
  query of every state tile; writes ``y`` and the row normaliser ``den``.
* ``dstate``  mirror of ``state`` walking the chunks backwards: the gradient of the loss with
  respect to the state after each chunk.
* ``grads``   three kernels per chunk: the chunk's own attention (grid (N, batch*kv_heads)),
  queries through the state tiles (grid (N, batch*q_heads)) and keys/values through the state
  gradients (grid (N, batch*kv_heads)); their dq, dk, dv and gate sums are added in XLA.

Gates enter as chunk-local cumulative sums ``g`` (float32) and chunk totals ``gt``: queries are
scaled by ``scale * exp(g/2)``, keys by ``exp((gt - g)/2)``, states decay by ``exp(gt)``.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

F32 = jnp.float32
TILE = 16  # block width of the tiled symmetric embedding
HALF = 8  # outer rows per feature tile
NT_FEATS = HALF * TILE  # features per tile


# (num_warps, num_stages) per kernel; the benchmark may retune these before tracing.
KERNEL_CONFIG = {"state": (8, 2), "output": (8, 1), "dstate": (8, 2), "grads_k": (8, 1), "grads_q": (8, 1),
                 "grads_intra": (8, 1)}


def n_tiles(d: int) -> int:
    nb = d // TILE
    return nb * (nb + 1)


def _tile_id(x, y, h):
    return 2 * (y * (y + 1) // 2 + x) + h


def _tiles(nb: int):
    """Static list of (tile id, x, y, h, multiplier) in tile-id order."""
    out = []
    for y in range(nb):
        for x in range(y + 1):
            for h in range(2):
                out.append((_tile_id(x, y, h), x, y, h, 1.0 if x == y else 2.0))
    return out


def _dot(a, b, mm, prec, ta: bool = False, tb: bool = False):
    """a @ b with optional transposes; operands cast to ``mm``, float32 accumulation."""
    dims = (((0 if ta else 1,), (1 if tb else 0,)), ((), ()))
    return jax.lax.dot_general(a.astype(mm), b.astype(mm), dims, precision=prec, preferred_element_type=F32)


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


def _factors(xo, xi, h, mm, prec):
    """The two (c,128) factors of a feature tile; the tile is their elementwise product."""
    return _dot(xo, _sel_outer(h, mm), mm, prec), _dot(xi, _sel_inner(mm), mm, prec)


def _factors_t(xo, xi, h, mm, prec):
    """Transposed (128, c) factors of a feature tile, made directly (no transpose of a big tile):
    ``E^T @ x^T`` as a product whose second operand is the small (c, 16) block."""
    f = jax.lax.broadcasted_iota(jnp.int32, (NT_FEATS, TILE), 0)
    a = jax.lax.broadcasted_iota(jnp.int32, (NT_FEATS, TILE), 1)
    eo = (a == HALF * h + f // TILE).astype(mm)
    ei = (a == f % TILE).astype(mm)
    return _dot(eo, xo, mm, prec, tb=True), _dot(ei, xi, mm, prec, tb=True)


def _phi_transpose(dphi, A, B, h, mm, prec):
    """Gradient w.r.t. the (c,16) blocks xo, xi of the tile A*B given ``dphi`` (c,128)."""
    go = _dot(dphi * B, _sel_outer(h, mm), mm, prec, tb=True)
    gi = _dot(dphi * A, _sel_inner(mm), mm, prec, tb=True)
    return go, gi


# ----------------------------------------------------------------------------------------
# forward: state pass
# ----------------------------------------------------------------------------------------
def state_pass(k, v, g, gt, *, c, n_chunks, value_block, state_dtype, mm, prec, interpret, poison=False):
    """Forward state pass. k, v: (B, Tp, Hk, d); g: (B, Tp, Hk) f32; gt: (B, N, Hk) f32.

    Returns S (B, Hk, N, T, 128, d) in ``state_dtype`` (state before each chunk) and z
    (B, Hk, N, T, 128) float32.
    """
    B, Tp, Hk, d = k.shape
    nb = d // TILE
    nt = n_tiles(d)
    bv = value_block
    nv = d // bv

    def kernel(k_ref, v_ref, g_ref, gt_ref, s_ref, z_ref):
        bh = pl.program_id(0)
        x = pl.program_id(1)
        j = pl.program_id(2)
        y = j // (2 * nv)
        hf = (j // nv) % 2
        vb = j % nv
        b = bh // Hk
        h = bh % Hk

        @pl.when(x <= y)
        def _():
            m = (1 + jnp.minimum(y - x, 1)).astype(F32)  # 1 on the diagonal, 2 off it
            t = _tile_id(x, y, hf)

            def body(n, carry):
                S, z = carry
                s_ref[b, h, n, t, :, pl.ds(vb * bv, bv)] = S.astype(s_ref.dtype)

                @pl.when(vb == 0)
                def _():
                    z_ref[b, h, n, t, :] = z

                rows = pl.ds(n * c, c)
                gg = g_ref[b, rows, h]
                gtn = gt_ref[b, n, h]
                e = jnp.exp((gtn - gg) * 0.5)[:, None]
                ko = k_ref[b, rows, h, pl.ds(x * TILE, TILE)].astype(F32) * e
                ki = k_ref[b, rows, h, pl.ds(y * TILE, TILE)].astype(F32) * e
                At, Bt = _factors_t(ko, ki, hf, mm, prec)
                phit = At * Bt * m  # (128, c): the tile, transposed
                vv = v_ref[b, rows, h, pl.ds(vb * bv, bv)]
                dec = jnp.exp(gtn)
                S = S * dec + _dot(phit, vv, mm, prec)
                z = z * dec + jnp.sum(phit, axis=1)
                return S, z

            jax.lax.fori_loop(0, n_chunks, body, (jnp.zeros((NT_FEATS, bv), F32), jnp.zeros((NT_FEATS,), F32)))

    out_shape = (
        jax.ShapeDtypeStruct((B, Hk, n_chunks, nt, NT_FEATS, d), state_dtype),
        jax.ShapeDtypeStruct((B, Hk, n_chunks, nt, NT_FEATS), F32),
    )
    return _call(kernel, out_shape, (B * Hk, nb, nb * 2 * nv), (k, v, g, gt,), interpret=interpret,
                 params=_params(*KERNEL_CONFIG["state"]), poison=poison)


def _params(num_warps: int, num_stages: int):
    from jax.experimental.pallas import triton as plgpu

    return plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)

def _call(kernel, out_shape, grid, args, *, interpret, params, poison):
    """pallas_call; with ``poison`` the outputs start as NaN (aliased NaN inputs), so any
    element a kernel fails to write shows up as NaN downstream."""
    if not poison:
        return pl.pallas_call(kernel, out_shape=out_shape, grid=grid, interpret=interpret,
                              compiler_params=None if interpret else params)(*args)
    n_in, n_out = len(args), len(out_shape)
    nan_bufs = [jnp.full(o.shape, jnp.nan, o.dtype) for o in out_shape]

    def wrapped(*refs):
        kernel(*refs[:n_in], *refs[n_in + n_out:])

    return pl.pallas_call(wrapped, out_shape=out_shape, grid=grid, interpret=interpret,
                          input_output_aliases={n_in + i: i for i in range(n_out)},
                          compiler_params=None if interpret else params)(*args, *nan_bufs)



# ----------------------------------------------------------------------------------------
# forward: output pass
# ----------------------------------------------------------------------------------------
def output_pass(q, k, v, g, S, z, *, c, scale, mm, prec, prec32, interpret, poison=False):
    """y (B, Tp, Hq, d) and den (B, Tp, Hq), float32."""
    B, Tp, Hq, d = q.shape
    Hk = k.shape[2]
    r = Hq // Hk
    nb = d // TILE
    n_chunks = Tp // c
    tiles = _tiles(nb)

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
        num = _dot(w, vv, F32, prec32)
        den = jnp.sum(w, axis=1)
        ge = (scale * jnp.exp(gg * 0.5))[:, None]
        qb = [q_ref[b, rows, hq, pl.ds(i * TILE, TILE)].astype(F32) * ge for i in range(nb)]
        for t, x, y, hf, _ in tiles:
            A, Bf = _factors(qb[x], qb[y], hf, mm, prec)
            phi = A * Bf
            num = num + _dot(phi, s_ref[b, h, n, t, :, :], mm, prec)
            den = den + jnp.sum(phi * z_ref[b, h, n, t, :][None, :], axis=1)
        den_ok = jnp.where(den == 0, 1.0, den)
        o_ref[b, rows, hq, :] = (num / den_ok[:, None]).astype(o_ref.dtype)
        den_ref[b, rows, hq] = den

    out_shape = (jax.ShapeDtypeStruct((B, Tp, Hq, d), F32), jax.ShapeDtypeStruct((B, Tp, Hq), F32))
    return _call(kernel, out_shape, (n_chunks, B * Hq), (q, k, v, g, S, z,), interpret=interpret,
                 params=_params(*KERNEL_CONFIG["output"]), poison=poison)


# ----------------------------------------------------------------------------------------
# backward: dstate pass (reverse scan over chunks)
# ----------------------------------------------------------------------------------------
def dstate_pass(q, dn, dd, g, gt, *, c, scale, value_block, state_dtype, mm, prec, interpret, poison=False):
    """dS (B, Hk, N, T, 128, d) in ``state_dtype``: gradient w.r.t. the state *after* each chunk; dz likewise.

    q: (B, Tp, Hq, d); dn: (B, Tp, Hq, d) float32 = dL/dnum; dd: (B, Tp, Hq) float32 = dL/dden.
    """
    B, Tp, Hq, d = q.shape
    Hk = g.shape[2]
    r = Hq // Hk
    nb = d // TILE
    nt = n_tiles(d)
    n_chunks = Tp // c
    bv = value_block
    nv = d // bv

    def kernel(q_ref, dn_ref, dd_ref, g_ref, gt_ref, ds_ref, dz_ref):
        bh = pl.program_id(0)
        x = pl.program_id(1)
        j = pl.program_id(2)
        y = j // (2 * nv)
        hf = (j // nv) % 2
        vb = j % nv
        b = bh // Hk
        h = bh % Hk

        @pl.when(x <= y)
        def _():
            t = _tile_id(x, y, hf)

            def body(i, carry):
                dS, dz = carry
                n = n_chunks - 1 - i
                ds_ref[b, h, n, t, :, pl.ds(vb * bv, bv)] = dS.astype(ds_ref.dtype)

                @pl.when(vb == 0)
                def _():
                    dz_ref[b, h, n, t, :] = dz

                rows = pl.ds(n * c, c)
                gg = g_ref[b, rows, h]
                gtn = gt_ref[b, n, h]
                ge = (scale * jnp.exp(gg * 0.5))[:, None]
                dec = jnp.exp(gtn)
                dS = dS * dec
                dz = dz * dec
                for j in range(r):
                    hq = h * r + j
                    qo = q_ref[b, rows, hq, pl.ds(x * TILE, TILE)].astype(F32) * ge
                    qi = q_ref[b, rows, hq, pl.ds(y * TILE, TILE)].astype(F32) * ge
                    At, Bt = _factors_t(qo, qi, hf, mm, prec)
                    phit = At * Bt  # (128, c)
                    dnv = dn_ref[b, rows, hq, pl.ds(vb * bv, bv)]
                    dS = dS + _dot(phit, dnv, mm, prec)
                    dz = dz + jnp.sum(phit * dd_ref[b, rows, hq][None, :], axis=1)
                return dS, dz

            jax.lax.fori_loop(0, n_chunks, body, (jnp.zeros((NT_FEATS, bv), F32), jnp.zeros((NT_FEATS,), F32)))

    out_shape = (
        jax.ShapeDtypeStruct((B, Hk, n_chunks, nt, NT_FEATS, d), state_dtype),
        jax.ShapeDtypeStruct((B, Hk, n_chunks, nt, NT_FEATS), F32),
    )
    return _call(kernel, out_shape, (B * Hk, nb, nb * 2 * nv), (q, dn, dd, g, gt,), interpret=interpret,
                 params=_params(*KERNEL_CONFIG["dstate"]), poison=poison)


# ----------------------------------------------------------------------------------------
# backward: per-chunk gradients
# ----------------------------------------------------------------------------------------
def grads_key_state(k, v, g, gt, dS, dz, *, c, mm, prec, interpret, poison=False):
    """Keys/values through the state after their chunk: dk, dv (B,Tp,Hk,d) and gk (B,Tp,Hk), float32.

    ``gk_j`` is the part of ``sum_i dL/dw_ij w_ij`` (key j as sender) from later chunks.
    """
    B, Tp, Hk, d = k.shape
    nb = d // TILE
    n_chunks = Tp // c
    tiles = _tiles(nb)

    def kernel(k_ref, v_ref, g_ref, gt_ref, ds_ref, dz_ref, dk_ref, dv_ref, gk_ref):
        n = pl.program_id(0)
        bh = pl.program_id(1)
        b = bh // Hk
        h = bh % Hk
        rows = pl.ds(n * c, c)
        gg = g_ref[b, rows, h]
        gtn = gt_ref[b, n, h]
        vv = v_ref[b, rows, h, :]
        ek = jnp.exp((gtn - gg) * 0.5)[:, None]
        kh = [k_ref[b, rows, h, pl.ds(i * TILE, TILE)].astype(F32) * ek for i in range(nb)]
        dkh = [jnp.zeros((c, TILE), F32) for _ in range(nb)]
        dv = jnp.zeros((c, d), F32)
        gk = jnp.zeros((c,), F32)
        for t, x, y, hf, m in tiles:
            A, Bf = _factors(kh[x], kh[y], hf, mm, prec)
            phik = A * Bf
            dSt = ds_ref[b, h, n, t, :, :]
            dv = dv + _dot(phik * m, dSt, mm, prec)
            dphi = _dot(vv, dSt, mm, prec, tb=True) + dz_ref[b, h, n, t, :][None, :]
            gk = gk + jnp.sum(phik * dphi, axis=1) * m
            go, gi = _phi_transpose(dphi * m, A, Bf, hf, mm, prec)
            dkh[x] = dkh[x] + go
            dkh[y] = dkh[y] + gi
        for i in range(nb):
            dk_ref[b, rows, h, pl.ds(i * TILE, TILE)] = dkh[i] * ek
        dv_ref[b, rows, h, :] = dv
        gk_ref[b, rows, h] = gk

    out_shape = (
        jax.ShapeDtypeStruct((B, Tp, Hk, d), F32),
        jax.ShapeDtypeStruct((B, Tp, Hk, d), F32),
        jax.ShapeDtypeStruct((B, Tp, Hk), F32),
    )
    return _call(kernel, out_shape, (n_chunks, B * Hk), (k, v, g, gt, dS, dz), interpret=interpret,
                 params=_params(*KERNEL_CONFIG["grads_k"]), poison=poison)


def grads_query_state(q, g, S, z, dn, dd, *, c, scale, mm, prec, interpret, poison=False):
    """Queries through the state before their chunk: dq (B,Tp,Hq,d) and gq (B,Tp,Hq), float32.

    ``gq_i`` is the part of ``sum_j dL/dw_ij w_ij`` (query i as receiver) from earlier chunks.
    """
    B, Tp, Hq, d = q.shape
    Hk = g.shape[2]
    r = Hq // Hk
    nb = d // TILE
    n_chunks = Tp // c
    tiles = _tiles(nb)

    def kernel(q_ref, g_ref, s_ref, z_ref, dn_ref, dd_ref, dq_ref, gq_ref):
        n = pl.program_id(0)
        bh = pl.program_id(1)
        b = bh // Hq
        hq = bh % Hq
        h = hq // r
        rows = pl.ds(n * c, c)
        gg = g_ref[b, rows, h]
        ge = (scale * jnp.exp(gg * 0.5))[:, None]
        qh = [q_ref[b, rows, hq, pl.ds(i * TILE, TILE)].astype(F32) * ge for i in range(nb)]
        dnn = dn_ref[b, rows, hq, :]
        ddd = dd_ref[b, rows, hq]
        dqh = [jnp.zeros((c, TILE), F32) for _ in range(nb)]
        gq = jnp.zeros((c,), F32)
        for t, x, y, hf, _ in tiles:
            dphi = _dot(dnn, s_ref[b, h, n, t, :, :], mm, prec, tb=True) + ddd[:, None] * z_ref[b, h, n, t, :][None, :]
            A, Bf = _factors(qh[x], qh[y], hf, mm, prec)
            gq = gq + jnp.sum(A * Bf * dphi, axis=1)
            go, gi = _phi_transpose(dphi, A, Bf, hf, mm, prec)
            dqh[x] = dqh[x] + go
            dqh[y] = dqh[y] + gi
        for i in range(nb):
            dq_ref[b, rows, hq, pl.ds(i * TILE, TILE)] = dqh[i] * ge
        gq_ref[b, rows, hq] = gq

    out_shape = (jax.ShapeDtypeStruct((B, Tp, Hq, d), F32), jax.ShapeDtypeStruct((B, Tp, Hq), F32))
    return _call(kernel, out_shape, (n_chunks, B * Hq), (q, g, S, z, dn, dd), interpret=interpret,
                 params=_params(*KERNEL_CONFIG["grads_q"]), poison=poison)


def grads_intra(q, k, v, g, dn, dd, *, c, scale, mm, prec, prec32, interpret, poison=False):
    """The chunk's own c x c attention: dq (B,Tp,Hq,d), dk, dv (B,Tp,Hk,d), gq (B,Tp,Hq), gk (B,Tp,Hk)."""
    B, Tp, Hq, d = q.shape
    Hk = k.shape[2]
    r = Hq // Hk
    n_chunks = Tp // c

    def kernel(q_ref, k_ref, v_ref, g_ref, dn_ref, dd_ref, dq_ref, dk_ref, dv_ref, gq_ref, gk_ref):
        n = pl.program_id(0)
        bh = pl.program_id(1)
        b = bh // Hk
        h = bh % Hk
        rows = pl.ds(n * c, c)
        gg = g_ref[b, rows, h]
        kk = k_ref[b, rows, h, :]
        vv = v_ref[b, rows, h, :]
        ri = jax.lax.broadcasted_iota(jnp.int32, (c, c), 0)
        ci = jax.lax.broadcasted_iota(jnp.int32, (c, c), 1)
        E = jnp.exp(jnp.where(ri >= ci, gg[:, None] - gg[None, :], -jnp.inf))
        Et = jnp.exp(jnp.where(ci >= ri, gg[None, :] - gg[:, None], -jnp.inf))  # E transposed
        dk = jnp.zeros((c, d), F32)
        dv = jnp.zeros((c, d), F32)
        gk = jnp.zeros((c,), F32)
        for j in range(r):
            hq = h * r + j
            qq = q_ref[b, rows, hq, :]
            dnn = dn_ref[b, rows, hq, :]
            ddd = dd_ref[b, rows, hq]
            # query side (rows = queries)
            sc = _dot(qq, kk, mm, prec, tb=True) * scale
            w = sc * sc * E
            dW = _dot(dnn, vv, F32, prec32, tb=True) + ddd[:, None]
            gq_ref[b, rows, hq] = jnp.sum(w * dW, axis=1)
            da = dW * (2.0 * scale) * sc * E
            dq_ref[b, rows, hq, :] = _dot(da, kk, mm, prec)
            # key side, formed transposed (rows = keys) so no matrix needs transposing
            sct = _dot(kk, qq, mm, prec, tb=True) * scale
            wt = sct * sct * Et
            dWt = _dot(vv, dnn, F32, prec32, tb=True) + ddd[None, :]
            gk = gk + jnp.sum(wt * dWt, axis=1)
            dv = dv + _dot(wt, dnn, mm, prec)
            dk = dk + _dot(dWt * (2.0 * scale) * sct * Et, qq, mm, prec)
        dk_ref[b, rows, h, :] = dk
        dv_ref[b, rows, h, :] = dv
        gk_ref[b, rows, h] = gk

    out_shape = (
        jax.ShapeDtypeStruct((B, Tp, Hq, d), F32),
        jax.ShapeDtypeStruct((B, Tp, Hk, d), F32),
        jax.ShapeDtypeStruct((B, Tp, Hk, d), F32),
        jax.ShapeDtypeStruct((B, Tp, Hq), F32),
        jax.ShapeDtypeStruct((B, Tp, Hk), F32),
    )
    return _call(kernel, out_shape, (n_chunks, B * Hk), (q, k, v, g, dn, dd), interpret=interpret,
                 params=_params(*KERNEL_CONFIG["grads_intra"]), poison=poison)


def grads_pass(q, k, v, g, gt, S, z, dS, dz, dn, dd, *, c, scale, mm, prec, prec32, interpret, poison=False):
    """dq (B,Tp,Hq,d), dk, dv (B,Tp,Hk,d), gq (B,Tp,Hq) and gk (B,Tp,Hk), all float32: the sums of
    the three gradient kernels (chunk-internal attention, queries via states, keys via states).

    ``gq_i = sum_j dL/dw_ij w_ij`` (query i as receiver) and ``gk_j = sum_i dL/dw_ij w_ij`` (key j
    as sender, summed over the heads sharing it); ``dL/dG = sum_heads gq - gk`` (see fused.py).
    """
    kw = dict(c=c, mm=mm, prec=prec, interpret=interpret, poison=poison)
    dq_i, dk_i, dv_i, gq_i, gk_i = grads_intra(q, k, v, g, dn, dd, scale=scale, prec32=prec32, **kw)
    dq_s, gq_s = grads_query_state(q, g, S, z, dn, dd, scale=scale, **kw)
    dk_s, dv_s, gk_s = grads_key_state(k, v, g, gt, dS, dz, **kw)
    return dq_i + dq_s, dk_i + dk_s, dv_i + dv_s, gq_i + gq_s, gk_i + gk_s
