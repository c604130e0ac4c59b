"""Benchmark of symmetric power attention on one GPU (issue 4).

Times, side by side and in one run, for bf16, 8 heads, head_dim 64, degree 2, chunk 128,
gated, 65536 tokens per call at (batch, time) in (64,1024), (16,4096), (4,16384), (1,65536):

  * ours, fused Pallas kernels       accumbens.sequence.power_attention(impl="fused")
  * ours, chunked plain-JAX scan     accumbens.sequence.power_attention(impl="chunked")
  * cuDNN flash attention, causal    jax.nn.dot_product_attention(implementation="cudnn")
  * the power-attention package's Triton power_full (PyTorch), if importable

forward and forward+backward (gradients of all inputs), medians after warm-up, inputs
rotated among three sets so repeated calls do not run from cache; for the fused kernels also
the first call's time (compile + run). After the table rows: a per-kernel breakdown of the
fused kernels (compile and median time of each) and a cross-check that the package and our
kernel compute the same function (relative error of each against our float64 reference on a
small gated case). Prints a table and writes benchmarks/results/power_attention.json (or
--out), rewritten after every row.

Choose what runs with --impls (fused, fused_xla = fused with the XLA chunk prefix, chunked,
cudnn, package), --skip breakdown,crosscheck, --shapes, and bound the run with --deadline_s
(no new measurement starts once another as long as the longest so far would pass it). The
fused-only device run with the chunked form as the in-run baseline:

  python benchmarks/power_attention.py --impls fused,chunked --skip crosscheck \
      --breakdown_shapes 1x65536 --deadline_s 420 --out $OUT/power_attention.json

It starts with the fused kernels' correctness checks on the GPU (--skip check to leave out):
forward and gradients against our float64 reference, outputs poisoned, fresh inputs (the
checks of tests/sequence/test_power_attention_gpu.py, without needing pytest).

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

from accumbens.atomic import atomic_write  # noqa: E402

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


def correctness(log, cases=None):
    """Fused kernels vs our float64 reference, forward and the gradients of a random linear loss
    (q, k, v, log_g), outputs poisoned (NaN) before each kernel, fresh inputs per case: the
    checks of tests/sequence/test_power_attention_gpu.py (issue 4: < 1e-2 in bf16, < 1e-4 in
    float32) without needing pytest on the device. Returns a list of records."""
    import jax
    import jax.numpy as jnp

    from accumbens.sequence.fused import power_attention_fused
    from accumbens.sequence.reference import power_attention_reference

    if cases is None and jax.default_backend() != "gpu":  # interpret mode: a tiny smoke test
        cases = [((1, 40, 2, 1, 32, 16), "bfloat16", "pallas"), ((1, 40, 2, 1, 32, 16), "float32", "xla")]
    cases = cases or [((2, 512, 4, 4, 64, 128), "bfloat16", "pallas"), ((2, 512, 4, 4, 64, 128), "float32", "pallas"),
                      ((1, 1000, 4, 2, 64, 128), "bfloat16", "xla")]
    seed = int(time.time())
    rng = np.random.default_rng(seed)
    out = []
    for (b, t, hq, hk, d, c), dt, prefix in cases:
        dtype = jnp.dtype(dt)
        q, k, v = (jnp.asarray(rng.standard_normal((b, t, h, d)), dtype) for h in (hq, hk, hk))
        lg = jnp.asarray(-np.logaddexp(0.0, -rng.standard_normal((b, t, hk))), jnp.float32)
        ct = jnp.asarray(rng.standard_normal((b, t, hq, d)), jnp.float32)
        fn = lambda q, k, v, lg: power_attention_fused(q, k, v, lg, chunk_size=c, prefix=prefix, poison=True)
        loss = lambda f: (lambda q, k, v, lg: jnp.sum(f(q, k, v, lg).astype(ct.dtype) * ct))
        rec = dict(shape=[b, t, hq, hk, d, c], dtype=dt, prefix=prefix, seed=seed)
        t0 = time.perf_counter()
        try:
            y = jax.jit(fn)(q, k, v, lg)
            grads = jax.jit(jax.grad(loss(fn), argnums=(0, 1, 2, 3)))(q, k, v, lg)
            rec["compile_and_run_s"] = time.perf_counter() - t0
            with _x64():
                a64 = [jnp.asarray(np.asarray(x, np.float32), jnp.float64) for x in (q, k, v, lg)]
                ct64 = jnp.asarray(np.asarray(ct), jnp.float64)
                y0 = power_attention_reference(*a64)
                g0 = jax.grad(lambda *a: jnp.sum(power_attention_reference(*a) * ct64), argnums=(0, 1, 2, 3))(*a64)
                err = lambda a, r: float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(r))
                                         / np.linalg.norm(np.asarray(r)))
                rec["y"] = err(np.asarray(y, np.float32), y0)
                for name, g1, gr in zip(("dq", "dk", "dv", "dlog_g"), grads, g0):
                    rec[name] = err(np.asarray(g1, np.float32), gr)
            rec["nan"] = bool(np.isnan(np.asarray(y, np.float32)).any()
                              or any(np.isnan(np.asarray(g, np.float32)).any() for g in grads))
            tol = 1e-2 if dt == "bfloat16" else 1e-4
            rec["pass"] = (not rec["nan"]) and all(rec[k_] < tol for k_ in ("y", "dq", "dk", "dv", "dlog_g"))
        except Exception as e:
            rec["error"] = repr(e)[:500]
            log(traceback.format_exc()[-3000:])
        log(f"check: {json.dumps(rec)}")
        out.append(rec)
    return out


def ptxas_report(triton_dir, b, t, log):
    """Registers and spills of every fused kernel (forward and backward) at one shape, without a
    GPU: JAX lowers the gradient for "cuda" (cross-platform), each kernel's Triton IR is caught
    on its way out of the Pallas lowering, compiled for sm_90a by a Triton package found in
    ``triton_dir`` (``pip download --no-deps triton==3.5.1``, installed with ``--target``) with
    the kernel's KERNEL_CONFIG, and its PTX passed to the bundled ``ptxas -v``. Indicative only:
    the device's jaxlib compiles with its own Triton version."""
    import re
    import subprocess
    import tempfile

    import jax
    import jax.numpy as jnp
    from jax._src.pallas.triton import lowering

    from accumbens.sequence import fused_kernels as fk
    from accumbens.sequence.fused import power_attention_fused

    sys.path.insert(0, triton_dir)
    from triton.backends.compiler import GPUTarget
    from triton.compiler import compile as triton_compile

    ptxas = os.path.join(triton_dir, "triton", "backends", "nvidia", "bin", "ptxas")
    caught = []
    original = lowering.lower_jaxpr_to_triton_module

    def catch(jaxpr, *a, **k):
        res = original(jaxpr, *a, **k)
        caught.append((jaxpr.debug_info.func_name, res.module.operation.get_asm(enable_debug_info=False)))
        return res

    lowering.lower_jaxpr_to_triton_module = catch
    try:
        sds = jax.ShapeDtypeStruct
        args = (sds((b, t, H, DHEAD), jnp.bfloat16),) * 3 + (sds((b, t, H), jnp.float32),)
        f = lambda q, k, v, lg: power_attention_fused(q, k, v, lg, chunk_size=CHUNK, interpret=False)
        g = jax.grad(lambda *a: jnp.sum(f(*a).astype(jnp.float32)), argnums=(0, 1, 2, 3))
        jax.jit(g).trace(*args).lower(lowering_platforms=("cuda",))
    finally:
        lowering.lower_jaxpr_to_triton_module = original
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, text) in enumerate(caught):
            key = name if name != "prefix" else ("prefix_reverse" if "prefix_forward" in out else "prefix_forward")
            warps, stages = fk.KERNEL_CONFIG.get(name, (8, 1))
            path = os.path.join(tmp, f"{i}.ttir")
            with open(path, "w") as fh:
                fh.write(text)
            kern = triton_compile(path, target=GPUTarget("cuda", 90, 32),
                                  options=dict(num_warps=warps, num_stages=stages))
            ptx_path = os.path.join(tmp, f"{i}.ptx")
            with open(ptx_path, "w") as fh:
                fh.write(kern.asm["ptx"])
            r = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", ptx_path, "-o", os.devnull],
                               capture_output=True, text=True, check=True)
            spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", r.stderr).groups()
            out[key] = dict(num_warps=warps, num_stages=stages,
                            registers=int(re.search(r"Used (\d+) registers", r.stderr).group(1)),
                            spill_store_bytes=int(spills[0]), spill_load_bytes=int(spills[1]),
                            shared_bytes=int(kern.metadata.shared))
            log(f"ptxas {b}x{t} {key}: {json.dumps(out[key])}")
    return out


def _timed_first(fn, *a):
    """Seconds of the first call (compile + one run)."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn(*a))
    return time.perf_counter() - t0


def breakdown(b, t, reps, log):
    """Compile time (first call) and median time of each fused kernel alone at one shape."""
    import jax
    import jax.numpy as jnp

    from accumbens.sequence import fused as fz
    from accumbens.sequence import fused_kernels as fk

    q, k, v, lg, ct = jax_inputs(b, t, 0)
    c = CHUNK
    interp = jax.default_backend() != "gpu"  # Pallas interpret mode off-GPU (for a CPU smoke test)
    mm, prec = fz._config(q.dtype, interp)
    p32 = fz._prec32(interp)
    s = 1.0 / math.sqrt(DHEAD)
    g, gt = jax.jit(lambda lg: fz._prepare_gates(lg, c))(lg)
    kern = {
        "chunk_states": (jax.jit(lambda k, v, g, gt: fk.chunk_states(k, v, g, gt, c=c, state_dtype=mm, mm=mm, prec=prec,
                                                                      interpret=interp)), (k, v, g, gt)),
    }
    delta, dzc = kern["chunk_states"][0](k, v, g, gt)
    kern["prefix_pallas"] = (jax.jit(lambda a, z, gt: fk.chunk_prefix(a, z, gt, reverse=False, interpret=interp)),
                             (delta, dzc, gt))
    kern["prefix_xla"] = (jax.jit(lambda a, z, gt: fk.chunk_prefix_xla(a, z, gt, reverse=False)), (delta, dzc, gt))
    S, z = kern["prefix_xla"][0](delta, dzc, gt)
    kern["output"] = (jax.jit(lambda q, k, v, g, S, z: fk.output_pass(q, k, v, g, S, z, c=c, scale=s, mm=mm, prec=prec,
                                                                       prec32=p32, interpret=interp)), (q, k, v, g, S, z))
    y, den = kern["output"][0](q, k, v, g, S, z)
    dn = ct.astype(jnp.float32) / den[..., None]
    dd = -jnp.sum(ct.astype(jnp.float32) * y.astype(jnp.float32), -1) / den
    kern["chunk_dstates"] = (jax.jit(lambda q, dn, dd, g: fk.chunk_dstates(q, dn, dd, g, c=c, scale=s, state_dtype=mm,
                                                                            mm=mm, prec=prec, interpret=interp)),
                             (q, dn, dd, g))
    Qn, Qz = kern["chunk_dstates"][0](q, dn, dd, g)
    kern["prefix_pallas_reverse"] = (jax.jit(lambda a, z, gt: fk.chunk_prefix(a, z, gt, reverse=True, interpret=interp)),
                                     (Qn, Qz, gt))
    dS, dz = jax.jit(lambda a, z, gt: fk.chunk_prefix_xla(a, z, gt, reverse=True))(Qn, Qz, gt)
    kw = dict(c=c, mm=mm, prec=prec, prec32=p32, interpret=interp)
    kern["grads_intra"] = (jax.jit(lambda q, k, v, g, dn, dd: fk.grads_intra(q, k, v, g, dn, dd, scale=s, **kw)),
                           (q, k, v, g, dn, dd))
    kern["grads_q"] = (jax.jit(lambda q, g, S, z, dn, dd: fk.grads_query_state(q, g, S, z, dn, dd, scale=s, **kw)),
                       (q, g, S, z, dn, dd))
    kern["grads_k"] = (jax.jit(lambda k, v, g, gt, dS, dz: fk.grads_key_state(k, v, g, gt, dS, dz, **kw)),
                       (k, v, g, gt, dS, dz))
    res = {"state_bytes_per_pass": int(delta.size * delta.dtype.itemsize + dzc.size * 4)}
    for name, (fn, a) in kern.items():
        try:
            first = _timed_first(fn, *a)
            res[name] = {"first_call_s": first, "ms": median_time_jax(fn, [a], reps)}
        except Exception as e:
            res[name] = {"error": repr(e)[:300]}
        log(f"breakdown {b}x{t} {name}: {json.dumps(res[name])}")
    return res


def bench_fused_prefix(prefix, b, t, reps):
    """The fused kernels with a chosen chunk prefix ("pallas" or "xla"): forward and fwd+bwd
    medians (ms) and first-call (compile + run) seconds."""
    import jax
    import jax.numpy as jnp

    from accumbens.sequence.fused import power_attention_fused

    sets = [jax_inputs(b, t, s) for s in range(3)]
    fn = lambda q, k, v, lg: power_attention_fused(q, k, v, lg, chunk_size=CHUNK, prefix=prefix)
    f = jax.jit(fn)
    g = jax.jit(jax.grad(lambda q, k, v, lg, ct: jnp.sum(fn(q, k, v, lg).astype(jnp.float32) * ct.astype(jnp.float32)),
                         argnums=(0, 1, 2, 3)))
    out = {"fwd_first_s": _timed_first(f, *sets[0][:4])}
    out["fwd_ms"] = median_time_jax(f, [s[:4] for s in sets], reps)
    out["fwdbwd_first_s"] = _timed_first(g, *sets[0])
    out["fwdbwd_ms"] = median_time_jax(g, sets, reps)
    return out


def _write(result, path):
    """Write the JSON atomically (called after every row, so a killed run keeps its rows)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda fh: json.dump(result, fh, indent=1), text=True)


METHODS = ("fused", "fused_xla", "chunked", "cudnn", "package")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "power_attention.json"))
    ap.add_argument("--impls", default="fused,chunked,cudnn,package",
                    help=f"comma list of {','.join(METHODS)} (fused_xla: the fused kernels with the XLA chunk prefix)")
    ap.add_argument("--skip", default="", help="comma list of: check,crosscheck,breakdown (and impl names)")
    ap.add_argument("--shapes", default="", help="e.g. 64x1024,1x65536")
    ap.add_argument("--breakdown_shapes", default="1x65536,64x1024", help="shapes of the per-kernel breakdown")
    ap.add_argument("--deadline_s", type=float, default=0.0,
                    help="start no new measurement once it would likely end past this many seconds (0: none); "
                         "the JSON is rewritten after every row, so a killed run keeps what it measured")
    ap.add_argument("--kernel_config", default="",
                    help="override (num_warps, num_stages) of fused kernels before tracing, e.g. output=8:1,prefix=4:1")
    ap.add_argument("--ptxas", default="",
                    help="folder holding a Triton package: report registers/spills of each fused kernel "
                         "(compiled for sm_90a on this machine, no GPU needed) at --shapes' first shape, then exit")
    args = ap.parse_args()
    t_start = time.perf_counter()
    if args.kernel_config:
        from accumbens.sequence import fused_kernels as fk

        for item in args.kernel_config.split(","):
            name, cfg = item.split("=")
            if name not in fk.KERNEL_CONFIG:
                ap.error(f"unknown kernel {name!r}; choose from {sorted(fk.KERNEL_CONFIG)}")
            fk.KERNEL_CONFIG[name] = tuple(int(x) for x in cfg.split(":"))
    skip = set(filter(None, args.skip.split(",")))
    impls = [m for m in filter(None, args.impls.split(",")) if m not in skip]
    bad = [m for m in impls if m not in METHODS]
    if bad:
        ap.error(f"unknown impls {bad}; choose from {METHODS}")
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")] if args.shapes else SHAPES
    import jax

    def log(*a):
        print(f"[{time.perf_counter() - t_start:6.1f}s]", *a, flush=True)

    longest = {"step": 0.0}

    def time_left(what):
        """False (and logged) when another step as long as the longest so far would pass the deadline."""
        if not args.deadline_s:
            return True
        used = time.perf_counter() - t_start
        if used + longest["step"] > args.deadline_s:
            log(f"deadline: skipping {what} ({used:.0f}s used, longest step {longest['step']:.0f}s, "
                f"deadline {args.deadline_s:.0f}s)")
            return False
        return True

    device = str(jax.devices()[0].device_kind) if jax.devices() else "?"
    log(f"jax {jax.__version__} on {device}")
    from accumbens.sequence import fused_kernels as fk

    result = {"device": device, "jax": jax.__version__, "config": dict(heads=H, head_dim=DHEAD, degree=DEG, chunk=CHUNK,
              dtype="bfloat16", gated=True), "kernel_config": {k: list(v) for k, v in fk.KERNEL_CONFIG.items()},
              "argv": sys.argv[1:], "rows": []}
    methods = {"fused": lambda b, t: bench_fused_prefix("pallas", b, t, args.reps),
               "fused_xla": lambda b, t: bench_fused_prefix("xla", b, t, args.reps),
               "chunked": lambda b, t: bench_ours("chunked", b, t, max(5, args.reps // 4)),
               "cudnn": lambda b, t: bench_cudnn(b, t, args.reps),
               "package": lambda b, t: bench_package(b, t, args.reps)}
    if args.ptxas:
        b, t = shapes[0] if args.shapes else (1, 65536)
        result["ptxas"] = {f"{b}x{t}": ptxas_report(args.ptxas, b, t, log)}
        _write(result, args.out)
        return 0
    if "check" not in skip:
        t0 = time.perf_counter()
        result["check"] = correctness(log)
        longest["step"] = time.perf_counter() - t0
        _write(result, args.out)
    for b, t in shapes:
        pf, pfb = power_flops(b, t)
        sf, sfb = softmax_flops(b, t)
        for name in impls:
            row = dict(method=name, batch=b, time=t)
            if not time_left(f"{name} {b}x{t}"):
                row["skipped"] = "deadline"
                result["rows"].append(row)
                continue
            t0 = time.perf_counter()
            try:
                got = methods[name](b, t)
                row.update(got if isinstance(got, dict) else dict(fwd_ms=got[0], fwdbwd_ms=got[1]))
                fwd, fwdbwd = row["fwd_ms"], row["fwdbwd_ms"]
                flops = (sf, sfb) if name == "cudnn" else (pf, pfb)
                row.update(fwd_tflops=flops[0] / fwd / 1e9, fwdbwd_tflops=(flops[1] / fwdbwd / 1e9) if fwdbwd else None)
            except Exception as e:
                row["error"] = repr(e)[:500]
                log(traceback.format_exc()[-3000:])
            row["wall_s"] = time.perf_counter() - t0
            longest["step"] = max(longest["step"], row["wall_s"])
            result["rows"].append(row)
            log(json.dumps(row))
            _write(result, args.out)
    if "breakdown" not in skip:
        for shp in filter(None, args.breakdown_shapes.split(",")):
            if not time_left(f"breakdown {shp}"):
                break
            b, t = (int(x) for x in shp.split("x"))
            t0 = time.perf_counter()
            try:
                result.setdefault("breakdown", {})[shp] = breakdown(b, t, args.reps, log)
            except Exception:
                log(traceback.format_exc()[-3000:])
            longest["step"] = max(longest["step"], time.perf_counter() - t0)
            _write(result, args.out)
    if "crosscheck" not in skip and time_left("crosscheck"):
        try:
            result["crosscheck"] = crosscheck(log)
        except Exception:
            log(traceback.format_exc())
    result["wall_s"] = time.perf_counter() - t_start
    _write(result, args.out)
    print("\n| method | batch x time | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |")
    print("|---|---|---|---|---|---|")
    fmt = lambda x, f="{:.2f}": "-" if x is None else f.format(x)
    for r in result["rows"]:
        if "error" in r or "skipped" in r:
            print(f"| {r['method']} | {r['batch']}x{r['time']} | {r.get('error', r.get('skipped', ''))[:60]} | | | |")
        else:
            print(f"| {r['method']} | {r['batch']}x{r['time']} | {fmt(r['fwd_ms'])} | {fmt(r['fwd_tflops'], '{:.0f}')} | "
                  f"{fmt(r['fwdbwd_ms'])} | {fmt(r['fwdbwd_tflops'], '{:.0f}')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
