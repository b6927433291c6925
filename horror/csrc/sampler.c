/* Choosing the next token in C: horror/sampling.py's `choose_next`, plus the chosen token's
 * log-probability, in one call per step.
 *
 * Why this exists: in PyTorch, choosing a token is ~15 small ops (the penalty's gather and
 * scatter, a top-k and a log-softmax over all 17K logits, ...), each with microseconds of
 * dispatch; per token that cost about as much as the C decoder's whole forward pass.
 *
 * Same rules, same order as choose_next: repetition penalty over the context tokens (divide
 * positive logits, multiply negative ones), <EOS> ban, then either the best token
 * (temperature 0) or top-k -> temperature -> top-p -> min-p over the k best, and a draw.
 * The randomness stays with the caller: `noise` is Exp(1) noise, (batch, top_k), drawn from
 * its torch.Generator just as sample_next draws it, and the token is argmax(p / noise) (the
 * exponential race), so a seed gives the same stories as the PyTorch sampler.
 * Settings it does not cover (no top-k, an n-gram block) stay in Python.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vector_math.h"

enum { OK = 0, ERROR_BAD_ARGUMENT = 1, ERROR_OUT_OF_MEMORY = 2, ERROR_NOTHING_TO_CHOOSE = 3 };

typedef struct {
    float value;
    int32_t index;
} Candidate;

/* Higher value first; on a tie the lower token id, as a stable sort would order them. */
static inline int better(Candidate a, Candidate b) {
    return a.value > b.value || (a.value == b.value && a.index < b.index);
}

/* Restores the heap below `i` in a heap whose root is its worst candidate. */
static void sift_down(Candidate *heap, int size, int i) {
    for (;;) {
        int worst = i, left = 2 * i + 1, right = left + 1;
        if (left < size && better(heap[worst], heap[left])) worst = left;
        if (right < size && better(heap[worst], heap[right])) worst = right;
        if (worst == i) return;
        Candidate swap = heap[i];
        heap[i] = heap[worst], heap[worst] = swap;
        i = worst;
    }
}

/* The k best of values[0, n) into best[0, k), best first: a heap of the k best so far, whose
 * root (the worst of them) each value must beat. Eight values are checked against the root at
 * once; on real logits almost none beat it, so this is one pass at the speed of a load. */
static void best_k(const float *values, int n, int k, Candidate *best) {
    for (int i = 0; i < k; i++) best[i] = (Candidate){values[i], i};
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(best, k, i);
    int i = k;
    for (; i + 8 <= n; i += 8) {
        __m256 greater = _mm256_cmp_ps(_mm256_loadu_ps(values + i), _mm256_set1_ps(best[0].value), _CMP_GT_OQ);
        /* Only a larger value can beat the root: on a tie the root has the lower index. */
        for (int mask = _mm256_movemask_ps(greater); mask; mask &= mask - 1) {
            int at = i + __builtin_ctz(mask);
            if (values[at] > best[0].value) {  /* the root may have risen since the compare */
                best[0] = (Candidate){values[at], at};
                sift_down(best, k, 0);
            }
        }
    }
    for (; i < n; i++) {
        Candidate candidate = {values[i], i};
        if (better(candidate, best[0])) {
            best[0] = candidate;
            sift_down(best, k, 0);
        }
    }
    for (int size = k; size > 1; size--) {  /* heap sort: the worst goes to the end each time */
        Candidate swap = best[0];
        best[0] = best[size - 1], best[size - 1] = swap;
        sift_down(best, size - 1, 0);
    }
}

/* log(sum(exp(x))) over n floats. */
static float log_sum_exp(const float *x, int n) {
    float largest = max_of(x, n);
    __m256 total8 = _mm256_setzero_ps(), largest8 = _mm256_set1_ps(largest);
    int i = 0;
    for (; i + 8 <= n; i += 8) total8 = _mm256_add_ps(total8, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), largest8)));
    double total = sum8(total8);
    for (; i < n; i++) total += expf(x[i] - largest);
    return largest + (float)log(total);
}

/* Probabilities (softmax) of the candidates still in play (keep[i]); the rest get 0. */
static void candidate_probabilities(const float *values, const uint8_t *keep, int k, float *probs) {
    float largest = -INFINITY;
    for (int i = 0; i < k; i++)
        if (keep[i] && values[i] > largest) largest = values[i];
    double total = 0.0;
    for (int i = 0; i < k; i++) total += probs[i] = keep[i] ? expf(values[i] - largest) : 0.0f;
    for (int i = 0; i < k; i++) probs[i] = (float)(probs[i] / total);
}

/* Top-k -> temperature -> top-p -> min-p -> draw, for one row. Returns the chosen token id. */
static int32_t draw(const Candidate *best, int k, float temperature, float top_p, float min_p, const float *noise,
                    float *values, float *probs, uint8_t *keep) {
    for (int i = 0; i < k; i++) values[i] = best[i].value / temperature, keep[i] = best[i].value != -INFINITY;
    if (top_p < 1.0f) {  /* drop a token once the better ones already reach top_p (never the best) */
        candidate_probabilities(values, keep, k, probs);
        double before = 0.0;
        for (int i = 0; i < k; i++) {
            if (before >= top_p) keep[i] = 0;
            before += probs[i];
        }
    }
    if (min_p > 0.0f) {  /* keep tokens at least min_p times as likely as the best */
        candidate_probabilities(values, keep, k, probs);
        for (int i = 0; i < k; i++)
            if (probs[i] < probs[0] * min_p) keep[i] = 0;
    }
    candidate_probabilities(values, keep, k, probs);
    int chosen = 0;
    float best_ratio = -1.0f;
    for (int i = 0; i < k; i++) {
        float ratio = probs[i] / noise[i];
        if (ratio > best_ratio) best_ratio = ratio, chosen = i;
    }
    return best[chosen].index;
}

/* For each of `batch` rows of `logits` (batch, vocab): the next token id into `chosen` and its
 * log-probability under the raw logits into `log_probs`. `context` (batch, context_length) is
 * what the repetition penalty looks at; `banned` is a token id to forbid, or -1.
 * temperature 0 picks the best token (top_k and noise unused); otherwise 1 <= top_k < vocab
 * and noise is (batch, top_k). `logits` is not changed. Returns OK or an error code. */
int horror_choose_next(const float *logits, int32_t batch, int32_t vocab, const int64_t *context,
                       int32_t context_length, float repetition_penalty, int32_t banned, float temperature,
                       int32_t top_k, float top_p, float min_p, const float *noise, int64_t *chosen,
                       float *log_probs) {
    int sampling = temperature > 0.0f;
    if (batch < 1 || vocab < 2 || context_length < 0 || banned >= vocab || !(repetition_penalty > 0.0f)
        || (sampling && (top_k < 1 || top_k >= vocab || !noise)) || !(top_p > 0.0f) || top_p > 1.0f
        || !(min_p >= 0.0f) || min_p > 1.0f)
        return ERROR_BAD_ARGUMENT;
    for (int64_t i = 0; i < (int64_t)batch * context_length; i++)
        if (context[i] < 0 || context[i] >= vocab) return ERROR_BAD_ARGUMENT;

    int k = sampling ? top_k : 1;
    float *penalised = malloc(sizeof(float) * vocab), *values = malloc(sizeof(float) * k);
    float *probs = malloc(sizeof(float) * k);
    Candidate *best = malloc(sizeof(Candidate) * k);
    uint8_t *keep = malloc(k);
    int status = OK;
    if (!penalised || !values || !probs || !best || !keep) {
        status = ERROR_OUT_OF_MEMORY;
        goto done;
    }
    for (int b = 0; b < batch; b++) {
        const float *raw = logits + (size_t)b * vocab;
        memcpy(penalised, raw, sizeof(float) * vocab);
        if (repetition_penalty != 1.0f) {
            /* From the raw logit each time, so a token seen twice is penalised once. */
            for (int t = 0; t < context_length; t++) {
                int64_t token = context[(size_t)b * context_length + t];
                penalised[token] = raw[token] > 0.0f ? raw[token] / repetition_penalty : raw[token] * repetition_penalty;
            }
        }
        if (banned >= 0) penalised[banned] = -INFINITY;
        best_k(penalised, vocab, k, best);
        if (best[0].value == -INFINITY || isnan(best[0].value)) {
            status = ERROR_NOTHING_TO_CHOOSE;
            goto done;
        }
        int32_t token = sampling ? draw(best, k, temperature, top_p, min_p, noise + (size_t)b * k, values, probs, keep)
                                 : best[0].index;
        chosen[b] = token;
        log_probs[b] = raw[token] - log_sum_exp(raw, vocab);
    }
done:
    free(penalised), free(values), free(probs), free(best), free(keep);
    return status;
}
