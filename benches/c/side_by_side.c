/*
 * snaptree against libvirt's in-memory test driver, side by side in one process and one
 * run: the same operations, the same names, the same order, timed the same way, and the
 * ratio libvirt's time / snaptree's printed for each (above 1: snaptree is faster).
 *
 *   side_by_side [--snaptree-only] [--state-dir DIR] [--lookups N] SIZE...
 *
 * For each SIZE, each peer builds a chain of SIZE snapshots (each the child of the
 * previous: the deepest shape) in a fresh domain and then measures:
 *   create          every create of the chain, and the last 1,000 (at ~SIZE)
 *   lookup by name  N lookups of random names (same names for both, made before the clock
 *                   starts), handle freed
 *   leaves          list the names of the leaves
 *   list names      list the names of all SIZE snapshots (and free them)
 *   delete subtree  delete the root and all its descendants in one call, per snapshot
 *   list floor      the C library alone making and freeing SIZE names of the same lengths:
 *                   what any listing that hands out one string per name pays
 *
 * snaptree: libsnaptree's C API on a `null` domain (metadata only, durable SQLite store)
 * in a fresh state directory under --state-dir (default $TMPDIR or /tmp). libvirt:
 * `test:///default`, domain "test" (running), a fresh connection per size.
 *
 * Each figure is given as wall time and as "idle machine" time per operation: wall time
 * minus the time this thread spent waiting for a CPU (/proc/thread-self/schedstat), what an
 * idle machine would show, I/O waits included. The load average is printed before and
 * after, since wall time on a busy machine says more about the neighbours. --snaptree-only skips libvirt (for sizes where
 * its test driver is impractical).
 *
 * Exit status: 0 when every operation succeeded, 1 on the first failure (said on stderr).
 * The deep recursion of libvirt's descendant walks needs a large stack: the benchmark runs
 * in a thread with 512 MiB of (lazily committed) stack.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "snaptree.h"

/* ---- timing ---- */

struct sample {
    double wall; /* seconds */
    double idle; /* seconds: wall time minus the time this thread waited for a CPU */
};

static double clock_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seconds this thread has waited on a run queue (the second field of
 * /proc/thread-self/schedstat): other processes' load, not ours. */
static double queued_s(void)
{
    unsigned long long on_cpu = 0, waited = 0;
    FILE *f = fopen("/proc/thread-self/schedstat", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%llu %llu", &on_cpu, &waited) != 2)
        waited = 0;
    fclose(f);
    return (double)waited * 1e-9;
}

static struct sample now(void)
{
    double q = queued_s();
    struct sample s = { clock_s(), 0 };
    s.idle = s.wall - q;
    return s;
}

/* Microseconds per operation between two samples. */
static struct sample per_op(struct sample a, struct sample b, double ops)
{
    struct sample s = { (b.wall - a.wall) * 1e6 / ops, (b.idle - a.idle) * 1e6 / ops };
    return s;
}

/* ---- failures ---- */

static void die(const char *peer, const char *what)
{
    fprintf(stderr, "side_by_side: %s: %s failed", peer, what);
    if (strcmp(peer, "snaptree") == 0) {
        const char *m = snaptree_last_error_message();
        fprintf(stderr, ": %s (code %d)", m != NULL ? m : "no message", snaptree_last_error_code());
    } else {
        virErrorPtr e = virGetLastError();
        if (e != NULL && e->message != NULL)
            fprintf(stderr, ": %s", e->message);
    }
    fputc('\n', stderr);
    exit(1);
}

/* ---- the operations, one table per peer ---- */

enum { OP_CREATE, OP_CREATE_LAST, OP_LOOKUP, OP_LEAVES, OP_LIST, OP_DELETE, OP_COUNT };

static const char *const op_names[OP_COUNT] = {
    "create (average over the chain)",
    "create (the last 1,000)",
    "lookup by name",
    "leaves",
    "list names",
    "delete subtree, per snapshot",
};

struct peer {
    const char *name;
    void *(*open)(long size);
    int (*create)(void *p, const char *name);
    int (*lookup)(void *p, const char *name);
    int (*leaves)(void *p, char **names, int len);
    int (*list)(void *p, char **names, int len);
    int (*delete_subtree)(void *p, const char *name);
    void (*close)(void *p);
    void (*free_name)(char *name);
};

/* -- snaptree -- */

static const char *state_parent;

struct st {
    snaptree_conn *conn;
    snaptree_domain *dom;
    char dir[4096];
};

static void *st_open(long size)
{
    struct st *s = calloc(1, sizeof *s);
    if (s == NULL)
        die("snaptree", "allocation");
    snprintf(s->dir, sizeof s->dir, "%s/snaptree-side-by-side-%ld-XXXXXX", state_parent, size);
    if (mkdtemp(s->dir) == NULL) {
        perror(s->dir);
        exit(1);
    }
    s->conn = snaptree_conn_open(s->dir, 0);
    if (s->conn == NULL)
        die("snaptree", "snaptree_conn_open");
    s->dom = snaptree_domain_define_xml(s->conn, "<domain type='null'><name>bench</name></domain>", 0);
    if (s->dom == NULL)
        die("snaptree", "snaptree_domain_define_xml");
    return s;
}

static int st_create(void *p, const char *name)
{
    struct st *s = p;
    char xml[256];
    snaptree_snapshot *snap;
    snprintf(xml, sizeof xml, "<domainsnapshot><name>%s</name></domainsnapshot>", name);
    snap = snaptree_snapshot_create_xml(s->dom, xml, 0);
    if (snap == NULL)
        return -1;
    snaptree_snapshot_free(snap);
    return 0;
}

static int st_lookup(void *p, const char *name)
{
    struct st *s = p;
    snaptree_snapshot *snap = snaptree_snapshot_lookup_by_name(s->dom, name, 0);
    if (snap == NULL)
        return -1;
    snaptree_snapshot_free(snap);
    return 0;
}

static int st_leaves(void *p, char **names, int len)
{
    struct st *s = p;
    return snaptree_snapshot_list_names(s->dom, names, len, SNAPTREE_SNAPSHOT_LIST_LEAVES);
}

static int st_list(void *p, char **names, int len)
{
    struct st *s = p;
    return snaptree_snapshot_list_names(s->dom, names, len, 0);
}

static int st_delete_subtree(void *p, const char *name)
{
    struct st *s = p;
    int rc;
    snaptree_snapshot *snap = snaptree_snapshot_lookup_by_name(s->dom, name, 0);
    if (snap == NULL)
        return -1;
    rc = snaptree_snapshot_delete(snap, SNAPTREE_SNAPSHOT_DELETE_DISCARD_FORCE);
    snaptree_snapshot_free(snap);
    return rc;
}

static void st_close(void *p)
{
    struct st *s = p;
    char cmd[4200];
    snaptree_domain_free(s->dom);
    snaptree_conn_close(s->conn);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "side_by_side: cannot remove %s\n", s->dir);
    free(s);
}

static void st_free_name(char *name)
{
    snaptree_free(name);
}

/* -- libvirt -- */

struct lv {
    virConnectPtr conn;
    virDomainPtr dom;
};

static void *lv_open(long size)
{
    struct lv *l = calloc(1, sizeof *l);
    (void)size;
    if (l == NULL)
        die("libvirt", "allocation");
    l->conn = virConnectOpen("test:///default");
    if (l->conn == NULL)
        die("libvirt", "virConnectOpen(test:///default)");
    l->dom = virDomainLookupByName(l->conn, "test");
    if (l->dom == NULL)
        die("libvirt", "virDomainLookupByName(test)");
    return l;
}

static int lv_create(void *p, const char *name)
{
    struct lv *l = p;
    char xml[256];
    virDomainSnapshotPtr snap;
    snprintf(xml, sizeof xml, "<domainsnapshot><name>%s</name></domainsnapshot>", name);
    snap = virDomainSnapshotCreateXML(l->dom, xml, 0);
    if (snap == NULL)
        return -1;
    virDomainSnapshotFree(snap);
    return 0;
}

static int lv_lookup(void *p, const char *name)
{
    struct lv *l = p;
    virDomainSnapshotPtr snap = virDomainSnapshotLookupByName(l->dom, name, 0);
    if (snap == NULL)
        return -1;
    virDomainSnapshotFree(snap);
    return 0;
}

static int lv_leaves(void *p, char **names, int len)
{
    struct lv *l = p;
    return virDomainSnapshotListNames(l->dom, names, len, VIR_DOMAIN_SNAPSHOT_LIST_LEAVES);
}

static int lv_list(void *p, char **names, int len)
{
    struct lv *l = p;
    return virDomainSnapshotListNames(l->dom, names, len, 0);
}

static int lv_delete_subtree(void *p, const char *name)
{
    struct lv *l = p;
    int rc;
    virDomainSnapshotPtr snap = virDomainSnapshotLookupByName(l->dom, name, 0);
    if (snap == NULL)
        return -1;
    rc = virDomainSnapshotDelete(snap, VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN);
    virDomainSnapshotFree(snap);
    return rc;
}

static void lv_close(void *p)
{
    struct lv *l = p;
    virDomainFree(l->dom);
    virConnectClose(l->conn);
    free(l);
}

static void lv_free_name(char *name)
{
    free(name);
}

static const struct peer peers[2] = {
    { "libvirt", lv_open, lv_create, lv_lookup, lv_leaves, lv_list, lv_delete_subtree, lv_close, lv_free_name },
    { "snaptree", st_open, st_create, st_lookup, st_leaves, st_list, st_delete_subtree, st_close, st_free_name },
};

/* ---- one peer at one size ---- */

static long lookups = 100000;

/* At most this many lookup names are made in advance (6 MiB); more lookups go round. */
#define LOOKUP_RING 262144L

/* A fixed pseudo-random sequence (the same for both peers). */
static uint64_t rng_state;
static uint64_t rng(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return rng_state >> 33;
}

/* Runs `list` (and frees what it returned) until at least `min_s` seconds and 3 runs have
 * passed; µs per run. The clock is read every run (clock_gettime: no system call), the
 * run-queue wait only at both ends. */
static struct sample repeat_list(const struct peer *pe, void *p, int (*list)(void *, char **, int),
                                 char **names, int len, int expect, const char *what, double min_s)
{
    struct sample a = now(), b;
    long runs = 0;
    do {
        int n = list(p, names, len), i;
        if (n != expect)
            die(pe->name, what);
        for (i = 0; i < n; i++)
            pe->free_name(names[i]);
        runs++;
    } while (runs < 3 || (clock_s() - a.wall < min_s && runs < 10000000));
    b = now();
    return per_op(a, b, (double)runs);
}

static void run_peer(const struct peer *pe, long size, struct sample out[OP_COUNT])
{
    void *p = pe->open(size);
    char name[64];
    char **names = calloc((size_t)size + 1, sizeof *names);
    struct sample a, b, last;
    char (*ring)[24];
    long i, r, ring_len;

    if (names == NULL)
        die(pe->name, "allocation");

    a = now();
    last = a;
    for (i = 0; i < size; i++) {
        if (i == size - 1000 || (size <= 1000 && i == 0))
            last = now();
        snprintf(name, sizeof name, "s%ld", i);
        if (pe->create(p, name) != 0)
            die(pe->name, "create");
    }
    b = now();
    out[OP_CREATE] = per_op(a, b, (double)size);
    out[OP_CREATE_LAST] = per_op(last, b, (double)(size < 1000 ? size : 1000));

    /* The names are made before the clock starts (formatting one took 15-20% of a
     * snaptree lookup): a ring of at most LOOKUP_RING, gone through in order. */
    rng_state = 42;
    ring_len = lookups < LOOKUP_RING ? lookups : LOOKUP_RING;
    ring = malloc((size_t)ring_len * sizeof *ring);
    if (ring == NULL)
        die(pe->name, "allocation");
    for (i = 0; i < ring_len; i++)
        snprintf(ring[i], sizeof ring[i], "s%ld", (long)(rng() % (uint64_t)size));
    a = now();
    for (i = 0, r = 0; i < lookups; i++) {
        if (pe->lookup(p, ring[r]) != 0)
            die(pe->name, "lookup by name");
        if (++r == ring_len)
            r = 0;
    }
    b = now();
    out[OP_LOOKUP] = per_op(a, b, (double)lookups);
    free(ring);

    out[OP_LEAVES] = repeat_list(pe, p, pe->leaves, names, (int)size, 1, "leaves", 0.5);
    out[OP_LIST] = repeat_list(pe, p, pe->list, names, (int)size, (int)size, "list names", 1.0);

    a = now();
    if (pe->delete_subtree(p, "s0") != 0)
        die(pe->name, "delete subtree");
    b = now();
    out[OP_DELETE] = per_op(a, b, (double)size);
    if (pe->list(p, names, 1) != 0)
        die(pe->name, "delete subtree (snapshots are left)");

    free(names);
    pe->close(p);
}

/* What any listing with this API shape pays at least: one malloc, copy and free per name
 * (each name is the caller's to free), done here by the C library alone on the same names,
 * timed as repeat_list times a listing. It runs on a thread of its own, so on a fresh
 * malloc arena: run after the peers on their arena, it measured anywhere from 0.7× to 1.5×
 * snaptree's listing, depending on what the peers had left in the heap. libvirt ÷ this is
 * about the best ratio a listing could reach. */
struct floor_run {
    long size;
    struct sample result;
};

/* The floor's listing: a new copy of each of the `len` names `p` holds, made as a peer's
 * listing makes them; freed through the peer table, as theirs are. */
static int floor_list(void *p, char **names, int len)
{
    char **src = p;
    int i;

    for (i = 0; i < len; i++) {
        size_t n = strlen(src[i]) + 1;
        names[i] = malloc(n);
        if (names[i] == NULL)
            die("floor", "allocation");
        memcpy(names[i], src[i], n);
    }
    return len;
}

static void floor_free_name(char *name)
{
    free(name);
}

static const struct peer floor_peer = { "floor", NULL, NULL, NULL, NULL, floor_list, NULL, NULL, floor_free_name };

static void *list_floor_thread(void *arg)
{
    struct floor_run *run = arg;
    long size = run->size, i;
    char **src = calloc((size_t)size, sizeof *src), **out = calloc((size_t)size + 1, sizeof *out);
    char name[64];

    if (src == NULL || out == NULL)
        die("floor", "allocation");
    for (i = 0; i < size; i++) {
        snprintf(name, sizeof name, "s%ld", i);
        src[i] = strdup(name);
        if (src[i] == NULL)
            die("floor", "allocation");
    }
    run->result = repeat_list(&floor_peer, src, floor_list, out, (int)size, (int)size, "list floor", 1.0);
    for (i = 0; i < size; i++)
        free(src[i]);
    free(src);
    free(out);
    return NULL;
}

static struct sample list_floor(long size)
{
    struct floor_run run = { size, { 0, 0 } };
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, list_floor_thread, &run);

    if (rc != 0) {
        fprintf(stderr, "side_by_side: cannot start the floor's thread: %s\n", strerror(rc));
        exit(1);
    }
    pthread_join(thread, NULL);
    return run.result;
}

static void print_load(const char *when)
{
    double load[3];
    if (getloadavg(load, 3) == 3)
        printf("load average %s: %.2f %.2f %.2f (%ld CPUs)\n", when, load[0], load[1], load[2],
               sysconf(_SC_NPROCESSORS_ONLN));
}

struct args {
    int snaptree_only;
    int nsizes;
    long *sizes;
};

static void *bench(void *arg)
{
    const struct args *a = arg;
    int s, op;

    print_load("at the start");
    for (s = 0; s < a->nsizes; s++) {
        long size = a->sizes[s];
        struct sample r[2][OP_COUNT];
        int first = a->snaptree_only ? 1 : 0, k;

        struct sample floor;

        for (k = first; k < 2; k++)
            run_peer(&peers[k], size, r[k]);
        floor = list_floor(size);

        printf("\n%ld snapshots (a chain), %ld lookups; µs per operation, idle machine (wall)\n", size, lookups);
        if (a->snaptree_only) {
            printf("| operation | snaptree |\n| --- | --- |\n");
            for (op = 0; op < OP_COUNT; op++)
                printf("| %s | %.3f (%.3f) |\n", op_names[op], r[1][op].idle, r[1][op].wall);
        } else {
            printf("| operation | libvirt ÷ snaptree, idle machine | wall | libvirt | snaptree |\n"
                   "| --- | --- | --- | --- | --- |\n");
            for (op = 0; op < OP_COUNT; op++)
                printf("| %s | %.1f× | %.1f× | %.3f (%.3f) | %.3f (%.3f) |\n", op_names[op],
                       r[0][op].idle / r[1][op].idle, r[0][op].wall / r[1][op].wall, r[0][op].idle,
                       r[0][op].wall, r[1][op].idle, r[1][op].wall);
        }
        printf("list names, the floor (malloc + copy + free of every name, the C library alone): %.3f (%.3f) µs",
               floor.idle, floor.wall);
        if (!a->snaptree_only)
            printf("; libvirt ÷ floor %.1f× (the most any listing could reach), snaptree ÷ floor %.2f×\n",
                   r[0][OP_LIST].idle / floor.idle, r[1][OP_LIST].idle / floor.idle);
        else
            printf("; snaptree ÷ floor %.2f×\n", r[1][OP_LIST].idle / floor.idle);
        fflush(stdout);
    }
    print_load("at the end");
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: side_by_side [--snaptree-only] [--state-dir DIR] [--lookups N] SIZE...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct args a = { 0, 0, NULL };
    pthread_attr_t attr;
    pthread_t thread;
    int i, rc;

    state_parent = getenv("TMPDIR") != NULL && getenv("TMPDIR")[0] != '\0' ? getenv("TMPDIR") : "/tmp";
    a.sizes = calloc((size_t)argc, sizeof *a.sizes);
    if (a.sizes == NULL)
        return 1;
    for (i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--snaptree-only") == 0) {
            a.snaptree_only = 1;
        } else if (strcmp(argv[i], "--state-dir") == 0 && i + 1 < argc) {
            state_parent = argv[++i];
        } else if (strcmp(argv[i], "--lookups") == 0 && i + 1 < argc) {
            lookups = strtol(argv[++i], &end, 10);
            if (*end != '\0' || lookups < 1)
                usage();
        } else {
            long n = strtol(argv[i], &end, 10);
            if (*end != '\0' || n < 1 || n > 100000000)
                usage();
            a.sizes[a.nsizes++] = n;
        }
    }
    if (a.nsizes == 0)
        usage();

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)512 << 20);
    rc = pthread_create(&thread, &attr, bench, &a);
    if (rc != 0) {
        fprintf(stderr, "side_by_side: cannot start the benchmark thread: %s\n", strerror(rc));
        return 1;
    }
    pthread_join(thread, NULL);
    free(a.sizes);
    return 0;
}
