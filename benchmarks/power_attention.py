"""Benchmark of symmetric power attention on one GPU (issue 4).

Times, side by side and in one run, for bf16, 8 heads, head_dim 64, degree 2, chunk 128,
gated, 65536 tokens per call at (batch, time) in (64,1024), (16,4096), (4,16384), (1,65536):

  * ours, fused Pallas kernels       accumbens.sequence.power_attention(impl="fused")
  * ours, chunked plain-JAX scan     accumbens.sequence.power_attention(impl="chunked")
  * cuDNN flash attention, causal    jax.nn.dot_product_attention(implementation="cudnn")
  * the power-attention package's Triton power_full (PyTorch), if importable

forward and forward+backward (gradients of all inputs), medians after warm-up, inputs
rotated among three sets so repeated calls do not run from cache. Before timing it checks
that the package and our kernel compute the same function (relative error of each against
our float64 reference on a small gated case). Prints a table and writes
benchmarks/results/power_attention.json (or --out).

Operation counts (per token and head, D = C(d+1, 2) = 2080, c = chunk):
  power attention forward  = 4 D (d+1) + 2 c d     (state update + state query incl. the
                              normaliser column, plus the causal half of the c x c attention)
  power attention fwd+bwd  = 3 x forward
  softmax attention forward = 2 t d (causal half of QK^T and PV), fwd+bwd = 3.5 x forward
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback

import numpy as np

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# power_attention package; drop that entry (the repository root must be importable instead).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
_ROOT = os.path.dirname(_HERE)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

SHAPES = [(64, 1024), (16, 4096), (4, 16384), (1, 65536)]
H, DHEAD, DEG, CHUNK = 8, 64, 2, 128


def power_flops(b, t, h=H, d=DHEAD, c=CHUNK):
    D = math.comb(d + 1, 2)
    fwd = b * t * h * (4 * D * (d + 1) + 2 * c * d)
    return fwd, 3 * fwd


def softmax_flops(b, t, h=H, d=DHEAD):
    fwd = b * h * 2 * t * t * d
    return fwd, 3.5 * fwd


def median_time_jax(fn, arg_sets, reps):
    import jax

    out = fn(*arg_sets[0])
    jax.block_until_ready(out)
    for i in range(3):
        jax.block_until_ready(fn(*arg_sets[i % len(arg_sets)]))
    times = []
    for i in range(reps):
        a = arg_sets[i % len(arg_sets)]
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*a))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def jax_inputs(b, t, seed, gated=True):
    import jax
    import jax.numpy as jnp

    ks = jax.random.split(jax.random.PRNGKey(seed), 5)
    q = jax.random.normal(ks[0], (b, t, H, DHEAD), jnp.bfloat16)
    k = jax.random.normal(ks[1], (b, t, H, DHEAD), jnp.bfloat16)
    v = jax.random.normal(ks[2], (b, t, H, DHEAD), jnp.bfloat16)
    lg = jax.nn.log_sigmoid(jax.random.normal(ks[3], (b, t, H), jnp.float32)) if gated else None
    ct = jax.random.normal(ks[4], (b, t, H, DHEAD), jnp.bfloat16)
    return q, k, v, lg, ct


def bench_ours(impl, b, t, reps, want_bwd=True):
    import jax
    import jax.numpy as jnp

    from accumbens.sequence import power_attention

    sets = [jax_inputs(b, t, s) for s in range(3)]
    f = jax.jit(lambda q, k, v, lg: power_attention(q, k, v, lg, degree=DEG, chunk_size=CHUNK, impl=impl))

    def loss(q, k, v, lg, ct):
        y = power_attention(q, k, v, lg, degree=DEG, chunk_size=CHUNK, impl=impl)
        return jnp.sum(y.astype(jnp.float32) * ct.astype(jnp.float32))

    g = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    fwd = median_time_jax(f, [s[:4] for s in sets], reps)
    bwd = median_time_jax(g, sets, reps) if want_bwd else None
    return fwd, bwd


def bench_cudnn(b, t, reps):
    import jax
    import jax.numpy as jnp

    sets = [jax_inputs(b, t, s, gated=False) for s in range(3)]
    f = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn"))

    def loss(q, k, v, ct):
        y = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
        return jnp.sum(y.astype(jnp.float32) * ct.astype(jnp.float32))

    g = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    fwd = median_time_jax(f, [(s[0], s[1], s[2]) for s in sets], reps)
    bwd = median_time_jax(g, [(s[0], s[1], s[2], s[4]) for s in sets], reps)
    return fwd, bwd


def package_inputs(b, t, seed):
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda *s: torch.randn(*s, device="cuda", generator=g, dtype=torch.bfloat16)
    q, k, v = mk(b, t, H, DHEAD), mk(b, t, H, DHEAD), mk(b, t, H, DHEAD)
    lg = torch.nn.functional.logsigmoid(torch.randn(b, t, H, device="cuda", generator=g, dtype=torch.float32))
    ct = mk(b, t, H, DHEAD)
    return q, k, v, lg, ct


def bench_package(b, t, reps):
    import torch
    import triton
    from power_attention import power_full

    sets = [package_inputs(b, t, s) for s in range(3)]
    state = {"i": 0}

    def fwd():
        q, k, v, lg, _ = sets[state["i"] % 3]
        state["i"] += 1
        with torch.no_grad():
            return power_full(q, k, v, lg, deg=DEG, chunk_size=CHUNK)

    grads_sets = [tuple(x.clone().requires_grad_(True) for x in s[:4]) + (s[4],) for s in sets]

    def fwdbwd():
        q, k, v, lg, ct = grads_sets[state["i"] % 3]
        state["i"] += 1
        for x in (q, k, v, lg):
            x.grad = None
        y = power_full(q, k, v, lg, deg=DEG, chunk_size=CHUNK)
        y.backward(ct)

    tf = triton.testing.do_bench(fwd, warmup=50, rep=300, return_mode="median")
    tb = triton.testing.do_bench(fwdbwd, warmup=50, rep=300, return_mode="median")
    torch.cuda.synchronize()
    return tf, tb


def _x64():
    import jax

    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


def crosscheck(log):
    """Package and our fused kernel against our float64 reference on one small gated case."""
    import jax
    import jax.numpy as jnp

    from accumbens.sequence import power_attention

    b, t, h, d = 2, 1024, 4, 64
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((b, t, h, d)).astype(np.float32) for _ in range(3))
    lg = -np.logaddexp(0, -rng.standard_normal((b, t, h))).astype(np.float32)
    bf = lambda x: jnp.asarray(x, jnp.bfloat16)
    res = {}
    with _x64():
        qb, kb, vb = (np.asarray(bf(x).astype(jnp.float32)) for x in (q, k, v))  # what bf16 callers see
        ref = np.asarray(power_attention(*(jnp.asarray(x, jnp.float64) for x in (qb, kb, vb, lg)), impl="reference"))
    ours = np.asarray(power_attention(bf(q), bf(k), bf(v), jnp.asarray(lg), chunk_size=CHUNK, impl="fused").astype(jnp.float32))
    err = lambda a: float(np.linalg.norm(a - ref) / np.linalg.norm(ref))
    res["ours_fused_vs_f64_reference"] = err(ours)
    try:
        import torch
        from power_attention import power_full

        tq, tk, tv = (torch.tensor(x, device="cuda").to(torch.bfloat16) for x in (q, k, v))
        tl = torch.tensor(lg, device="cuda")
        pk = power_full(tq, tk, tv, tl, deg=2, chunk_size=CHUNK).float().cpu().numpy()
        res["package_power_full_vs_f64_reference"] = err(pk)
        res["ours_fused_vs_package"] = float(np.linalg.norm(ours - pk) / np.linalg.norm(pk))
        # f32 inputs through the package's quadratic form too (chunk_size=None)
        tq32, tk32, tv32 = (torch.tensor(x, device="cuda") for x in (qb, kb, vb))
        pq = power_full(tq32, tk32, tv32, tl, deg=2, chunk_size=None).float().cpu().numpy()
        res["package_quadratic_f32_vs_f64_reference"] = err(pq)
    except Exception as e:  # package missing or failing: record why
        res["package_error"] = repr(e)
    log(f"cross-check (b={b}, t={t}, h={h}, d={d}, gated, bf16): {json.dumps(res)}")
    return res


def breakdown(b, t, reps, log):
    """Time each fused kernel alone (state, output, dstate, grads) at one shape."""
    import jax
    import jax.numpy as jnp

    from accumbens.sequence import fused as fz
    from accumbens.sequence import fused_kernels as fk

    q, k, v, lg, ct = jax_inputs(b, t, 0)
    c = CHUNK
    n = t // c
    mm, prec = fz._config(q.dtype, False)
    s = 1.0 / math.sqrt(DHEAD)
    vb = 32 if b * H * fk.n_tiles(DHEAD) < 264 else DHEAD
    g, gt = jax.jit(lambda lg: fz._prepare_gates(lg, c))(lg)
    st = jax.jit(lambda k, v, g, gt: fk.state_pass(k, v, g, gt, c=c, n_chunks=n, value_block=vb, state_dtype=mm,
                                                    mm=mm, prec=prec, interpret=False))
    S, z = st(k, v, g, gt)
    out = jax.jit(lambda q, k, v, g, S, z: fk.output_pass(q, k, v, g, S, z, c=c, scale=s, mm=mm, prec=prec, prec32=fz._prec32(False),
                                                           interpret=False))
    y, den = out(q, k, v, g, S, z)
    dn = ct.astype(jnp.float32) / den[..., None]
    dd = -jnp.sum(ct.astype(jnp.float32) * y.astype(jnp.float32), -1) / den
    dst = jax.jit(lambda q, dn, dd, g, gt: fk.dstate_pass(q, dn, dd, g, gt, c=c, scale=s, value_block=vb,
                                                           state_dtype=mm, mm=mm, prec=prec, interpret=False))
    dS, dz = dst(q, dn, dd, g, gt)
    gr = jax.jit(lambda *a: fk.grads_pass(*a, c=c, scale=s, mm=mm, prec=prec, prec32=fz._prec32(False),
                                          interpret=False))
    res = {
        "state": median_time_jax(st, [(k, v, g, gt)], reps),
        "output": median_time_jax(out, [(q, k, v, g, S, z)], reps),
        "dstate": median_time_jax(dst, [(q, dn, dd, g, gt)], reps),
        "grads": median_time_jax(gr, [(q, k, v, g, gt, S, z, dS, dz, dn, dd)], reps),
        "state_bytes_per_pass": int(S.size * S.dtype.itemsize + z.size * 4),
    }
    log(f"fused kernel breakdown at {b}x{t} (ms): {json.dumps(res)}")
    return res


def diag(b, t, log, state_only=False):
    """Compile time and one run time of each fused kernel at one shape (progress logged as it goes)."""
    import jax
    import jax.numpy as jnp

    from accumbens.sequence import fused as fz
    from accumbens.sequence import fused_kernels as fk

    q, k, v, lg, ct = jax_inputs(b, t, 0)
    c = CHUNK
    n = t // c
    mm, prec = fz._config(q.dtype, False)
    s = 1.0 / math.sqrt(DHEAD)
    vb = 32 if b * H * fk.n_tiles(DHEAD) < 264 else DHEAD
    g, gt = jax.jit(lambda lg: fz._prepare_gates(lg, c))(lg)

    def go(name, f, *a):
        t0 = time.perf_counter()
        comp = jax.jit(f).lower(*a).compile()
        t1 = time.perf_counter()
        out = jax.block_until_ready(comp(*a))
        t2 = time.perf_counter()
        out = jax.block_until_ready(comp(*a))
        t3 = time.perf_counter()
        log(f"diag {b}x{t} {name}: compile {t1 - t0:.1f}s first run {t2 - t1:.3f}s second run {(t3 - t2) * 1e3:.2f}ms")
        return out

    for cfg in [(8, 2)] if state_only else [(8, 2), (8, 1), (4, 1), (4, 2)]:
        fk.KERNEL_CONFIG["state"] = cfg
        fk.KERNEL_CONFIG["dstate"] = cfg
        S, z = go(f"state{cfg}", lambda k, v, g, gt: fk.state_pass(k, v, g, gt, c=c, n_chunks=n, value_block=vb,
                                                                     state_dtype=mm, mm=mm, prec=prec, interpret=False),
                  k, v, g, gt)
    y, den = go("output", lambda q, k, v, g, S, z: fk.output_pass(q, k, v, g, S, z, c=c, scale=s, mm=mm, prec=prec, prec32=fz._prec32(False),
                                                                  interpret=False), q, k, v, g, S, z)
    dn = ct.astype(jnp.float32) / den[..., None]
    dd = -jnp.sum(ct.astype(jnp.float32) * y.astype(jnp.float32), -1) / den
    if state_only:
        dn = ct.astype(jnp.float32)
        dd = jnp.sum(dn, -1)
        go("dstate(8, 2)", lambda q, dn, dd, g, gt: fk.dstate_pass(
            q, dn, dd, g, gt, c=c, scale=s, value_block=vb, state_dtype=mm, mm=mm, prec=prec, interpret=False),
            q, dn, dd, g, gt)
        return
    for cfg in [(8, 2), (4, 1)]:
        fk.KERNEL_CONFIG["dstate"] = cfg
        dS, dz = go(f"dstate{cfg}", lambda q, dn, dd, g, gt: fk.dstate_pass(
            q, dn, dd, g, gt, c=c, scale=s, value_block=vb, state_dtype=mm, mm=mm, prec=prec, interpret=False),
            q, dn, dd, g, gt)
    kw = dict(c=c, mm=mm, prec=prec, interpret=False)
    go("grads_intra", lambda q, k, v, g, dn, dd: fk.grads_intra(q, k, v, g, dn, dd, scale=s, prec32=fz._prec32(False),
                                                                **kw), q, k, v, g, dn, dd)
    go("grads_q", lambda q, g, S, z, dn, dd: fk.grads_query_state(q, g, S, z, dn, dd, scale=s, **kw), q, g, S, z, dn, dd)
    go("grads_k", lambda k, v, g, gt, dS, dz: fk.grads_key_state(k, v, g, gt, dS, dz, **kw), k, v, g, gt, dS, dz)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "power_attention.json"))
    ap.add_argument("--skip", default="", help="comma list of: fused,chunked,cudnn,package,crosscheck,breakdown")
    ap.add_argument("--shapes", default="", help="e.g. 64x1024,1x65536")
    ap.add_argument("--diag", default="", help="BxT: compile/run time of each fused kernel, then exit")
    ap.add_argument("--diag-state-only", action="store_true")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")] if args.shapes else SHAPES
    import jax

    def log(*a):
        print(*a, flush=True)

    device = str(jax.devices()[0].device_kind) if jax.devices() else "?"
    log(f"jax {jax.__version__} on {device}")
    result = {"device": device, "jax": jax.__version__, "config": dict(heads=H, head_dim=DHEAD, degree=DEG, chunk=CHUNK,
              dtype="bfloat16", gated=True), "rows": []}
    if args.diag:
        b, t = (int(x) for x in args.diag.split("x"))
        diag(b, t, log, state_only=args.diag_state_only)
        return 0
    if "crosscheck" not in skip:
        try:
            result["crosscheck"] = crosscheck(log)
        except Exception:
            log(traceback.format_exc())
    if "breakdown" not in skip:
        for b, t in [(1, 65536), (64, 1024)]:
            try:
                result.setdefault("breakdown", {})[f"{b}x{t}"] = breakdown(b, t, args.reps, log)
            except Exception:
                log(traceback.format_exc()[-3000:])
    methods = [("fused", lambda b, t: bench_ours("fused", b, t, args.reps)),
               ("chunked", lambda b, t: bench_ours("chunked", b, t, max(5, args.reps // 4))),
               ("cudnn", lambda b, t: bench_cudnn(b, t, args.reps)),
               ("package", lambda b, t: bench_package(b, t, args.reps))]
    for b, t in shapes:
        pf, pfb = power_flops(b, t)
        sf, sfb = softmax_flops(b, t)
        for name, fn in methods:
            if name in skip:
                continue
            row = dict(method=name, batch=b, time=t)
            try:
                fwd, fwdbwd = fn(b, t)
                row.update(fwd_ms=fwd, fwdbwd_ms=fwdbwd)
                flops = (sf, sfb) if name == "cudnn" else (pf, pfb)
                row.update(fwd_tflops=flops[0] / fwd / 1e9, fwdbwd_tflops=(flops[1] / fwdbwd / 1e9) if fwdbwd else None)
            except Exception as e:
                row["error"] = repr(e)[:500]
                log(traceback.format_exc()[-3000:])
            result["rows"].append(row)
            log(json.dumps(row))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    log("\n| method | batch x time | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |")
    log("|---|---|---|---|---|---|")
    fmt = lambda x, f="{:.2f}": "-" if x is None else f.format(x)
    for r in result["rows"]:
        if "error" in r:
            log(f"| {r['method']} | {r['batch']}x{r['time']} | error: {r['error'][:60]} | | | |")
        else:
            log(f"| {r['method']} | {r['batch']}x{r['time']} | {fmt(r['fwd_ms'])} | {fmt(r['fwd_tflops'], '{:.0f}')} | "
                f"{fmt(r['fwdbwd_ms'])} | {fmt(r['fwdbwd_tflops'], '{:.0f}')} |")


if __name__ == "__main__":
    sys.exit(main())
