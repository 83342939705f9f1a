/*
 * llama_decode.c: the llama.cpp side of benches/arm/run.sh, the same work as LLAMA_SIDE in
 * benches/compare_llama_cpp.py without Python (so qemu-user can run it as one static aarch64
 * program and count its instructions):
 *
 *   llama_decode MODEL.gguf STEPS ID,ID,ID,...
 *
 * loads the GGUF, evaluates the given prompt ids as one batch (prefill; logits of the last
 * token only), then STEPS greedy decode steps: argmax of the logits, fed back one token at a
 * time; one thread. Context settings as llama-cpp-python's `Llama(n_ctx=512, n_batch=512)`
 * (n_ubatch 512, flash attention off, f16 cache, mmap on). Prints one JSON line,
 * {"prompt_ids": [...], "tokens": [...]}. STEPS may be 0 (prefill only).
 * Built by benches/arm/build_llama.sh against llama.cpp's static libraries.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *user)
{
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.gguf STEPS ID,ID,...\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int steps = atoi(argv[2]);

    /* Prompt ids: comma (or space) separated. */
    int cap = 16, n_prompt = 0;
    llama_token *prompt = malloc(cap * sizeof *prompt);
    for (char *tok = strtok(argv[3], ", "); tok; tok = strtok(NULL, ", ")) {
        if (n_prompt == cap)
            prompt = realloc(prompt, (cap *= 2) * sizeof *prompt);
        prompt[n_prompt++] = (llama_token)atoi(tok);
    }
    if (n_prompt == 0) {
        fprintf(stderr, "no prompt ids\n");
        return 2;
    }

    llama_log_set(quiet, NULL);
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", path);
        return 1;
    }
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = 1;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "cannot make a context\n");
        return 1;
    }

    /* Prefill: the whole prompt as one batch. */
    if (llama_decode(ctx, llama_batch_get_one(prompt, n_prompt)) != 0) {
        fprintf(stderr, "prefill failed\n");
        return 1;
    }

    /* Greedy decode, one token at a time. */
    llama_token *tokens = malloc((steps > 0 ? steps : 1) * sizeof *tokens);
    for (int i = 0; i < steps; i++) {
        llama_token best = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
        tokens[i] = best;
        if (llama_decode(ctx, llama_batch_get_one(&tokens[i], 1)) != 0) {
            fprintf(stderr, "decode step %d failed\n", i);
            return 1;
        }
    }

    printf("{\"prompt_ids\": [");
    for (int i = 0; i < n_prompt; i++)
        printf("%s%d", i ? ", " : "", prompt[i]);
    printf("], \"tokens\": [");
    for (int i = 0; i < steps; i++)
        printf("%s%d", i ? ", " : "", tokens[i]);
    printf("]}\n");

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    free(tokens);
    free(prompt);
    return 0;
}
