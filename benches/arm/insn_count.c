/*
 * insn_count.c: a qemu-user TCG plugin that counts the guest instructions a program executes.
 *
 *   gcc -shared -fPIC -O2 -o insn_count.so benches/arm/insn_count.c
 *   qemu-aarch64 -cpu cortex-a76 -plugin ./insn_count.so,out=count.txt ./prog
 *   qemu-aarch64 -plugin ./insn_count.so -d plugin ./prog     # the line goes to stderr
 *
 * At exit it writes one line, "insns N", to the file given by `out=` (if any) and through
 * qemu_plugin_outs (shown with `-d plugin`). With `blocks=PATH` it also writes, for every
 * translation block, "VADDR N_INSNS EXECUTIONS" (hex, decimal, decimal) to PATH, for
 * attributing the count to functions (benches/arm/symbols.py maps the addresses to symbols). Plugin API version 1, as Debian 12's qemu 7.2
 * has it; no qemu header is packaged, so the few declarations needed are written out below.
 *
 * How: each translation block, when translated, gets an inline "add its instruction count
 * to a counter" op that runs every time the block executes. Blocks that exit early (a fault,
 * a syscall in the middle) are counted whole; for ordinary code that error is negligible.
 *
 * Threads: an inline add is not atomic, and qemu-user runs guest threads on host threads in
 * parallel, so with several guest threads the inline counter can lose counts. `mode=atomic`
 * instead calls back into the plugin for every block and adds atomically: exact with any
 * number of threads, several times slower. The benches run one thread, with the inline add.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- The part of qemu's include/qemu/qemu-plugin.h (API version 1) used here. ---- */
#define PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;              /* opaque */
typedef struct qemu_info_t qemu_info_t; /* only ever used through a pointer here */

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb,
                                          qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                    void *userdata);
void qemu_plugin_outs(const char *string);

PLUGIN_EXPORT int qemu_plugin_version = 1;
/* ---- end of the API declarations ---- */

static uint64_t total;          /* executed guest instructions, all threads */
static int atomic_mode;         /* mode=atomic: per-block callback with an atomic add */
static const char *out_path;    /* out=PATH: also write the count there */
static const char *blocks_path; /* blocks=PATH: per-block counts there */

/* blocks=PATH: one record per translated block, each with its own inline counter of
 * executions. A block translated again (after a flush) gets a second record with the same
 * address; the reader adds them up. Pushed on a lock-free list: translation can happen on
 * several threads. */
struct block {
    uint64_t vaddr;
    uint64_t n_insns;
    uint64_t executions;
    struct block *next;
};
static struct block *blocks;

static void block_executed(unsigned int vcpu_index, void *n_insns)
{
    (void)vcpu_index;
    __atomic_fetch_add(&total, (uint64_t)(uintptr_t)n_insns, __ATOMIC_RELAXED);
}

static void block_translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (blocks_path) {
        struct block *b = calloc(1, sizeof *b);
        if (b) {
            b->vaddr = qemu_plugin_tb_vaddr(tb);
            b->n_insns = n;
            b->next = __atomic_load_n(&blocks, __ATOMIC_RELAXED);
            while (!__atomic_compare_exchange_n(&blocks, &b->next, b, 1, __ATOMIC_RELEASE,
                                                __ATOMIC_RELAXED))
                ;
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                     &b->executions, 1);
        }
    }
    if (atomic_mode)
        qemu_plugin_register_vcpu_tb_exec_cb(tb, block_executed, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)(uintptr_t)n);
    else
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, n);
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    char line[64];
    snprintf(line, sizeof line, "insns %" PRIu64 "\n", __atomic_load_n(&total, __ATOMIC_RELAXED));
    qemu_plugin_outs(line);
    if (out_path) {
        FILE *f = fopen(out_path, "w");
        if (f) {
            fputs(line, f);
            fclose(f);
        } else {
            perror(out_path);
        }
    }
    if (blocks_path) {
        FILE *f = fopen(blocks_path, "w");
        if (!f) {
            perror(blocks_path);
            return;
        }
        for (struct block *b = __atomic_load_n(&blocks, __ATOMIC_ACQUIRE); b; b = b->next)
            if (b->executions)
                fprintf(f, "%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", b->vaddr, b->n_insns,
                        b->executions);
        fclose(f);
    }
}

PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                      char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = argv[i] + 4;
        } else if (strncmp(argv[i], "blocks=", 7) == 0) {
            blocks_path = argv[i] + 7;
        } else if (strcmp(argv[i], "mode=atomic") == 0) {
            atomic_mode = 1;
        } else if (strcmp(argv[i], "mode=inline") == 0) {
            atomic_mode = 0;
        } else {
            fprintf(stderr, "insn_count: unknown argument %s (out=PATH, blocks=PATH, mode=inline|atomic)\n",
                    argv[i]);
            return 1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, block_translated);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
