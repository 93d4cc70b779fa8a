/*
 * Several threads using one connection at once: creating, renaming, deleting and listing
 * in one shared domain and each in a domain of its own, looking domains up concurrently,
 * with per-thread last errors; then consistency checks on the result, also through a
 * second connection.
 *
 * Environment: as api_test.c (SNAPTREE_TEST_DIR, _BACKEND, _PLUGIN, _DOMAIN_XML, _PREPARE),
 * plus SNAPTREE_TEST_ROUNDS (snapshots each thread creates in the shared domain).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>

#include "check.h"

#define NTHREADS 4
#define MAXROUNDS 64
#define MAXN 1024

static const char *scratch;
static const char *backend = "null";
static const char *plugin;
static const char *domain_xml = "<domain type='null'><name>@NAME@</name></domain>";
static const char *prepare;
static int rounds = 12;
static snaptree_conn *conn;

struct worker {
    int id;
    pthread_t thread;
    /* What the thread left in the shared domain: final names, and which were deleted. */
    char names[MAXROUNDS][64];
    int deleted[MAXROUNDS];
};

static struct worker workers[NTHREADS];

static snaptree_domain *define(const char *name)
{
    char dir[4096], *xml;
    snaptree_domain *dom;

    snprintf(dir, sizeof dir, "%s/thread-domains", scratch);
    CHECK(mkdir(dir, 0700) == 0 || errno == EEXIST);
    snprintf(dir, sizeof dir, "%s/thread-domains/%s-%s", scratch, backend, name);
    CHECK(mkdir(dir, 0700) == 0 || errno == EEXIST);
    if (prepare != NULL) {
        char *cmd = substitute_name_dir(prepare, name, dir);
        CHECK(system(cmd) == 0);
        free(cmd);
    }
    xml = substitute_name_dir(domain_xml, name, dir);
    dom = CHECK_PTR(snaptree_domain_define_xml(conn, xml, 0));
    free(xml);
    return dom;
}

static snaptree_snapshot *create(snaptree_domain *dom, const char *name)
{
    char xml[256];
    snprintf(xml, sizeof xml, "<domainsnapshot><name>%s</name></domainsnapshot>", name);
    return CHECK_PTR(snaptree_snapshot_create_xml(dom, xml, 0));
}

static void revert_to(snaptree_domain *dom, const char *name)
{
    snaptree_snapshot *s = CHECK_PTR(snaptree_snapshot_lookup_by_name(dom, name, 0));
    CHECK(snaptree_domain_create_from_snapshot(s, 0) == 0);
    snaptree_snapshot_free(s);
}

static void delete_named(snaptree_domain *dom, const char *name, unsigned int flags)
{
    snaptree_snapshot *s = CHECK_PTR(snaptree_snapshot_lookup_by_name(dom, name, 0));
    CHECK(snaptree_snapshot_delete(s, flags) == 0);
    snaptree_snapshot_free(s);
}

/* Lists a domain and frees the names; returns how many. */
static int list_and_free(snaptree_domain *dom, unsigned int flags)
{
    char **names = malloc(MAXN * sizeof *names);
    int n, i;

    CHECK(names != NULL);
    n = snaptree_snapshot_list_names(dom, names, MAXN, flags);
    CHECK(n >= 0);
    for (i = 0; i < n; i++) {
        CHECK(names[i] != NULL && names[i][0] != '\0');
        snaptree_free(names[i]);
    }
    free(names);
    return n;
}

/* Its own domain: a fixed script whose result is known exactly. */
static void own_domain(int id)
{
    char name[64], *names[8];
    snaptree_domain *dom;
    int n;

    snprintf(name, sizeof name, "own-%d", id);
    dom = define(name);
    snaptree_snapshot_free(create(dom, "r"));
    snaptree_snapshot_free(create(dom, "a"));
    snaptree_snapshot_free(create(dom, "a1"));
    revert_to(dom, "r");
    snaptree_snapshot_free(create(dom, "b"));
    snaptree_snapshot_free(create(dom, "b1"));
    snaptree_snapshot_free(create(dom, "b2"));
    delete_named(dom, "a1", SNAPTREE_SNAPSHOT_DELETE_DISCARD);
    delete_named(dom, "b1", SNAPTREE_SNAPSHOT_DELETE_CONSOLIDATE);
    delete_named(dom, "b2", SNAPTREE_SNAPSHOT_DELETE_MERGE);
    delete_named(dom, "a", SNAPTREE_SNAPSHOT_DELETE_MERGE_FORCE); /* discards sibling b */
    n = snaptree_snapshot_list_names(dom, names, 8, 0);
    CHECK(n == 1 && strcmp(names[0], "r") == 0);
    snaptree_free(names[0]);
    snaptree_domain_free(dom);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    snaptree_snapshot *mine[MAXROUNDS];
    int k;

    for (k = 0; k < rounds; k++) {
        snaptree_domain *shared = CHECK_PTR(snaptree_domain_lookup_by_name(conn, "shared"));
        snaptree_snapshot *found, *gone;
        char *name;

        snprintf(w->names[k], sizeof w->names[k], "t%d-%d", w->id, k);
        mine[k] = create(shared, w->names[k]);

        /* Look it up by name, while others change the tree. */
        found = CHECK_PTR(snaptree_snapshot_lookup_by_name(shared, w->names[k], 0));
        name = CHECK_PTR(snaptree_snapshot_get_name(found));
        CHECK(strcmp(name, w->names[k]) == 0);
        snaptree_free(name);
        snaptree_snapshot_free(found);

        /* Every third is renamed through the handle kept from create. */
        if (k % 3 == 1) {
            strcat(w->names[k], "-renamed");
            CHECK(snaptree_snapshot_rename(mine[k], w->names[k], 0) == 0);
        }
        /* Every third is deleted, alternately retired and consolidated: modes that never
         * remove another thread's snapshots. */
        if (k % 3 == 2) {
            CHECK(snaptree_snapshot_delete(mine[k], k % 2 == 0 ? 0 : SNAPTREE_SNAPSHOT_DELETE_CONSOLIDATE) == 0);
            w->deleted[k] = 1;
            CHECK(snaptree_snapshot_is_current(mine[k], 0) == -1);
            CHECK(snaptree_last_error_code() == SNAPTREE_ERR_NO_SNAPSHOT);
        }
        CHECK(list_and_free(shared, 0) >= 1);
        CHECK(list_and_free(shared, SNAPTREE_SNAPSHOT_LIST_TOPOLOGICAL) >= 1);
        CHECK(snaptree_snapshot_num(shared, SNAPTREE_SNAPSHOT_LIST_LEAVES) >= 1);

        /* This thread's error stays this thread's while the others succeed. */
        gone = snaptree_snapshot_lookup_by_name(shared, "no-such-snapshot", 0);
        CHECK(gone == NULL && snaptree_last_error_code() == SNAPTREE_ERR_NO_SNAPSHOT);
        CHECK(snaptree_snapshot_num(shared, 0) >= 1);
        CHECK(snaptree_last_error_code() == 0);
        CHECK_FAIL_INT(snaptree_snapshot_num(NULL, 0), SNAPTREE_ERR_INVALID_ARG, "'dom'");
        CHECK(list_and_free(shared, SNAPTREE_SNAPSHOT_LIST_ROOTS) >= 0);
        CHECK(snaptree_last_error_code() == 0);

        snaptree_domain_free(shared);
        if (k == rounds / 2)
            own_domain(w->id);
    }
    for (k = 0; k < rounds; k++)
        snaptree_snapshot_free(mine[k]);
    return NULL;
}

/* The shared domain as the threads left it, through `dom`. */
static void verify(snaptree_domain *dom)
{
    char **topo = malloc(MAXN * sizeof *topo);
    int expected = 1, i, k, n, j; /* "base" and the workers' survivors */

    CHECK(topo != NULL);
    for (i = 0; i < NTHREADS; i++)
        for (k = 0; k < rounds; k++) {
            snaptree_snapshot *s = snaptree_snapshot_lookup_by_name(dom, workers[i].names[k], 0);
            if (workers[i].deleted[k]) {
                CHECK(s == NULL && snaptree_last_error_code() == SNAPTREE_ERR_NO_SNAPSHOT);
            } else {
                CHECK(s != NULL);
                expected++;
            }
            snaptree_snapshot_free(s);
        }
    CHECK(snaptree_snapshot_num(dom, 0) == expected);
    /* Topological order: every parent before its children; one current snapshot. */
    n = snaptree_snapshot_list_names(dom, topo, MAXN, SNAPTREE_SNAPSHOT_LIST_TOPOLOGICAL);
    CHECK(n == expected);
    for (i = 0; i < n; i++) {
        snaptree_snapshot *s = CHECK_PTR(snaptree_snapshot_lookup_by_name(dom, topo[i], 0));
        snaptree_snapshot *p = snaptree_snapshot_get_parent(s, 0);
        if (p != NULL) {
            char *pname = CHECK_PTR(snaptree_snapshot_get_name(p));
            for (j = 0; j < i && strcmp(topo[j], pname) != 0; j++)
                ;
            CHECK(j < i);
            snaptree_free(pname);
            snaptree_snapshot_free(p);
        } else {
            CHECK(snaptree_last_error_code() == SNAPTREE_ERR_NO_SNAPSHOT);
        }
        snaptree_snapshot_free(s);
    }
    for (i = 0; i < n; i++)
        snaptree_free(topo[i]);
    free(topo);
    {
        snaptree_snapshot *cur = CHECK_PTR(snaptree_snapshot_current(dom, 0));
        CHECK(snaptree_snapshot_is_current(cur, 0) == 1);
        snaptree_snapshot_free(cur);
    }
}

int main(void)
{
    char dir[4096];
    const char *v;
    snaptree_domain *shared;
    snaptree_conn *second;
    int i;

    scratch = getenv("SNAPTREE_TEST_DIR");
    if (scratch == NULL) {
        fprintf(stderr, "SNAPTREE_TEST_DIR must name a scratch directory\n");
        return 2;
    }
    if ((v = getenv("SNAPTREE_TEST_BACKEND")) != NULL && v[0] != '\0')
        backend = v;
    if ((v = getenv("SNAPTREE_TEST_PLUGIN")) != NULL && v[0] != '\0')
        plugin = v;
    if ((v = getenv("SNAPTREE_TEST_DOMAIN_XML")) != NULL && v[0] != '\0')
        domain_xml = v;
    if ((v = getenv("SNAPTREE_TEST_PREPARE")) != NULL && v[0] != '\0')
        prepare = v;
    if ((v = getenv("SNAPTREE_TEST_ROUNDS")) != NULL && v[0] != '\0')
        rounds = atoi(v);
    CHECK(rounds > 0 && rounds <= MAXROUNDS);

    snprintf(dir, sizeof dir, "%s/state-threads-%s", scratch, backend);
    conn = CHECK_PTR(snaptree_conn_open(dir, 0));
    if (plugin != NULL)
        CHECK(snaptree_conn_load_backend(conn, plugin, 0) == 0);
    shared = define("shared");
    snaptree_snapshot_free(create(shared, "base"));

    for (i = 0; i < NTHREADS; i++) {
        workers[i].id = i;
        CHECK(pthread_create(&workers[i].thread, NULL, work, &workers[i]) == 0);
    }
    for (i = 0; i < NTHREADS; i++)
        CHECK(pthread_join(workers[i].thread, NULL) == 0);

    /* "base" was never deleted; the workers' snapshots are there or not as they left them. */
    verify(shared);

    /* The same, through a second connection: the state is durable, not per connection. */
    second = CHECK_PTR(snaptree_conn_open(dir, 0));
    if (plugin != NULL)
        CHECK(snaptree_conn_load_backend(second, plugin, 0) == 0);
    {
        snaptree_domain *seen = CHECK_PTR(snaptree_domain_lookup_by_name(second, "shared"));
        verify(seen);
        CHECK(snaptree_snapshot_num(seen, 0) == snaptree_snapshot_num(shared, 0));
        snaptree_domain_free(seen);
    }
    for (i = 0; i < NTHREADS; i++) {
        char name[64];
        snaptree_domain *own;
        snprintf(name, sizeof name, "own-%d", i);
        own = CHECK_PTR(snaptree_domain_lookup_by_name(second, name));
        CHECK(snaptree_snapshot_num(own, 0) == 1);
        CHECK(snaptree_domain_undefine(own, SNAPTREE_DOMAIN_UNDEFINE_SNAPSHOTS) == 0);
        snaptree_domain_free(own);
    }
    CHECK(snaptree_conn_close(second) == 0);

    CHECK(snaptree_domain_undefine(shared, SNAPTREE_DOMAIN_UNDEFINE_SNAPSHOTS) == 0);
    snaptree_domain_free(shared);
    CHECK(snaptree_conn_close(conn) == 0);
    printf("thread_test (%s): %d threads x %d rounds, all checks passed\n", backend, NTHREADS, rounds);
    return 0;
}
