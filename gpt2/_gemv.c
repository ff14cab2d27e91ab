/*
 * bfloat16 kernels for x86 CPUs with AVX512-BF16: for one-row decoding, matrix-vector products and the
 * attention of one query row over a KV cache; for training, GELU and its gradient, the cross-entropy of a
 * chunk of logits and causal attention's softmax gradient (gpt2/kernels.py says where they replace PyTorch
 * ops, docs/training.md why).
 *
 * Generating one token for one sequence multiplies a single activation row by
 * every weight matrix of the model: the time is the time to read the weights
 * from memory. PyTorch's bfloat16 `addmv` reads them at about half the speed
 * memory allows on such CPUs (it converts to float32 as it goes, on one core),
 * so a bfloat16 model decodes barely faster than a float32 one although it
 * reads half the bytes. This kernel reads them close to memory speed (15-18 GB/s on a 2-core
 * machine where float32's MKL kernel reaches 19-20 GB/s and PyTorch's bfloat16 one 10-11):
 *
 *   y[n] = bias[n] + sum_k W[n, k] * x[k]      W: (N, K) row-major bfloat16
 *
 * with VDPBF16PS (pairs of bfloat16 products summed into float32 lanes), float32
 * accumulation and one rounding to bfloat16 at the end (round to nearest even),
 * the rows split across a small pool of threads that spin briefly between the
 * calls of a decoding step and sleep otherwise.
 *
 * Python API (pointers are tensor.data_ptr() values; the caller checks dtypes,
 * shapes and contiguity):
 *   supported() -> bool            the CPU has AVX512F + AVX512-BF16
 *   attend(y, q, keys, values, heads, head_dim, positions, head_stride, scale, threads)
 *     attention of one query row (heads * head_dim) over `positions` cached keys and values laid out
 *     (heads, ..., head_dim) with `head_stride` elements between heads: softmax(q.k * scale) v per head,
 *     float32 inside, bfloat16 out; the heads are shared among the threads.
 *   gemv(y, W, x, bias or 0, N, K, threads[, add or 0, group, stride])
 *     row n of the result goes to y[(n / group) * stride + n % group] (default: contiguous), after
 *     adding add[n] (a residual) when given; e.g. keys written straight into a (heads, length, head_dim)
 *     cache slot take group = head_dim, stride = length * head_dim.
 *   gelu(out, dy or 0, x, n, threads[, float32])
 *     out = GELU(x) (tanh form), or with dy its gradient dy * GELU'(x), over n contiguous bfloat16 values
 *     (float32 ones when the last argument is true).
 *   cross_entropy(logits, targets, losses, rows, V, vocab, scale, threads)
 *     for each of `rows` rows of V logits (the first `vocab` real, targets int64): losses[r] = logsumexp - logit of
 *     the target (float32), and the row overwritten by scale * (softmax - one_hot(target)), 0 past `vocab`.
 *   softmax_grad(scores, dweights, weights, dscores, rows, T, scale, threads)
 *     causal attention's backward between its products: for (rows, T) float32 scores q.k (rows = heads * T,
 *     query i of a head sees keys 0..i) and weight gradients dout.v, the weights P = softmax(scale * scores)
 *     and the score gradients scale * P * (dweights - rowsum(P * dweights)), bfloat16, 0 above the diagonal;
 *     the scores are overwritten.
 *   The pool's threads sleep as soon as one of these is done: PyTorch's next op wants the cores.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) && defined(__GNUC__) && (__GNUC__ >= 11 || defined(__clang__))
#define HAVE_KERNEL 1
#include <immintrin.h>
#else
#define HAVE_KERNEL 0
#endif

/* tuning (measured on the 2-core machine of bench/RESULTS.md; -D to try others): blocks of rows per thread,
   how far ahead the weights are prefetched, and into which cache level */
#ifndef TASKS_PER_THREAD
#define TASKS_PER_THREAD 4
#endif
#ifndef PF
#define PF 4096 /* bytes ahead of the rows being read */
#endif
#ifndef HINT
#define HINT _MM_HINT_T1
#endif
#define MAX_THREADS 64
#define SPIN_NS 2000000L /* how long an idle worker polls before sleeping: 2 ms */

typedef struct Job Job;
struct Job {
    void (*task)(const Job *, long); /* runs task i of 0 .. tasks - 1 */
    long tasks;
    /* matrix-vector product */
    uint16_t *y;
    const uint16_t *w, *x, *bias, *add;
    long n, k, group, stride, rows_per_task;
    /* attention of one query row: q = x, output = y */
    const uint16_t *keys, *values;
    long heads, head_dim, positions, head_stride;
    float scale;
    /* element-wise work (GELU and its gradient): out = f(b) or f'(b) * a over `count` values */
    uint16_t *out; /* float32 values when f32 (GELU) */
    const uint16_t *a, *b;
    long count, per_task;
    int f32;
    /* cross-entropy rows: logits `out` (rows, n), k real columns */
    const int64_t *targets;
    float *losses;
    /* causal softmax and its gradient: (rows, n) float32 scores `s` and weight gradients `dp`; bfloat16 weights
       `out` and score gradients `ds` */
    float *s;
    const float *dp;
    uint16_t *ds;
};

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* row n of the result: rounded like PyTorch's ops, y = bf16(bf16(sum + bias) + add) */
static inline void store(const Job *j, long n, float sum) {
    uint16_t v = to_bf16(j->bias ? sum + from_bf16(j->bias[n]) : sum);
    if (j->add) v = to_bf16(from_bf16(v) + from_bf16(j->add[n]));
    j->y[(n / j->group) * j->stride + n % j->group] = v;
}

#if HAVE_KERNEL
/* rows [r0, r1) of the product */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void rows(const Job *j, long r0, long r1) {
    const long K = j->k, full = K & ~31L;
    const __mmask32 tail = (__mmask32)((1ull << (K - full)) - 1);
    long r = r0;
    for (; r + 4 <= r1; r += 4) {
        const uint16_t *w0 = j->w + r * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (long c = 0; c < full; c += 32) {
#if PF > 0
            {
                const char *p = (const char *)w0 + PF + (c >> 5) * 256;
                _mm_prefetch(p, HINT);
                _mm_prefetch(p + 64, HINT);
                _mm_prefetch(p + 128, HINT);
                _mm_prefetch(p + 192, HINT);
            }
#endif
            __m512bh xv = (__m512bh)_mm512_loadu_si512(j->x + c);
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(w0 + c), xv);
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(w1 + c), xv);
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(w2 + c), xv);
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(w3 + c), xv);
        }
        if (tail) {
            __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(tail, j->x + full);
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi16(tail, w0 + full), xv);
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_maskz_loadu_epi16(tail, w1 + full), xv);
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_maskz_loadu_epi16(tail, w2 + full), xv);
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_maskz_loadu_epi16(tail, w3 + full), xv);
        }
        float s[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1), _mm512_reduce_add_ps(a2),
                      _mm512_reduce_add_ps(a3)};
        for (int i = 0; i < 4; i++) store(j, r + i, s[i]);
    }
    for (; r < r1; r++) {
        const uint16_t *w0 = j->w + r * K;
        __m512 a0 = _mm512_setzero_ps();
        for (long c = 0; c < full; c += 32)
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(w0 + c), (__m512bh)_mm512_loadu_si512(j->x + c));
        if (tail)
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi16(tail, w0 + full),
                                  (__m512bh)_mm512_maskz_loadu_epi16(tail, j->x + full));
        float s = _mm512_reduce_add_ps(a0);
        store(j, r, s);
    }
}

static void rows_task(const Job *j, long t) {
    long r0 = t * j->rows_per_task, r1 = r0 + j->rows_per_task;
    rows(j, r0, r1 < j->n ? r1 : j->n);
}

/* e^x for x <= 0 (softmax weights): 2^n * 2^f with f in [-1/2, 1/2], 2^f by its degree-6 Taylor polynomial
   (relative error below 2e-7) */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static inline __m512 exp_nonpositive(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x); /* this operand order keeps a NaN: max_ps returns its second */
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.69314718055994531f)); /* f ln 2 */
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* head h: softmax(q . k_p * scale over the positions p) weighted sum of v_p, in float32; head_dim % 32 == 0 */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void attend_task(const Job *j, long h) {
    const long D = j->head_dim, P = j->positions;
    const uint16_t *q = j->x + h * D, *K = j->keys + h * j->head_stride, *V = j->values + h * j->head_stride;
    float stack[2048], *s = P <= 2048 ? stack : malloc(sizeof(float) * (size_t)(P + 16));
    if (!s) return; /* out of memory: checked by the caller before the job */
    float top = -INFINITY;
    for (long p = 0; p < P; p++) {
        __m512 a = _mm512_setzero_ps();
        for (long c = 0; c < D; c += 32)
            a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512(K + p * D + c), (__m512bh)_mm512_loadu_si512(q + c));
        s[p] = _mm512_reduce_add_ps(a) * j->scale;
        top = s[p] > top ? s[p] : top;
    }
    __m512 total = _mm512_setzero_ps(), m = _mm512_set1_ps(top);
    long p = 0;
    for (; p + 16 <= P; p += 16) {
        __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(s + p), m));
        _mm512_storeu_ps(s + p, e);
        total = _mm512_add_ps(total, e);
    }
    if (p < P) {
        __mmask16 rest = (__mmask16)((1u << (P - p)) - 1);
        __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(rest, s + p), m));
        e = _mm512_maskz_mov_ps(rest, e);
        _mm512_mask_storeu_ps(s + p, rest, e);
        total = _mm512_add_ps(total, e);
    }
    const float inv = 1.0f / _mm512_reduce_add_ps(total);
    for (long c = 0; c < D; c += 16) {
        __m512 o = _mm512_setzero_ps();
        for (long p = 0; p < P; p++) {
            __m256i v16 = _mm256_loadu_si256((const __m256i *)(V + p * D + c));
            __m512 v32 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v16), 16));
            o = _mm512_fmadd_ps(_mm512_set1_ps(s[p]), v32, o);
        }
        _mm256_storeu_si256((__m256i *)(j->y + h * D + c), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(o, _mm512_set1_ps(inv))));
    }
    if (s != stack) free(s);
}

static int cpu_ok(void) {
    static int ok = -1;
    if (ok < 0) {
        __builtin_cpu_init();
        ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
    }
    return ok;
}
#endif

/* ------------------------------------------------------------------ the thread pool */

static Job job;
static atomic_long next_task; /* the next task of the job to take */
static int active;              /* threads that may take part in the current job, the caller included */
static atomic_ulong generation; /* bumped once per job */
/* Workers join the open job and count themselves in `joined`; once the caller has run out of tasks it
   closes the job (CLOSED) and waits only for the workers that joined. A worker that the OS has not run
   yet (preempted by another process, asleep) never holds the caller up: it finds the job closed and
   skips it. */
#define CLOSED (1 << 30)
static atomic_int joined = CLOSED;
static atomic_int finished; /* workers that joined the current job and are done with it */
static int n_workers;
static unsigned long born; /* generation when the newest workers were started */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER; /* one job at a time (callers on several threads) */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
/* how long idle workers poll for the next job before sleeping: long between the many small calls of a
   decode step, zero after a training kernel, whose next neighbour is a PyTorch op wanting both cores */
static atomic_long spin_ns = SPIN_NS;

static void take_tasks(void) {
    for (;;) {
        long t = atomic_fetch_add_explicit(&next_task, 1, memory_order_relaxed);
        if (t >= job.tasks) return;
        job.task(&job, t);
    }
}

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *worker(void *arg) {
    const int id = (int)(intptr_t)arg; /* 1 .. n_workers; the caller is thread 0 */
    unsigned long seen = born; /* the generation before the job that started this worker */
    for (;;) {
        unsigned long g = atomic_load_explicit(&generation, memory_order_acquire);
        if (g == seen) {
            long start = now_ns();
            for (int i = 0; (g = atomic_load_explicit(&generation, memory_order_acquire)) == seen; i++) {
#if HAVE_KERNEL
                _mm_pause();
#endif
                if ((i & 255) == 255 && now_ns() - start > atomic_load_explicit(&spin_ns, memory_order_relaxed)) {
                    pthread_mutex_lock(&lock);
                    while ((g = atomic_load(&generation)) == seen) pthread_cond_wait(&wake, &lock);
                    pthread_mutex_unlock(&lock);
                    break;
                }
            }
        }
        seen = g;
        if (id >= active) continue;
        int state = atomic_load_explicit(&joined, memory_order_acquire);
        while (!(state & CLOSED) &&
               !atomic_compare_exchange_weak_explicit(&joined, &state, state + 1, memory_order_acq_rel, memory_order_acquire))
            ;
        if (state & CLOSED) continue; /* too late for that job (or between jobs) */
        take_tasks();
        atomic_fetch_add_explicit(&finished, 1, memory_order_release);
    }
    return NULL;
}

static void after_fork_in_child(void) {
    /* the workers do not exist in a forked child: start a new pool there when needed */
    n_workers = 0;
    atomic_store(&joined, CLOSED);
    pthread_mutex_init(&lock, NULL);
    pthread_mutex_init(&busy, NULL);
    pthread_cond_init(&wake, NULL);
}

static int grow_pool(int threads) {
    static int atfork_done = 0;
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, after_fork_in_child);
        atfork_done = 1;
    }
    born = atomic_load(&generation);
    while (n_workers < threads - 1 && n_workers < MAX_THREADS - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker, (void *)(intptr_t)(n_workers + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) return -1;
        n_workers++;
    }
    return 0;
}

/* ------------------------------------------------------------------ Python */

/* the refusals every entry point shares */
#define REFUSE_WITHOUT_AVX512_BF16() \
    if (!cpu_ok()) return PyErr_Format(PyExc_RuntimeError, "this CPU has no AVX512-BF16 instructions")
#define COMPILED_WITHOUT_KERNEL() \
    return PyErr_Format(PyExc_RuntimeError, "gpt2._gemv was compiled without its AVX512-BF16 kernel")

static PyObject *py_supported(PyObject *self, PyObject *args) {
#if HAVE_KERNEL
    return PyBool_FromLong(cpu_ok());
#else
    Py_RETURN_FALSE;
#endif
}

#if HAVE_KERNEL
/* run `job` (filled in by the caller, who holds `busy`) on up to `threads` threads, the caller's included */
static void run_job_spinning(int threads, long spin) {
    atomic_store_explicit(&spin_ns, spin, memory_order_relaxed);
    if (threads > 1 && grow_pool(threads) != 0) threads = 1;
    atomic_store_explicit(&next_task, 0, memory_order_relaxed);
    if (threads == 1) {
        take_tasks();
        return;
    }
    active = threads;
    atomic_store_explicit(&finished, 0, memory_order_relaxed);
    atomic_store_explicit(&joined, 0, memory_order_release); /* open: the job's fields are written */
    pthread_mutex_lock(&lock);
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    take_tasks();
    const int helpers = atomic_fetch_or_explicit(&joined, CLOSED, memory_order_acq_rel);
    while (atomic_load_explicit(&finished, memory_order_acquire) < helpers) _mm_pause();
}

static void run_job(int threads) { run_job_spinning(threads, SPIN_NS); }

/* attend_task keeps the scores of more than 2048 positions on the heap: check once that they fit */
static int scores_fit(long positions) {
    if (positions <= 2048) return 1;
    void *probe = malloc(sizeof(float) * (size_t)(positions + 16));
    int ok = probe != NULL;
    free(probe);
    return ok;
}

static int clamp_threads(int threads) { return threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads; }

/* run the single job `j` on up to `threads` threads (no more than it has tasks), holding `busy` with the
   GIL released; idle workers poll for `spin` ns afterwards */
static void run_alone(const Job *j, int threads, long spin) {
    threads = clamp_threads(threads);
    if (threads > j->tasks) threads = (int)j->tasks;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&busy);
    job = *j;
    run_job_spinning(threads, spin);
    pthread_mutex_unlock(&busy);
    Py_END_ALLOW_THREADS
}

/* ------------------------------------------------------------------ a whole decode step */

/* y = W x + bias (+ add) on up to `threads` threads; group <= 0: y contiguous (see the API above) */
static void product(uint16_t *y, const uint16_t *w, const uint16_t *x, const uint16_t *bias, const uint16_t *add,
                    long n, long k, long group, long stride, int threads) {
    /* one thread per 256 KiB of weights at least, so that small products stay on the caller's thread */
    long useful = (long)((2ull * n * k) >> 18) + 1;
    int t = threads < useful ? threads : (int)useful;
    long per = (n + (long)t * TASKS_PER_THREAD - 1) / ((long)t * TASKS_PER_THREAD);
    per = (per + 3) & ~3L; /* whole blocks of 4 rows */
    job = (Job){.task = rows_task, .tasks = (n + per - 1) / per, .rows_per_task = per, .y = y, .w = w, .x = x,
                .bias = bias, .add = add, .n = n, .k = k, .group = group > 0 ? group : n, .stride = group > 0 ? stride : n};
    run_job(t);
}

/* PyTorch's LayerNorm of a bfloat16 row: statistics and affine map in float32, one rounding */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void layer_norm(uint16_t *y, const uint16_t *x, const uint16_t *w,
                                                          const uint16_t *b, long n, float eps) {
    double sum = 0, sq = 0;
    for (long i = 0; i < n; i++) sum += from_bf16(x[i]);
    const float mean = (float)(sum / n);
    for (long i = 0; i < n; i++) {
        float d = from_bf16(x[i]) - mean;
        sq += (double)d * d;
    }
    const float rstd = 1.0f / sqrtf((float)(sq / n) + eps);
    for (long i = 0; i < n; i++) y[i] = to_bf16((from_bf16(x[i]) - mean) * rstd * from_bf16(w[i]) + from_bf16(b[i]));
}

#define LOAD_BF16(m, p) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16))
#define STORE_BF16(p, m, v) _mm256_mask_storeu_epi16(p, m, (__m256i)_mm512_cvtneps_pbh(v))
#define LANES(n, i) ((n) - (i) >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << ((n) - (i))) - 1))

#define GELU_C 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_A 0.044715f

/* With t = tanh z, e = exp(-2 |z|) and p = 1 / (1 + e): (1 + t) / 2 is p for z >= 0 and e p below, and
   1 - t^2 = 4 e p^2. Written so, nothing cancels where tanh z is near -1, and each is accurate to the
   relative error of exp (2e-7). Returns (1 + t) / 2; *sech2 = 1 - t^2 when asked. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static inline __m512 half_one_plus_tanh(__m512 z, __m512 *sech2) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 u = _mm512_mul_ps(_mm512_set1_ps(-2.0f), _mm512_abs_ps(z));
    /* below -87 exp_nonpositive stops at e^-87; e is then too small to matter for p, but e p must be 0 */
    __m512 e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, _mm512_set1_ps(-87.0f), _CMP_GT_OQ), exp_nonpositive(u));
    __m512 p = _mm512_div_ps(one, _mm512_add_ps(one, e)), ep = _mm512_mul_ps(e, p);
    if (sech2) *sech2 = _mm512_mul_ps(_mm512_set1_ps(4.0f), _mm512_mul_ps(ep, p));
    return _mm512_mask_mov_ps(p, _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ), ep);
}

/* GELU, tanh form (GPT-2): x (1 + tanh(c (x + a x^3))) / 2, and its derivative
   (1 + t) / 2 + x (1 - t^2) c (1 + 3 a x^2) / 2 */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static inline __m512 gelu_ps(__m512 v) {
    const __m512 c = _mm512_set1_ps(GELU_C), a = _mm512_set1_ps(GELU_A);
    return _mm512_mul_ps(v, half_one_plus_tanh(_mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(a, v), _mm512_mul_ps(v, v), v)), NULL));
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static inline __m512 gelu_grad_ps(__m512 v) {
    const __m512 c = _mm512_set1_ps(GELU_C), a = _mm512_set1_ps(GELU_A), a3 = _mm512_set1_ps(3.0f * GELU_A);
    __m512 v2 = _mm512_mul_ps(v, v), sech2;
    __m512 h = half_one_plus_tanh(_mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(a, v), v2, v)), &sech2);
    __m512 dz = _mm512_mul_ps(c, _mm512_fmadd_ps(a3, v2, _mm512_set1_ps(1.0f))); /* dz/dx */
    return _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_mul_ps(v, sech2)), dz, h);
}

/* y = GELU(x), or with dy: y = dy * GELU'(x), on n bfloat16 values (float32 inside, one rounding); y may be x */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void gelu_bf16(uint16_t *y, const uint16_t *dy,
                                                                                       const uint16_t *x, long n) {
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = LANES(n, i);
        __m512 v = LOAD_BF16(m, x + i);
        STORE_BF16(y + i, m, dy ? _mm512_mul_ps(LOAD_BF16(m, dy + i), gelu_grad_ps(v)) : gelu_ps(v));
    }
}

/* the same on float32 values */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void gelu_f32(float *y, const float *dy, const float *x, long n) {
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = LANES(n, i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(y + i, m, dy ? _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dy + i), gelu_grad_ps(v)) : gelu_ps(v));
    }
}

static void gelu_tanh(uint16_t *u, long n) { gelu_bf16(u, NULL, u, n); }

static void gelu_task(const Job *j, long t) {
    long i0 = t * j->per_task, i1 = i0 + j->per_task < j->count ? i0 + j->per_task : j->count;
    if (j->f32)
        gelu_f32((float *)j->out + i0, j->a ? (const float *)j->a + i0 : NULL, (const float *)j->b + i0, i1 - i0);
    else
        gelu_bf16(j->out + i0, j->a ? j->a + i0 : NULL, j->b + i0, i1 - i0);
}

/* Cross-entropy of one row of bfloat16 logits (the first `vocab` of `V` columns are real), float32 inside:
   the loss lse - x[target] goes to losses[r], and the row is overwritten by the gradient of scale * loss,
   scale * (softmax - one_hot(target)), rounded once to bfloat16; columns past `vocab` get 0. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void cross_entropy_task(const Job *j, long r) {
    uint16_t *x = j->out + r * j->n;
    const long V = j->n, vocab = j->k, target = j->targets[r];
    __m512 top = _mm512_set1_ps(-INFINITY);
    for (long i = 0; i < vocab; i += 16) {
        __mmask16 m = LANES(vocab, i);
        top = _mm512_mask_max_ps(top, m, top, LOAD_BF16(m, x + i));
    }
    const float M = _mm512_reduce_max_ps(top);
    __m512 total = _mm512_setzero_ps(), mv = _mm512_set1_ps(M);
    for (long i = 0; i < vocab; i += 16) {
        __mmask16 m = LANES(vocab, i);
        total = _mm512_add_ps(total, _mm512_maskz_mov_ps(m, exp_nonpositive(_mm512_sub_ps(LOAD_BF16(m, x + i), mv))));
    }
    const float lse = M + logf(_mm512_reduce_add_ps(total));
    const int valid = target >= 0 && target < vocab;
    const float xt = valid ? from_bf16(x[target]) : NAN;
    j->losses[r] = lse - xt;
    const __m512 lv = _mm512_set1_ps(lse), sv = _mm512_set1_ps(j->scale);
    for (long i = 0; i < V; i += 16) {
        __mmask16 m = LANES(V, i), real = LANES(vocab > i ? vocab : i, i);
        __m512 p = _mm512_maskz_mov_ps(real, exp_nonpositive(_mm512_sub_ps(LOAD_BF16(m, x + i), lv)));
        STORE_BF16(x + i, m, _mm512_mul_ps(p, sv));
    }
    if (valid) x[target] = to_bf16(expf(xt - lse) * j->scale - j->scale);
}

/* Causal attention's softmax and its gradient for rows of a (heads * T, T) score matrix, float32 inside: row
   r = h * T + i has scores s[r, j] = q_i . k_j (unscaled; only j <= i are seen) and weight gradients
   dp[r, j] = dout_i . v_j. Writes the weights P = softmax(scale * s) and the score gradients
   scale * P * (dp - sum_j P dp), both rounded once to bfloat16, with 0 above the diagonal; `s` is scratch. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void softmax_grad_task(const Job *j, long t) {
    const long T = j->n, r0 = t * j->per_task, r1 = r0 + j->per_task < j->count ? r0 + j->per_task : j->count;
    const __m512 sc = _mm512_set1_ps(j->scale);
    for (long r = r0; r < r1; r++) {
        float *s = j->s + r * T;
        const float *dp = j->dp + r * T;
        uint16_t *p_out = j->out + r * T, *ds_out = j->ds + r * T;
        const long L = r % T + 1; /* positions this query sees */
        __m512 top = _mm512_set1_ps(-INFINITY);
        for (long i = 0; i < L; i += 16) {
            __mmask16 m = LANES(L, i);
            top = _mm512_mask_max_ps(top, m, top, _mm512_maskz_loadu_ps(m, s + i));
        }
        const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(top) * j->scale);
        __m512 total = _mm512_setzero_ps();
        for (long i = 0; i < L; i += 16) {
            __mmask16 m = LANES(L, i);
            __m512 e = _mm512_maskz_mov_ps(m, exp_nonpositive(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, s + i), sc, mv)));
            _mm512_mask_storeu_ps(s + i, m, e);
            total = _mm512_add_ps(total, e);
        }
        const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(total));
        __m512 dot = _mm512_setzero_ps();
        for (long i = 0; i < L; i += 16) {
            __mmask16 m = LANES(L, i);
            __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + i), inv);
            _mm512_mask_storeu_ps(s + i, m, p);
            dot = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m, dp + i), dot);
        }
        const __m512 dv = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
        for (long i = 0; i < T; i += 16) {
            __mmask16 m = LANES(T, i), seen = LANES(L > i ? L : i, i);
            __m512 p = _mm512_maskz_loadu_ps(seen, s + i);
            __m512 g = _mm512_mul_ps(_mm512_mul_ps(p, _mm512_sub_ps(_mm512_maskz_loadu_ps(seen, dp + i), dv)), sc);
            STORE_BF16(p_out + i, m, p);
            STORE_BF16(ds_out + i, m, g);
        }
    }
}

/* The weights of a GPT-2 model as a table of addresses (int64): a header, then 12 per block. */
enum { H_EMBD, H_HEADS, H_LAYERS, H_VOCAB, H_WTE, H_WPE, H_LNF_W, H_LNF_B, H_HEADER };
enum { B_LN1_W, B_LN1_B, B_ATTN_W, B_ATTN_B, B_PROJ_W, B_PROJ_B, B_LN2_W, B_LN2_B, B_FC_W, B_FC_B, B_PROJ2_W,
       B_PROJ2_B, B_FIELDS };

/* logits (vocab rows of the tied embedding) for `token` at position L, keys and values written to the caches
   (n_layer, heads, T, head_dim); every value rounded to bfloat16 where GPT.forward rounds it */
static int decode_step(const int64_t *table, long token, long L, uint16_t *kc, uint16_t *vc, long T,
                       uint16_t *logits, float eps, int threads) {
    const long C = table[H_EMBD], nh = table[H_HEADS], layers = table[H_LAYERS], V = table[H_VOCAB];
    const long hs = C / nh;
    uint16_t *buf = malloc(sizeof(uint16_t) * (size_t)(8 * C));
    if (!buf) return -1;
    uint16_t *x = buf, *h = buf + C, *q = buf + 2 * C, *y = buf + 3 * C, *u = buf + 4 * C;
    const uint16_t *wte = (const uint16_t *)table[H_WTE] + token * C, *wpe = (const uint16_t *)table[H_WPE] + L * C;
    for (long i = 0; i < C; i++) x[i] = to_bf16(from_bf16(wte[i]) + from_bf16(wpe[i]));
    const float scale = 1.0f / sqrtf((float)hs);
    for (long l = 0; l < layers; l++) {
        const int64_t *p = table + H_HEADER + l * B_FIELDS;
#define P(i) ((const uint16_t *)p[i])
        uint16_t *kl = kc + l * nh * T * hs, *vl = vc + l * nh * T * hs;
        layer_norm(h, x, P(B_LN1_W), P(B_LN1_B), C, eps);
        product(q, P(B_ATTN_W), h, P(B_ATTN_B), NULL, C, C, 0, 0, threads);
        product(kl + L * hs, P(B_ATTN_W) + C * C, h, P(B_ATTN_B) + C, NULL, C, C, hs, T * hs, threads);
        product(vl + L * hs, P(B_ATTN_W) + 2 * C * C, h, P(B_ATTN_B) + 2 * C, NULL, C, C, hs, T * hs, threads);
        job = (Job){.task = attend_task, .tasks = nh, .y = y, .x = q, .keys = kl, .values = vl, .heads = nh,
                    .head_dim = hs, .positions = L + 1, .head_stride = T * hs, .scale = scale};
        run_job(threads < nh ? threads : (int)nh);
        product(x, P(B_PROJ_W), y, P(B_PROJ_B), x, C, C, 0, 0, threads); /* x + proj(y), in place */
        layer_norm(h, x, P(B_LN2_W), P(B_LN2_B), C, eps);
        product(u, P(B_FC_W), h, P(B_FC_B), NULL, 4 * C, C, 0, 0, threads);
        gelu_tanh(u, 4 * C);
        product(x, P(B_PROJ2_W), u, P(B_PROJ2_B), x, C, 4 * C, 0, 0, threads);
#undef P
    }
    layer_norm(h, x, (const uint16_t *)table[H_LNF_W], (const uint16_t *)table[H_LNF_B], C, eps);
    product(logits, (const uint16_t *)table[H_WTE], h, NULL, NULL, V, C, 0, 0, threads);
    free(buf);
    return 0;
}
#endif

static PyObject *py_gemv(PyObject *self, PyObject *args) {
    unsigned long long y, w, x, bias, add = 0;
    long n, k, group = 0, stride = 0;
    int threads;
    if (!PyArg_ParseTuple(args, "KKKKlli|Kll", &y, &w, &x, &bias, &n, &k, &threads, &add, &group, &stride))
        return NULL;
#if HAVE_KERNEL
    REFUSE_WITHOUT_AVX512_BF16();
    if (n <= 0 || k <= 0) Py_RETURN_NONE;
    threads = clamp_threads(threads);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&busy);
    product((uint16_t *)y, (const uint16_t *)w, (const uint16_t *)x, (const uint16_t *)bias, (const uint16_t *)add, n,
            k, group, stride, threads);
    pthread_mutex_unlock(&busy);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
#else
    COMPILED_WITHOUT_KERNEL();
#endif
}

static PyObject *py_attend(PyObject *self, PyObject *args) {
    unsigned long long y, q, keys, values;
    long heads, head_dim, positions, head_stride;
    float scale;
    int threads;
    if (!PyArg_ParseTuple(args, "KKKKllllfi", &y, &q, &keys, &values, &heads, &head_dim, &positions, &head_stride,
                          &scale, &threads))
        return NULL;
#if HAVE_KERNEL
    REFUSE_WITHOUT_AVX512_BF16();
    if (head_dim % 32 != 0 || positions < 1 || heads < 1)
        return PyErr_Format(PyExc_ValueError, "attend: head_dim must be a multiple of 32 and positions, heads >= 1");
    if (!scores_fit(positions)) return PyErr_NoMemory();
    Job j = {.task = attend_task, .tasks = heads, .y = (uint16_t *)y, .x = (const uint16_t *)q,
             .keys = (const uint16_t *)keys, .values = (const uint16_t *)values, .heads = heads,
             .head_dim = head_dim, .positions = positions, .head_stride = head_stride, .scale = scale};
    run_alone(&j, threads, SPIN_NS);
    Py_RETURN_NONE;
#else
    COMPILED_WITHOUT_KERNEL();
#endif
}

static PyObject *py_step(PyObject *self, PyObject *args) {
    unsigned long long table, kc, vc, logits;
    long token, L, T;
    float eps;
    int threads;
    if (!PyArg_ParseTuple(args, "KllKKlKfi", &table, &token, &L, &kc, &vc, &T, &logits, &eps, &threads)) return NULL;
#if HAVE_KERNEL
    REFUSE_WITHOUT_AVX512_BF16();
    const int64_t *t = (const int64_t *)table;
    if (t[H_EMBD] % t[H_HEADS] != 0 || (t[H_EMBD] / t[H_HEADS]) % 32 != 0 || L < 0 || L >= T || token < 0 ||
        token >= t[H_VOCAB])
        return PyErr_Format(PyExc_ValueError, "step: head size must be a multiple of 32, 0 <= position < cache "
                                              "length and 0 <= token < vocabulary");
    if (!scores_fit(L + 1)) return PyErr_NoMemory();
    int rc;
    threads = clamp_threads(threads);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&busy);
    rc = decode_step(t, token, L, (uint16_t *)kc, (uint16_t *)vc, T, (uint16_t *)logits, eps, threads);
    pthread_mutex_unlock(&busy);
    Py_END_ALLOW_THREADS
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
#else
    COMPILED_WITHOUT_KERNEL();
#endif
}


static PyObject *py_gelu(PyObject *self, PyObject *args) {
    unsigned long long out, dy, x;
    long n;
    int threads, f32 = 0;
    if (!PyArg_ParseTuple(args, "KKKli|p", &out, &dy, &x, &n, &threads, &f32)) return NULL;
#if HAVE_KERNEL
    REFUSE_WITHOUT_AVX512_BF16();
    if (n <= 0) Py_RETURN_NONE;
    const long chunk = 1L << 16; /* values per task: 128 KiB of bfloat16 */
    Job j = {.task = gelu_task, .tasks = (n + chunk - 1) / chunk, .count = n, .per_task = chunk,
             .out = (uint16_t *)out, .a = (const uint16_t *)dy, .b = (const uint16_t *)x, .f32 = f32};
    run_alone(&j, threads, 0);
    Py_RETURN_NONE;
#else
    COMPILED_WITHOUT_KERNEL();
#endif
}

static PyObject *py_cross_entropy(PyObject *self, PyObject *args) {
    unsigned long long logits, targets, losses;
    long rows, V, vocab;
    float scale;
    int threads;
    if (!PyArg_ParseTuple(args, "KKKlllfi", &logits, &targets, &losses, &rows, &V, &vocab, &scale, &threads))
        return NULL;
#if HAVE_KERNEL
    REFUSE_WITHOUT_AVX512_BF16();
    if (vocab < 1 || vocab > V) return PyErr_Format(PyExc_ValueError, "cross_entropy: need 1 <= vocab <= V");
    if (rows <= 0) Py_RETURN_NONE;
    Job j = {.task = cross_entropy_task, .tasks = rows, .out = (uint16_t *)logits, .n = V, .k = vocab,
             .targets = (const int64_t *)targets, .losses = (float *)losses, .scale = scale};
    run_alone(&j, threads, 0);
    Py_RETURN_NONE;
#else
    COMPILED_WITHOUT_KERNEL();
#endif
}

static PyObject *py_softmax_grad(PyObject *self, PyObject *args) {
    unsigned long long scores, dweights, weights, dscores;
    long rows, T;
    float scale;
    int threads;
    if (!PyArg_ParseTuple(args, "KKKKllfi", &scores, &dweights, &weights, &dscores, &rows, &T, &scale, &threads))
        return NULL;
#if HAVE_KERNEL
    REFUSE_WITHOUT_AVX512_BF16();
    if (T < 1 || rows % T) return PyErr_Format(PyExc_ValueError, "softmax_grad: need T >= 1 and rows a multiple of T");
    if (rows <= 0) Py_RETURN_NONE;
    const long per_task = 32; /* rows per task */
    Job j = {.task = softmax_grad_task, .tasks = (rows + per_task - 1) / per_task, .count = rows, .per_task = per_task,
             .n = T, .scale = scale, .s = (float *)scores, .dp = (const float *)dweights, .out = (uint16_t *)weights,
             .ds = (uint16_t *)dscores};
    run_alone(&j, threads, 0);
    Py_RETURN_NONE;
#else
    COMPILED_WITHOUT_KERNEL();
#endif
}

static PyMethodDef methods[] = {
    {"supported", py_supported, METH_NOARGS, "Whether this CPU runs the AVX512-BF16 kernel."},
    {"gemv", py_gemv, METH_VARARGS,
     "gemv(y, W, x, bias, N, K, threads[, add, group, stride]): y = W @ x + bias (+ add) in bfloat16 (pointers)."},
    {"step", py_step, METH_VARARGS,
     "step(table, token, position, keys, values, cache_len, logits, eps, threads): one decode step of a GPT-2."},
    {"attend", py_attend, METH_VARARGS,
     "attend(y, q, keys, values, heads, head_dim, positions, head_stride, scale, threads): one query row's attention."},
    {"gelu", py_gelu, METH_VARARGS,
     "gelu(out, dy or 0, x, n, threads[, float32]): GELU (tanh form) of n bfloat16 (or float32) values, or with dy "
     "its gradient dy * gelu'(x)."},
    {"cross_entropy", py_cross_entropy, METH_VARARGS,
     "cross_entropy(logits, targets, losses, rows, V, vocab, scale, threads): per-row loss (float32) and, in place, "
     "the bfloat16 gradient scale * (softmax - one_hot) of (rows, V) logits whose first vocab columns are real."},
    {"softmax_grad", py_softmax_grad, METH_VARARGS,
     "softmax_grad(scores, dweights, weights, dscores, rows, T, scale, threads): causal softmax weights and score "
     "gradients (bfloat16) of (rows, T) float32 scores and weight gradients, rows = heads * T; scores is scratch."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_gemv", "bfloat16 CPU kernels: decoding, GELU, cross-entropy and attention's softmax gradient.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__gemv(void) { return PyModule_Create(&module); }
