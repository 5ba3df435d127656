"""A small C kernel for batch-1 WaveNet generation, built on first use with the system C compiler.

Why: in plain PyTorch every operation costs microseconds of dispatch, and one generated sample
needs ~8 operations per layer, so a 20-layer model tops out near 2,000 samples/s at batch 1 no
matter how small the arithmetic is. This kernel runs the whole sample loop in C: per layer one
fused matrix-vector product for the dilated-conv taps (stacked weights over the ring buffer rows),
the gated unit, one fused product for residual + skip; then the output head and the sampling rule
of :mod:`generation.sampling` (same inverse-CDF rule on the same uniforms). Batch items are
split across threads (pthreads; items are independent); the items of one thread advance in
lockstep so that every weight row fetched into cache serves all of them.

Portability: plain C99 + libm + pthreads, compiled with ``cc -O3 [-march=native] -ffast-math``
into the user cache and loaded by ``ctypes``. If no compiler is available, :func:`load_kernel`
returns None and :class:`generation.fast.FastGenerator` uses its fused pure-torch loop, which is
also the reference the kernel is tested against. Set ``VOXSEP_NO_KERNEL=1`` to force that path.

Two guards:

* **The cache key** (:func:`cache_key`) is a hash of the source, the compiler (its path and
  ``--version``), the flags and the CPU (machine type, model name and feature flags), so a home
  directory shared by machines of different CPUs (``-march=native``) or compilers never loads a
  binary built for another one.
* **No process-wide float changes.** ``-ffast-math`` is given when compiling only: linking a
  shared object with it (GCC before 13, clang) adds ``crtfastmath.o``, whose constructor sets
  flush-to-zero and denormals-are-zero in MXCSR when the library loads, for every later float
  operation of the process (torch, numpy). The kernel's own code is the same either way.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

typedef struct {
    int B, L, R, G, S, C, K, Q;
    const int32_t *dil;          /* (L) */
    const int64_t *buf_off;      /* (L) offset of each layer's ring (rows of R floats) */
    int64_t buf_rows;            /* ring rows per batch item */
    const float *wc;             /* (L, K, R, 2G) dilated conv, tap 0 = oldest */
    const float *bias;           /* (B, L, 2G) conv bias + global conditioning */
    const float *local;          /* (B, n, L, 2G) local conditioning or NULL */
    const float *wrs;            /* (L, G, R+S) residual|skip */
    const float *brs;            /* (L, R+S) */
    const float *wh1, *bh1;      /* (S, S), (S) */
    const float *wh2, *bh2;      /* (S, C), (C) */
    int input_kind;              /* 0: embedding table (Q, R) by code, 1: value * w + b */
    const float *in_table, *in_w, *in_b;
    int output_kind;             /* 0 mulaw, 1 logistic mixture, 2 regression */
    const float *decode_table;   /* (Q) code -> value */
    float *buffers;              /* (B, buf_rows, R) */
    int64_t position;
    float *prev;                 /* (B) last input: code (mulaw) or value */
    int n;
    float temperature;
    const float *uniforms;       /* (B, n, 2) */
    const float *forced;         /* (B, n) inputs to feed instead of samples, or NULL */
    float *out_values;           /* (B, n) */
    float *out_raw;              /* (B, n, C) or NULL */
    int b_start, b_end;
} job_t;

static inline float sigm(float x) {
    x = x < -30.f ? -30.f : (x > 30.f ? 30.f : x);
    return 1.0f / (1.0f + expf(-x));
}

static int inverse_cdf(const float *logits, int n, float temperature, float u, float *work) {
    int best = 0;
    for (int i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    if (temperature <= 0.f) return best;
    float m = logits[best], total = 0.f;
    for (int i = 0; i < n; i++) { work[i] = expf((logits[i] - m) / temperature); }
    for (int i = 0; i < n; i++) { total += work[i]; work[i] = total; }
    float target = u * total;
    int idx = 0;
    for (int i = 0; i < n; i++) idx += (work[i] <= target);
    return idx < n ? idx : n - 1;
}

/* Runs items b_start..b_end-1 in lockstep, one time step at a time, so that each weight row
   loaded into cache serves every item of the group (batch > 1 costs far less than B x batch 1). */
static void *run_items(void *arg) {
    const job_t *J = (const job_t *)arg;
    const int L = J->L, R = J->R, G = J->G, S = J->S, C = J->C, K = J->K;
    const int G2 = 2 * G, RS = R + S;
    const int nb = J->b_end - J->b_start;
    if (nb <= 0) return NULL;
    float *x = malloc(sizeof(float) * R * nb), *pre = malloc(sizeof(float) * G2 * nb);
    float *z = malloc(sizeof(float) * G * nb), *rs = malloc(sizeof(float) * RS * nb);
    float *skip = malloc(sizeof(float) * S * nb), *h1 = malloc(sizeof(float) * S * nb);
    float *o = malloc(sizeof(float) * C * nb), *work = malloc(sizeof(float) * (C > 1 ? C : 1));
    float *prev = malloc(sizeof(float) * nb);
    const float **rows = malloc(sizeof(float *) * nb);
    for (int q = 0; q < nb; q++) prev[q] = J->prev[J->b_start + q];
    for (int t = 0; t < J->n; t++) {
        const int64_t pos = J->position + t;
        for (int q = 0; q < nb; q++) {
            float *xq = x + (int64_t)q * R;
            if (J->input_kind == 0) {
                memcpy(xq, J->in_table + (int64_t)((int)prev[q]) * R, sizeof(float) * R);
            } else {
                for (int j = 0; j < R; j++) xq[j] = prev[q] * J->in_w[j] + J->in_b[j];
            }
            for (int j = 0; j < S; j++) skip[(int64_t)q * S + j] = 0.f;
        }
        for (int l = 0; l < L; l++) {
            const int d = J->dil[l];
            const int64_t size = (int64_t)(K - 1) * d + 1;
            for (int q = 0; q < nb; q++) {
                const int b = J->b_start + q;
                float *ring = J->buffers + ((int64_t)b * J->buf_rows + J->buf_off[l]) * R;
                memcpy(ring + (pos % size) * R, x + (int64_t)q * R, sizeof(float) * R);
                const float *bl = J->bias + ((int64_t)b * L + l) * G2;
                float *pq = pre + (int64_t)q * G2;
                if (J->local) {
                    const float *lc = J->local + (((int64_t)b * J->n + t) * L + l) * G2;
                    for (int o2 = 0; o2 < G2; o2++) pq[o2] = bl[o2] + lc[o2];
                } else {
                    memcpy(pq, bl, sizeof(float) * G2);
                }
            }
            for (int i = 0; i < K; i++) {
                const int64_t back = (int64_t)(K - 1 - i) * d;
                const int64_t row_index = ((pos - back) % size + size) % size;
                for (int q = 0; q < nb; q++) {
                    const int b = J->b_start + q;
                    rows[q] = J->buffers + ((int64_t)b * J->buf_rows + J->buf_off[l] + row_index) * R;
                }
                const float *w = J->wc + ((int64_t)(l * K + i) * R) * G2;
                int j = 0;
                for (; j + 8 <= R; j += 8) {  /* 8 inputs per pass: 8 FMAs per load/store of pre */
                    const float *w0 = w + (int64_t)j * G2, *w1 = w0 + G2, *w2 = w1 + G2, *w3 = w2 + G2;
                    const float *w4 = w3 + G2, *w5 = w4 + G2, *w6 = w5 + G2, *w7 = w6 + G2;
                    for (int q = 0; q < nb; q++) {
                        const float *r = rows[q] + j;
                        const float v0 = r[0], v1 = r[1], v2 = r[2], v3 = r[3], v4 = r[4], v5 = r[5], v6 = r[6], v7 = r[7];
                        float *pq = pre + (int64_t)q * G2;
                        for (int o2 = 0; o2 < G2; o2++)
                            pq[o2] += (v0 * w0[o2] + v1 * w1[o2] + v2 * w2[o2] + v3 * w3[o2])
                                    + (v4 * w4[o2] + v5 * w5[o2] + v6 * w6[o2] + v7 * w7[o2]);
                    }
                }
                for (; j < R; j++) {
                    const float *wj = w + (int64_t)j * G2;
                    for (int q = 0; q < nb; q++) {
                        const float v = rows[q][j];
                        float *pq = pre + (int64_t)q * G2;
                        for (int o2 = 0; o2 < G2; o2++) pq[o2] += v * wj[o2];
                    }
                }
            }
            for (int q = 0; q < nb; q++) {
                const float *pq = pre + (int64_t)q * G2;
                float *zq = z + (int64_t)q * G;
                for (int g = 0; g < G; g++) zq[g] = (2.f * sigm(2.f * pq[g]) - 1.f) * sigm(pq[G + g]);
                memcpy(rs + (int64_t)q * RS, J->brs + (int64_t)l * RS, sizeof(float) * RS);
            }
            const float *wr = J->wrs + (int64_t)l * G * RS;
            int g = 0;
            for (; g + 8 <= G; g += 8) {
                const float *w0 = wr + (int64_t)g * RS, *w1 = w0 + RS, *w2 = w1 + RS, *w3 = w2 + RS;
                const float *w4 = w3 + RS, *w5 = w4 + RS, *w6 = w5 + RS, *w7 = w6 + RS;
                for (int q = 0; q < nb; q++) {
                    const float *zq = z + (int64_t)q * G + g;
                    const float v0 = zq[0], v1 = zq[1], v2 = zq[2], v3 = zq[3], v4 = zq[4], v5 = zq[5], v6 = zq[6], v7 = zq[7];
                    float *rq = rs + (int64_t)q * RS;
                    for (int o2 = 0; o2 < RS; o2++)
                        rq[o2] += (v0 * w0[o2] + v1 * w1[o2] + v2 * w2[o2] + v3 * w3[o2])
                                + (v4 * w4[o2] + v5 * w5[o2] + v6 * w6[o2] + v7 * w7[o2]);
                }
            }
            for (; g < G; g++) {
                const float *wg = wr + (int64_t)g * RS;
                for (int q = 0; q < nb; q++) {
                    const float v = z[(int64_t)q * G + g];
                    float *rq = rs + (int64_t)q * RS;
                    for (int o2 = 0; o2 < RS; o2++) rq[o2] += v * wg[o2];
                }
            }
            for (int q = 0; q < nb; q++) {
                float *xq = x + (int64_t)q * R, *sq = skip + (int64_t)q * S;
                const float *rq = rs + (int64_t)q * RS;
                for (int j = 0; j < R; j++) xq[j] += rq[j];
                for (int j = 0; j < S; j++) sq[j] += rq[R + j];
            }
        }
        /* head: relu -> 1x1 -> relu -> 1x1 */
        for (int q = 0; q < nb; q++) {
            float *hq = h1 + (int64_t)q * S, *oq = o + (int64_t)q * C;
            memcpy(hq, J->bh1, sizeof(float) * S);
            memcpy(oq, J->bh2, sizeof(float) * C);
        }
        for (int i = 0; i < S; i++) {
            const float *w = J->wh1 + (int64_t)i * S;
            for (int q = 0; q < nb; q++) {
                const float si = skip[(int64_t)q * S + i];
                const float v = si > 0.f ? si : 0.f;
                float *hq = h1 + (int64_t)q * S;
                for (int j = 0; j < S; j++) hq[j] += v * w[j];
            }
        }
        for (int i = 0; i < S; i++) {
            const float *w = J->wh2 + (int64_t)i * C;
            for (int q = 0; q < nb; q++) {
                const float hi = h1[(int64_t)q * S + i];
                const float v = hi > 0.f ? hi : 0.f;
                float *oq = o + (int64_t)q * C;
                for (int j = 0; j < C; j++) oq[j] += v * w[j];
            }
        }
        for (int q = 0; q < nb; q++) {
            const int b = J->b_start + q;
            const float *oq = o + (int64_t)q * C;
            if (J->out_raw) memcpy(J->out_raw + ((int64_t)b * J->n + t) * C, oq, sizeof(float) * C);
            const float *u = J->uniforms + ((int64_t)b * J->n + t) * 2;
            float value, next;
            if (J->output_kind == 0) {
                int code = inverse_cdf(oq, C, J->temperature, u[0], work);
                value = J->decode_table[code];
                next = (float)code;
            } else if (J->output_kind == 1) {
                const int M = C / 3;
                int k = inverse_cdf(oq, M, J->temperature, u[0], work);
                value = oq[M + k];
                if (J->temperature > 0.f) {
                    float ls = oq[2 * M + k];
                    ls = ls < -7.f ? -7.f : ls;
                    value += J->temperature * expf(ls) * (logf(u[1]) - log1pf(-u[1]));
                }
                value = value < -1.f ? -1.f : (value > 1.f ? 1.f : value);
                next = value;
            } else {
                value = oq[0] < -1.f ? -1.f : (oq[0] > 1.f ? 1.f : oq[0]);
                next = value;
            }
            J->out_values[(int64_t)b * J->n + t] = value;
            prev[q] = J->forced ? J->forced[(int64_t)b * J->n + t] : next;
        }
    }
    for (int q = 0; q < nb; q++) J->prev[J->b_start + q] = prev[q];
    free(x); free(pre); free(z); free(rs); free(skip); free(h1); free(o); free(work); free(prev); free(rows);
    return NULL;
}

int wavenet_run(job_t *job, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > job->B) n_threads = job->B;
    if (n_threads == 1) { job->b_start = 0; job->b_end = job->B; run_items(job); return 0; }
    pthread_t *threads = malloc(sizeof(pthread_t) * n_threads);
    job_t *jobs = malloc(sizeof(job_t) * n_threads);
    int per = (job->B + n_threads - 1) / n_threads;
    for (int i = 0; i < n_threads; i++) {
        jobs[i] = *job;
        jobs[i].b_start = i * per;
        jobs[i].b_end = (i + 1) * per < job->B ? (i + 1) * per : job->B;
        pthread_create(&threads[i], NULL, run_items, &jobs[i]);
    }
    for (int i = 0; i < n_threads; i++) pthread_join(threads[i], NULL);
    free(threads); free(jobs);
    return 0;
}
"""

_P = ctypes.c_void_p


class Job(ctypes.Structure):
    """Mirror of the C ``job_t`` (field order matters)."""

    _fields_ = [
        ("B", ctypes.c_int), ("L", ctypes.c_int), ("R", ctypes.c_int), ("G", ctypes.c_int),
        ("S", ctypes.c_int), ("C", ctypes.c_int), ("K", ctypes.c_int), ("Q", ctypes.c_int),
        ("dil", _P), ("buf_off", _P), ("buf_rows", ctypes.c_int64),
        ("wc", _P), ("bias", _P), ("local", _P), ("wrs", _P), ("brs", _P),
        ("wh1", _P), ("bh1", _P), ("wh2", _P), ("bh2", _P),
        ("input_kind", ctypes.c_int), ("in_table", _P), ("in_w", _P), ("in_b", _P),
        ("output_kind", ctypes.c_int), ("decode_table", _P),
        ("buffers", _P), ("position", ctypes.c_int64), ("prev", _P),
        ("n", ctypes.c_int), ("temperature", ctypes.c_float),
        ("uniforms", _P), ("forced", _P), ("out_values", _P), ("out_raw", _P),
        ("b_start", ctypes.c_int), ("b_end", ctypes.c_int),
    ]


_KERNEL = None
_TRIED = False


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "voxsep"


#: Flags when compiling the source to an object (``-ffast-math`` here only: see the module docstring).
COMPILE_FLAGS = ("-O3", "-ffast-math", "-fPIC", "-std=c99")
#: Tried in order: tuned for this CPU, else generic.
ARCH_FLAGS = (("-march=native",), ())
#: Flags when linking the object into the shared library: no ``-ffast-math`` (no crtfastmath.o).
LINK_FLAGS = ("-shared", "-lm", "-lpthread")


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@functools.lru_cache(maxsize=None)
def compiler_id(cc: str) -> str:
    """The compiler's resolved path and the first line of ``cc --version``."""
    path = shutil.which(cc) or cc
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return f"{os.path.realpath(path)}: {out.strip().splitlines()[0] if out.strip() else 'unknown version'}"


@functools.lru_cache(maxsize=None)
def cpu_id() -> str:
    """The machine type, the CPU model name and a hash of its feature flags (``/proc/cpuinfo``;
    ``platform.processor()`` where there is none)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    info.setdefault(key.strip().lower(), value.strip())  # the first processor's
    except OSError:
        pass
    model = info.get("model name") or info.get("cpu model") or info.get("uarch") or platform.processor()
    features = " ".join(sorted((info.get("flags") or info.get("features") or info.get("isa") or "").split()))
    return f"{platform.machine()} | {model} | flags {hashlib.sha1(features.encode()).hexdigest()[:12]}"


def cache_key(cc: str) -> str:
    """Hash of everything the binary depends on: source, compiler, flags and CPU."""
    parts = {"source": SOURCE, "compiler": compiler_id(cc), "compile": COMPILE_FLAGS, "arch": ARCH_FLAGS,
             "link": LINK_FLAGS, "cpu": cpu_id()}
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _compile(cc: str, out: Path) -> bool:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "wavenet_kernel.c"
        src.write_text(SOURCE)
        obj = Path(tmp) / "wavenet_kernel.o"
        tmp_out = Path(tmp) / out.name
        for arch in ARCH_FLAGS:
            compiled = subprocess.run([cc, *COMPILE_FLAGS, *arch, "-c", str(src), "-o", str(obj)], capture_output=True)
            if compiled.returncode != 0:
                continue
            linked = subprocess.run([cc, *arch, str(obj), "-o", str(tmp_out), *LINK_FLAGS], capture_output=True)
            if linked.returncode == 0:
                os.replace(tmp_out, out)  # atomic: another process may load it concurrently
                return True
    return False


def load_kernel():
    """The compiled kernel (a ctypes function), or None when it cannot be built here."""
    global _KERNEL, _TRIED
    if _TRIED:
        return _KERNEL
    _TRIED = True
    if os.environ.get("VOXSEP_NO_KERNEL"):
        return None
    cc = _compiler()
    if cc is None:
        return None  # (a binary cached by another compiler or CPU is never a safe guess)
    tag = cache_key(cc)
    lib = None
    # the user cache, else the temp folder (read-only home directories)
    for folder in (_cache_dir(), Path(tempfile.gettempdir()) / f"voxsep-{os.getuid() if hasattr(os, 'getuid') else 0}"):
        path = folder / f"wavenet_kernel_{tag}.so"
        try:
            if path.exists() or _compile(cc, path):
                lib = ctypes.CDLL(str(path))
                break
        except OSError:
            continue
    if lib is None:
        return None
    fn = lib.wavenet_run
    fn.argtypes = [ctypes.POINTER(Job), ctypes.c_int]
    fn.restype = ctypes.c_int
    _KERNEL = fn
    return fn
