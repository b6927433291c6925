/* The GPT forward pass in C for x86-64 CPUs with AVX2: int8 weights, one call per model step.
 *
 * Why this exists: in PyTorch, decoding one token of seed-15m is ~20 small ops per layer, each
 * a few microseconds of dispatch, around 33 matrix-vector products over 10.7 MB of int8
 * weights; the dispatch cost more than the maths. Here the whole step is one call with no
 * per-op overhead (3-4x faster per token than PyTorch's int8: README, Figures). horror/native.py
 * builds this file with the system C compiler, loads it with ctypes, and the tests check it
 * against the PyTorch model with the same rounding (tests/test_native.py).
 *
 * The maths is horror/model.py's: token + position embedding, pre-norm blocks (LayerNorm,
 * causal self-attention, residual; LayerNorm, exact-erf GELU MLP, residual), final LayerNorm,
 * LM head. Linear weights are int8 with one scale per output row; each input row is quantized
 * to int8 with its own scale just before a product, and the products run as int8 x int8 ->
 * int32 with AVX2. Everything else is float32.
 *
 * Products are split across `threads` OpenMP threads by output column, attention by (batch
 * row, head), so every number is summed by one thread in one order: results do not depend on
 * the thread count, and a position's result does not depend on how many positions share the
 * call (cached and uncached logits are bit-equal). Re-entrant: no globals, scratch memory is
 * allocated per call, so several threads may call at once (ctypes releases the GIL meanwhile).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vector_math.h"

/* One block's weights. Biases (and LayerNorm shifts) may be NULL (ModelConfig.bias=False). */
typedef struct {
    const float *ln_attn_weight, *ln_attn_bias;
    const int8_t *qkv_weight;
    const float *qkv_scale, *qkv_bias;
    const int8_t *attn_proj_weight;
    const float *attn_proj_scale, *attn_proj_bias;
    const float *ln_mlp_weight, *ln_mlp_bias;
    const int8_t *fc_weight;
    const float *fc_scale, *fc_bias;
    const int8_t *mlp_proj_weight;
    const float *mlp_proj_scale, *mlp_proj_bias;
} Layer;

typedef struct {
    int32_t n_layers, d_model, n_heads, d_ff, vocab_size, context_length;
    float layer_norm_eps;
    const float *token_embedding;     /* (vocab_size, d_model) */
    const float *position_embedding;  /* (context_length, d_model) */
    const float *ln_final_weight, *ln_final_bias;
    const int8_t *head_weight;        /* (vocab_size, d_model) */
    const float *head_scale;
    const Layer *layers;
} Model;

enum { OK = 0, ERROR_BAD_ARGUMENT = 1, ERROR_OUT_OF_MEMORY = 2 };
/* Multiply-adds below which a product runs on one thread (a fork/join costs a few microseconds). */
#define MIN_PARALLEL_WORK (1L << 16)
/* The same for attention (positions x d_model), whose steps cost more each: split from ~32
 * positions on at d_model 256, which a decoding step with a long prompt or chain reaches. */
#define MIN_PARALLEL_ATTENTION (1L << 13)

/* ----- vector maths ------------------------------------------------------------------------ */

static inline int32_t sum8_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

static float dot(const float *a, const float *b, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float total = sum8(acc);
    for (; i < n; i++) total += a[i] * b[i];
    return total;
}

/* erf(x) for 8 floats: Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as PyTorch's CPU erf. */
static inline __m256 erf8(__m256 x) {
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    __m256 sign = _mm256_and_ps(x, sign_bit), a = _mm256_andnot_ps(sign_bit, x);
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(1.061405429f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
    p = _mm256_mul_ps(p, t);
    __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
    __m256 y = _mm256_fnmadd_ps(p, e, _mm256_set1_ps(1.0f));
    return _mm256_or_ps(y, sign);
}

/* x <- 0.5 x (1 + erf(x / sqrt 2)), F.gelu's default (exact) form. */
static void gelu(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 e = erf8(_mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f)));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    }
    for (; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

/* x <- softmax(x) over n floats. */
static void softmax(float *x, int n) {
    float best = max_of(x, n);
    __m256 total8 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(best)));
        _mm256_storeu_ps(x + i, e);
        total8 = _mm256_add_ps(total8, e);
    }
    float total = sum8(total8);
    for (; i < n; i++) total += (x[i] = expf(x[i] - best));
    float inverse = 1.0f / total;
    for (i = 0; i < n; i++) x[i] *= inverse;
}

static void layer_norm(const float *x, int rows, int n, const float *weight, const float *bias, float eps, float *out) {
    for (int r = 0; r < rows; r++, x += n, out += n) {
        float mean = 0.0f, variance = 0.0f;
        for (int i = 0; i < n; i++) mean += x[i];
        mean /= n;
        for (int i = 0; i < n; i++) variance += (x[i] - mean) * (x[i] - mean);
        float inverse_std = 1.0f / sqrtf(variance / n + eps);
        for (int i = 0; i < n; i++) out[i] = (x[i] - mean) * inverse_std * weight[i] + (bias ? bias[i] : 0.0f);
    }
}

/* ----- int8 products ----------------------------------------------------------------------- */

/* Rows of activations quantized for one product: q = round(x / scale), |q| <= 127. `magnitude`
 * holds |q| and `q` its sign, because AVX2 multiplies unsigned by signed bytes (maddubs). */
typedef struct {
    int8_t *q;
    uint8_t *magnitude;
    float *scale;
} Quantized;

static void quantize_rows(const float *x, int rows, int n, Quantized *out) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    /* _mm256_packs_* interleave 128-bit lanes; this puts the 32 bytes back in order. */
    const __m256i unshuffle = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * n;
        __m256 largest8 = _mm256_setzero_ps();
        int i = 0;
        for (; i + 8 <= n; i += 8) largest8 = _mm256_max_ps(largest8, _mm256_and_ps(_mm256_loadu_ps(row + i), abs_mask));
        float largest = max8(largest8);
        for (; i < n; i++) largest = fabsf(row[i]) > largest ? fabsf(row[i]) : largest;
        float inverse = largest > 0.0f ? 127.0f / largest : 0.0f;
        out->scale[r] = largest / 127.0f;
        int8_t *q = out->q + (size_t)r * n;
        uint8_t *magnitude = out->magnitude + (size_t)r * n;
        __m256 inverse8 = _mm256_set1_ps(inverse);
        i = 0;
        for (; i + 32 <= n; i += 32) {  /* round half to even, as lrintf and torch.round */
            __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + i), inverse8));
            __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + i + 8), inverse8));
            __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + i + 16), inverse8));
            __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + i + 24), inverse8));
            __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
            bytes = _mm256_permutevar8x32_epi32(bytes, unshuffle);
            _mm256_storeu_si256((__m256i *)(q + i), bytes);
            _mm256_storeu_si256((__m256i *)(magnitude + i), _mm256_abs_epi8(bytes));
        }
        for (; i < n; i++) {
            int value = (int)lrintf(row[i] * inverse);
            value = value > 127 ? 127 : (value < -127 ? -127 : value);
            q[i] = (int8_t)value;
            magnitude[i] = (uint8_t)(value < 0 ? -value : value);
        }
    }
}

/* 32 products q*w summed into 8 int32 lanes. |q|,|w| <= 127, so pair sums fit int16. */
static inline __m256i dot32(__m256i magnitude, __m256i q, const int8_t *w) {
    __m256i signed_w = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)w), q);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, signed_w), _mm256_set1_epi16(1));
}

static inline int32_t dot_tail(const int8_t *q, const int8_t *w, int from, int n) {
    int32_t total = 0;
    for (int i = from; i < n; i++) total += q[i] * w[i];
    return total;
}

/* Stores one output: x_scale[r] w_scale[j] total + bias[j], or adds it (the residual add). */
static inline void store(float *y, float x_scale, float w_scale, int32_t total, const float *bias, int j, int accumulate) {
    float value = x_scale * w_scale * (float)total + (bias ? bias[j] : 0.0f);
    *y = accumulate ? *y + value : value;
}

/* Rows [r_begin, r_end) of out = x W^T for weight rows [j_begin, j_end). Four weight rows at a
 * time: their 4*n_in bytes stay in L1 while the input rows pass, and four independent sums keep
 * the multiply units busy. */
static void linear_block(const Quantized *x, int r_begin, int r_end, const int8_t *weight, const float *w_scale,
                         const float *bias, int n_in, int n_out, int j_begin, int j_end, float *out, int accumulate) {
    int j = j_begin;
    for (; j + 4 <= j_end; j += 4) {
        const int8_t *w0 = weight + (size_t)j * n_in, *w1 = w0 + n_in, *w2 = w1 + n_in, *w3 = w2 + n_in;
        for (int r = r_begin; r < r_end; r++) {
            const int8_t *q = x->q + (size_t)r * n_in;
            const uint8_t *magnitude = x->magnitude + (size_t)r * n_in;
            __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
            int i = 0;
            for (; i + 32 <= n_in; i += 32) {
                __m256i m = _mm256_loadu_si256((const __m256i *)(magnitude + i));
                __m256i sign = _mm256_loadu_si256((const __m256i *)(q + i));
                s0 = _mm256_add_epi32(s0, dot32(m, sign, w0 + i));
                s1 = _mm256_add_epi32(s1, dot32(m, sign, w1 + i));
                s2 = _mm256_add_epi32(s2, dot32(m, sign, w2 + i));
                s3 = _mm256_add_epi32(s3, dot32(m, sign, w3 + i));
            }
            float *y = out + (size_t)r * n_out + j;
            store(y, x->scale[r], w_scale[j], sum8_epi32(s0) + dot_tail(q, w0, i, n_in), bias, j, accumulate);
            store(y + 1, x->scale[r], w_scale[j + 1], sum8_epi32(s1) + dot_tail(q, w1, i, n_in), bias, j + 1, accumulate);
            store(y + 2, x->scale[r], w_scale[j + 2], sum8_epi32(s2) + dot_tail(q, w2, i, n_in), bias, j + 2, accumulate);
            store(y + 3, x->scale[r], w_scale[j + 3], sum8_epi32(s3) + dot_tail(q, w3, i, n_in), bias, j + 3, accumulate);
        }
    }
    for (; j < j_end; j++) {
        const int8_t *w = weight + (size_t)j * n_in;
        for (int r = r_begin; r < r_end; r++)
            store(out + (size_t)r * n_out + j, x->scale[r], w_scale[j], dot_tail(x->q + (size_t)r * n_in, w, 0, n_in),
                  bias, j, accumulate);
    }
}

/* out[r, j] = x_scale[r] w_scale[j] (q[r] . w[j]) + bias[j], or += that when `accumulate`.
 * Tiled so that a tile's outputs (BLOCK_IN rows x BLOCK_OUT columns) stay in L1 while it is
 * summed: with long prompts, walking all rows per column group thrashed the cache. Threads take
 * whole column tiles, so each output is summed by one thread. */
#define BLOCK_OUT 16
#define BLOCK_IN 32
static void linear(const Quantized *x, int rows, const int8_t *weight, const float *w_scale, const float *bias,
                   int n_in, int n_out, float *out, int accumulate, int threads) {
    int tiles = (n_out + BLOCK_OUT - 1) / BLOCK_OUT;
    /* Split the tiles between threads when there is enough work to pay for waking them. */
    int parallel = threads > 1 && (long)rows * n_in * n_out >= MIN_PARALLEL_WORK;
    #pragma omp parallel for num_threads(threads) schedule(static) if(parallel)
    for (int tile = 0; tile < tiles; tile++) {
        int j_begin = tile * BLOCK_OUT, j_end = j_begin + BLOCK_OUT < n_out ? j_begin + BLOCK_OUT : n_out;
        for (int r = 0; r < rows; r += BLOCK_IN)
            linear_block(x, r, r + BLOCK_IN < rows ? r + BLOCK_IN : rows, weight, w_scale, bias, n_in, n_out,
                         j_begin, j_end, out, accumulate);
    }
}

/* ----- the model --------------------------------------------------------------------------- */

/* scores[p] = scale * (q . k[p]) for p < seen. Eight positions at a time where head_dim allows:
 * eight sums reduce together, where one at a time spends most of its time reducing. */
static void attention_scores(const float *q, const float *k, int seen, int head_dim, float scale, float *scores) {
    int p = 0;
    if (head_dim % 8 == 0) {
        for (; p + 8 <= seen; p += 8) {
            __m256 sums[8];
            for (int u = 0; u < 8; u++) sums[u] = _mm256_setzero_ps();
            for (int i = 0; i < head_dim; i += 8) {
                __m256 qi = _mm256_loadu_ps(q + i);
                for (int u = 0; u < 8; u++) sums[u] = _mm256_fmadd_ps(qi, _mm256_loadu_ps(k + (size_t)(p + u) * head_dim + i), sums[u]);
            }
            __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(sums[0], sums[1]), _mm256_hadd_ps(sums[2], sums[3]));
            __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(sums[4], sums[5]), _mm256_hadd_ps(sums[6], sums[7]));
            __m256 total = _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
            _mm256_storeu_ps(scores + p, _mm256_mul_ps(total, _mm256_set1_ps(scale)));
        }
    }
    for (; p < seen; p++) scores[p] = dot(q, k + (size_t)p * head_dim, head_dim) * scale;
}

/* out = sum over p < seen of weights[p] * v[p]. For head sizes up to 64 (multiples of 8), the
 * whole head is held in registers and two positions are summed at once, in separate sums: one
 * running sum per 8 floats waited on each multiply-add's latency at every position. Other head
 * sizes go 8 floats at a time, one position at a time. */
#define MAX_REGISTER_HEAD 64
static void weighted_sum(const float *weights, const float *v, int seen, int head_dim, float *out) {
    if (head_dim % 8 == 0 && head_dim <= MAX_REGISTER_HEAD) {
        int vectors = head_dim / 8, p = 0;
        __m256 even[MAX_REGISTER_HEAD / 8], odd[MAX_REGISTER_HEAD / 8];
        for (int c = 0; c < vectors; c++) even[c] = odd[c] = _mm256_setzero_ps();
        for (; p + 2 <= seen; p += 2) {
            __m256 w0 = _mm256_set1_ps(weights[p]), w1 = _mm256_set1_ps(weights[p + 1]);
            const float *v0 = v + (size_t)p * head_dim, *v1 = v0 + head_dim;
            for (int c = 0; c < vectors; c++) {
                even[c] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(v0 + 8 * c), even[c]);
                odd[c] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(v1 + 8 * c), odd[c]);
            }
        }
        if (p < seen) {
            __m256 w0 = _mm256_set1_ps(weights[p]);
            for (int c = 0; c < vectors; c++)
                even[c] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(v + (size_t)p * head_dim + 8 * c), even[c]);
        }
        for (int c = 0; c < vectors; c++) _mm256_storeu_ps(out + 8 * c, _mm256_add_ps(even[c], odd[c]));
        return;
    }
    int i = 0;
    for (; i + 8 <= head_dim; i += 8) {
        __m256 total = _mm256_setzero_ps();
        for (int p = 0; p < seen; p++)
            total = _mm256_fmadd_ps(_mm256_set1_ps(weights[p]), _mm256_loadu_ps(v + (size_t)p * head_dim + i), total);
        _mm256_storeu_ps(out + i, total);
    }
    for (; i < head_dim; i++) {
        float total = 0.0f;
        for (int p = 0; p < seen; p++) total += weights[p] * v[(size_t)p * head_dim + i];
        out[i] = total;
    }
}

/* Causal self-attention for `steps` new positions per batch row, starting at `start`; the new
 * keys and values are already in the cache. qkv rows are [q | k | v], head h at h*head_dim.
 * Each (batch row, head) pair is independent, so long prompts split them between threads.
 * Returns OK or ERROR_OUT_OF_MEMORY. */
static int attend(const Model *m, int layer, const float *qkv, int batch, int steps, int start, const float *keys,
                   const float *values, int cache_batch, int capacity, float *out, int threads) {
    int d = m->d_model, heads = m->n_heads, head_dim = d / heads;
    float scale = 1.0f / sqrtf((float)head_dim);
    int parallel = threads > 1 && (long)steps * (start + steps) * d >= MIN_PARALLEL_ATTENTION, status = OK;
    #pragma omp parallel for num_threads(threads) schedule(static) if(parallel)
    for (int pair = 0; pair < batch * heads; pair++) {
        int b = pair / heads, h = pair % heads;
        size_t head_offset = (((size_t)layer * cache_batch + b) * heads + h) * capacity * head_dim;
        const float *k = keys + head_offset, *v = values + head_offset;
        float *scores = malloc(sizeof(float) * (start + steps));
        if (!scores) {
            status = ERROR_OUT_OF_MEMORY;  /* every writer writes the same value */
            continue;
        }
        for (int t = 0; t < steps; t++) {
            int row = b * steps + t, seen = start + t + 1;
            const float *q = qkv + (size_t)row * 3 * d + h * head_dim;
            attention_scores(q, k, seen, head_dim, scale, scores);
            softmax(scores, seen);
            weighted_sum(scores, v, seen, head_dim, out + (size_t)row * d + h * head_dim);
        }
        free(scores);
    }
    return status;
}

/* Logits for `tokens` (batch, steps) placed after `start` cached positions. Keys and values of
 * the new positions are written into `keys`/`values`, laid out (n_layers, cache_batch, n_heads,
 * capacity, head_dim) as horror.model.KVCache. `logits` receives (batch, vocab) for the
 * last position of each row when `last_only`, else (batch, steps, vocab). Returns 0, or an
 * error code (nothing is written to the cache when the arguments are bad). */
int horror_forward(const Model *m, float *keys, float *values, int32_t cache_batch, int32_t capacity,
                   const int64_t *tokens, int32_t batch, int32_t steps, int32_t start, int32_t last_only,
                   float *logits, int32_t threads) {
    int d = m->d_model, d_ff = m->d_ff, heads = m->n_heads;
    if (batch < 1 || batch > cache_batch || steps < 1 || start < 0 || start + steps > capacity
        || capacity > m->context_length || d % heads)
        return ERROR_BAD_ARGUMENT;
    if (threads < 1) threads = 1;
    for (int i = 0; i < batch * steps; i++)
        if (tokens[i] < 0 || tokens[i] >= m->vocab_size) return ERROR_BAD_ARGUMENT;

    size_t rows = (size_t)batch * steps, widest = (size_t)(d_ff > 3 * d ? d_ff : 3 * d);
    float *x = malloc(sizeof(float) * rows * d), *normed = malloc(sizeof(float) * rows * d);
    float *wide = malloc(sizeof(float) * rows * widest), *attended = malloc(sizeof(float) * rows * d);
    Quantized quantized = {malloc(rows * widest), malloc(rows * widest), malloc(sizeof(float) * rows)};
    int status = OK;
    if (!x || !normed || !wide || !attended || !quantized.q || !quantized.magnitude || !quantized.scale) {
        status = ERROR_OUT_OF_MEMORY;
        goto done;
    }

    for (size_t r = 0; r < rows; r++) {
        const float *token = m->token_embedding + (size_t)tokens[r] * d;
        const float *position = m->position_embedding + (size_t)(start + (int)(r % steps)) * d;
        for (int i = 0; i < d; i++) x[r * d + i] = token[i] + position[i];
    }

    int head_dim = d / heads;
    for (int l = 0; l < m->n_layers; l++) {
        const Layer *layer = &m->layers[l];
        layer_norm(x, rows, d, layer->ln_attn_weight, layer->ln_attn_bias, m->layer_norm_eps, normed);
        quantize_rows(normed, rows, d, &quantized);
        linear(&quantized, rows, layer->qkv_weight, layer->qkv_scale, layer->qkv_bias, d, 3 * d, wide, 0, threads);
        for (int b = 0; b < batch; b++) {
            for (int t = 0; t < steps; t++) {
                const float *row = wide + ((size_t)b * steps + t) * 3 * d;
                for (int h = 0; h < heads; h++) {
                    size_t at = ((((size_t)l * cache_batch + b) * heads + h) * capacity + start + t) * head_dim;
                    memcpy(keys + at, row + d + h * head_dim, sizeof(float) * head_dim);
                    memcpy(values + at, row + 2 * d + h * head_dim, sizeof(float) * head_dim);
                }
            }
        }
        if ((status = attend(m, l, wide, batch, steps, start, keys, values, cache_batch, capacity, attended, threads)))
            goto done;
        quantize_rows(attended, rows, d, &quantized);
        linear(&quantized, rows, layer->attn_proj_weight, layer->attn_proj_scale, layer->attn_proj_bias, d, d, x, 1, threads);

        layer_norm(x, rows, d, layer->ln_mlp_weight, layer->ln_mlp_bias, m->layer_norm_eps, normed);
        quantize_rows(normed, rows, d, &quantized);
        linear(&quantized, rows, layer->fc_weight, layer->fc_scale, layer->fc_bias, d, d_ff, wide, 0, threads);
        gelu(wide, rows * d_ff);
        quantize_rows(wide, rows, d_ff, &quantized);
        linear(&quantized, rows, layer->mlp_proj_weight, layer->mlp_proj_scale, layer->mlp_proj_bias, d_ff, d, x, 1, threads);
    }

    size_t out_rows = rows;
    if (last_only) {  /* only the last position of each batch row needs the (large) head */
        for (int b = 0; b < batch; b++) memmove(x + (size_t)b * d, x + ((size_t)b * steps + steps - 1) * d, sizeof(float) * d);
        out_rows = batch;
    }
    layer_norm(x, out_rows, d, m->ln_final_weight, m->ln_final_bias, m->layer_norm_eps, normed);
    quantize_rows(normed, out_rows, d, &quantized);
    linear(&quantized, out_rows, m->head_weight, m->head_scale, NULL, d, m->vocab_size, logits, 0, threads);

done:
    free(x), free(normed), free(wide), free(attended);
    free(quantized.q), free(quantized.magnitude), free(quantized.scale);
    return status;
}
