/*
 * An operation interrupted part-way, through the C API (SEMANTICS.md section 7.1), on the C
 * sim plugin: SNAPTREE_ERR_INCOMPLETE (not BACKEND), snaptree_domain_has_pending, reads
 * showing the state before, snaptree_domain_recover failing again and then finishing it.
 *
 * The fault is a real one, no test hook: the plugin writes each layer file through
 * ".<name>.tmp" and a rename, so a directory of that name makes every write of the live
 * layer fail. DISCARD_FORCE of b over the chain a <- b <- c <- d with the live state on c
 * runs discard_leaf(d) (writes no live layer), then discard_leaf(c), which must move the
 * live layer onto b and fails: step 2 of 3.
 *
 * Environment (ffi/tests/c_api.rs sets it): SNAPTREE_TEST_DIR (scratch directory),
 * SNAPTREE_TEST_PLUGIN (the sim plugin).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static snaptree_snapshot *create(snaptree_domain *dom, const char *name)
{
    char xml[256];

    snprintf(xml, sizeof xml, "<domainsnapshot><name>%s</name></domainsnapshot>", name);
    return CHECK_PTR(snaptree_snapshot_create_xml(dom, xml, 0));
}

/* The current snapshot's name is `want`. */
static void check_current(snaptree_domain *dom, const char *want)
{
    snaptree_snapshot *cur = CHECK_PTR(snaptree_snapshot_current(dom, 0));
    char *name = CHECK_PTR(snaptree_snapshot_get_name(cur));

    if (strcmp(name, want) != 0) {
        fprintf(stderr, "expected current snapshot '%s', got '%s'\n", want, name);
        exit(1);
    }
    snaptree_free(name);
    snaptree_snapshot_free(cur);
}

int main(void)
{
    const char *scratch = getenv("SNAPTREE_TEST_DIR");
    const char *plugin = getenv("SNAPTREE_TEST_PLUGIN");
    /* A postgresql:// URI: the same test on a PostgreSQL store (the connection's name). */
    const char *store = getenv("SNAPTREE_TEST_STORE");
    char state[4096], layers[4096], blocker[4200], xml[4400];
    snaptree_conn *conn;
    snaptree_domain *dom;
    snaptree_snapshot *a, *b, *c, *d;
    char *report = NULL;

    CHECK(scratch != NULL && plugin != NULL);
    CHECK(SNAPTREE_ERR_INCOMPLETE == 13);
    snprintf(state, sizeof state, "%s/state-recover", scratch);
    snprintf(layers, sizeof layers, "%s/layers-recover", scratch);
    snprintf(blocker, sizeof blocker, "%s/.live.layer.tmp", layers);
    snprintf(xml, sizeof xml, "<domain type='sim'><name>vm</name><sim dir='%s'/></domain>", layers);

    conn = CHECK_PTR(snaptree_conn_open(store != NULL && store[0] != '\0' ? store : state, 0));
    CHECK_OK(snaptree_conn_load_backend(conn, plugin, 0));
    dom = CHECK_PTR(snaptree_domain_define_xml(conn, xml, 0));

    /* Nothing pending; argument checks. */
    CHECK(snaptree_domain_has_pending(dom, 0) == 0 && snaptree_last_error_code() == 0);
    CHECK(snaptree_domain_recover(dom, 0, &report) == 0 && snaptree_last_error_code() == 0);
    CHECK(report != NULL && report[0] == '\0');
    snaptree_free(report);
    report = NULL;
    CHECK(snaptree_domain_recover(dom, 0, NULL) == 0);
    CHECK_FAIL_INT(snaptree_domain_recover(dom, 1, &report), SNAPTREE_ERR_INVALID_ARG, "snaptree_domain_recover");
    CHECK(report == NULL);
    CHECK_FAIL_INT(snaptree_domain_recover(NULL, 0, NULL), SNAPTREE_ERR_INVALID_ARG, "'dom'");
    CHECK_FAIL_INT(snaptree_domain_has_pending(dom, 4), SNAPTREE_ERR_INVALID_ARG, "0x4");
    CHECK_FAIL_INT(snaptree_domain_has_pending(NULL, 0), SNAPTREE_ERR_INVALID_ARG, "'dom'");

    a = create(dom, "a");
    b = create(dom, "b");
    c = create(dom, "c");
    d = create(dom, "d");
    CHECK_OK(snaptree_domain_create_from_snapshot(c, 0));
    check_current(dom, "c");

    /* Step 2 of 3 fails: INCOMPLETE, naming operation, step and the plugin's reason. */
    if (mkdir(blocker, 0700) != 0) {
        fprintf(stderr, "cannot create %s: %s\n", blocker, strerror(errno));
        return 1;
    }
    CHECK_FAIL_INT(snaptree_snapshot_delete(b, SNAPTREE_SNAPSHOT_DELETE_DISCARD_FORCE), SNAPTREE_ERR_INCOMPLETE,
                   "delete (DISCARD_FORCE) of snapshot 'b' on domain 'vm' stopped at step 2 of 3 (discard_leaf)");
    CHECK(strstr(snaptree_last_error_message(), "the next call on the domain finishes it") != NULL);
    CHECK(strstr(snaptree_last_error_message(), ".live.layer.tmp") != NULL);

    /* Pending; every read shows the state before (d is gone physically, not in the tree). */
    CHECK(snaptree_domain_has_pending(dom, 0) == 1);
    CHECK(snaptree_snapshot_num(dom, 0) == 4);
    check_current(dom, "c");
    CHECK(snaptree_snapshot_num_children(c, 0) == 1);

    /* Finishing fails again while the fault lasts: INCOMPLETE, still pending, same reads. */
    CHECK_FAIL_INT(snaptree_domain_recover(dom, 0, &report), SNAPTREE_ERR_INCOMPLETE, "step 2 of 3");
    CHECK(report == NULL);
    CHECK(snaptree_domain_has_pending(dom, 0) == 1);
    CHECK(snaptree_snapshot_num(dom, 0) == 4);

    /* The fault gone, recover finishes it and says what it did. */
    CHECK(rmdir(blocker) == 0);
    CHECK(snaptree_domain_recover(dom, 0, &report) == 1 && snaptree_last_error_code() == 0);
    CHECK(report != NULL);
    if (strcmp(report, "delete (DISCARD_FORCE) of snapshot 'b' (1 of 3 steps had been done)\n") != 0) {
        fprintf(stderr, "unexpected recover report: '%s'\n", report);
        return 1;
    }
    snaptree_free(report);
    report = NULL;
    CHECK(snaptree_domain_has_pending(dom, 0) == 0);
    CHECK(snaptree_snapshot_num(dom, 0) == 1);
    check_current(dom, "a");
    CHECK_FAIL_INT(snaptree_snapshot_num_children(c, 0), SNAPTREE_ERR_NO_SNAPSHOT, NULL);
    CHECK(snaptree_domain_recover(dom, 0, NULL) == 0);

    snaptree_snapshot_free(a);
    snaptree_snapshot_free(b);
    snaptree_snapshot_free(c);
    snaptree_snapshot_free(d);
    snaptree_domain_free(dom);
    CHECK_OK(snaptree_conn_close(conn));
    printf("recover_test: ok\n");
    return 0;
}
