/*
 * Handles across fork(): a child that forked without exec must not use its parent's
 * connection (it would share the parent's store files without its locks or threads).
 * Every call on an inherited handle fails in the child with SNAPTREE_ERR_OPERATION_INVALID
 * saying so; so does opening a new connection to the store the parent has open (SQLite
 * would share the parent's lock record), by any spelling of its path; freeing inherited
 * handles there releases nothing of the parent's; a connection the child opens to another
 * store works; and the parent goes on using its connection afterwards.
 *
 * Environment: as api_test.c (SNAPTREE_TEST_DIR, _BACKEND, _PLUGIN, _DOMAIN_XML, _PREPARE),
 * plus SNAPTREE_TEST_FORK_BUSY=1: fork right after a delete that freed data, so that a
 * backend thread (the QEMU backend's closer of removed layers) is alive at the fork.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static const char *scratch;
static const char *plugin;

/* Held in globals so that valgrind sees the child's leaked copies as still reachable. */
static snaptree_conn *conn;
static snaptree_domain *dom;
static snaptree_snapshot *snap;

static const char *env(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : fallback;
}

static snaptree_conn *open_conn(const char *state)
{
    snaptree_conn *c = CHECK_PTR(snaptree_conn_open(state, 0));
    if (plugin != NULL)
        CHECK_OK(snaptree_conn_load_backend(c, plugin, 0));
    return c;
}

static snaptree_snapshot *create(snaptree_domain *d, const char *name)
{
    char xml[256];
    snprintf(xml, sizeof xml, "<domainsnapshot><name>%s</name></domainsnapshot>", name);
    return CHECK_PTR(snaptree_snapshot_create_xml(d, xml, 0));
}

/* `d` has exactly one snapshot, named `name`. */
static void expect_only(snaptree_domain *d, const char *name)
{
    char *names[4];
    int n = snaptree_snapshot_list_names(d, names, 4, 0), i;

    CHECK(n == 1);
    CHECK(strcmp(names[0], name) == 0);
    for (i = 0; i < n; i++)
        snaptree_free(names[i]);
}

#define FORKED "opened before this process forked"
#define INHERITED "was open in the parent process when this process forked"

/* Whether this process has a thread named `name` (/proc/self/task/<tid>/comm). */
static int has_thread(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "grep -qx '%s' /proc/%ld/task/*/comm", name, (long)getpid());
    return system(cmd) == 0;
}

/* Forks, runs `body` in the child, and fails unless it exits 0. */
static void in_child(int (*body)(const char *), const char *state)
{
    int status;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(body(state));
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "the forked child failed (status %d)\n", status);
        exit(1);
    }
}

/* A child forked while the parent holds only a domain handle (its connection handle
 * closed): the store is still open in the parent, so still refused here. */
static int child_of_a_domain_handle(const char *state)
{
    alarm(60);
    CHECK_FAIL_INT(snaptree_snapshot_num(dom, 0), SNAPTREE_ERR_OPERATION_INVALID, FORKED);
    CHECK_FAIL_PTR(snaptree_conn_open(state, 0), SNAPTREE_ERR_OPERATION_INVALID, INHERITED);
    snaptree_domain_free(dom);
    return 0;
}

/* A child forked once the parent has closed every handle may open the store. */
static int child_after_close(const char *state)
{
    snaptree_conn *own;
    snaptree_domain *own_dom;

    alarm(60);
    own = open_conn(state);
    own_dom = CHECK_PTR(snaptree_domain_lookup_by_name(own, "forked"));
    CHECK(snaptree_snapshot_num(own_dom, 0) == 1);
    snaptree_domain_free(own_dom);
    CHECK_OK(snaptree_conn_close(own));
    return 0;
}

/* The child: everything through the inherited handles, and the parent's store, is refused;
 * a connection to another store works. */
static int child(const char *state)
{
    snaptree_conn *own;
    snaptree_domain *own_dom;
    char *names[4], other[4200], path[4200];

    /* A regression that waits for (or joins) what only the parent has would hang here. */
    alarm(60);

    CHECK_FAIL_INT(snaptree_snapshot_num(dom, 0), SNAPTREE_ERR_OPERATION_INVALID, FORKED);
    CHECK_FAIL_INT(snaptree_snapshot_list_names(dom, names, 4, 0), SNAPTREE_ERR_OPERATION_INVALID, FORKED);
    CHECK_FAIL_PTR(snaptree_snapshot_create_xml(dom, "<domainsnapshot><name>child</name></domainsnapshot>", 0),
                   SNAPTREE_ERR_OPERATION_INVALID, FORKED);
    CHECK_FAIL_PTR(snaptree_snapshot_get_xml_desc(snap, 0), SNAPTREE_ERR_OPERATION_INVALID, FORKED);
    CHECK_FAIL_PTR(snaptree_snapshot_get_name(snap), SNAPTREE_ERR_OPERATION_INVALID, FORKED);
    CHECK_FAIL_INT(snaptree_snapshot_delete(snap, 0), SNAPTREE_ERR_OPERATION_INVALID, FORKED);
    CHECK_FAIL_PTR(snaptree_domain_lookup_by_name(conn, "forked"), SNAPTREE_ERR_OPERATION_INVALID, FORKED);
    CHECK_FAIL_PTR(snaptree_domain_define_xml(conn, "<domain type='null'><name>other</name></domain>", 0),
                   SNAPTREE_ERR_OPERATION_INVALID, FORKED);
    CHECK_FAIL_INT(snaptree_domain_undefine(dom, 0), SNAPTREE_ERR_OPERATION_INVALID, FORKED);
    if (plugin != NULL)
        CHECK_FAIL_INT(snaptree_conn_load_backend(conn, plugin, 0), SNAPTREE_ERR_OPERATION_INVALID, FORKED);
    /* The store location is named. */
    CHECK_FAIL_INT(snaptree_snapshot_num(dom, 0), SNAPTREE_ERR_OPERATION_INVALID, state);

    /* Freeing inherited handles releases nothing of the parent's; the frees keep the last
     * error, as everywhere. */
    snaptree_snapshot_free(snap);
    snaptree_domain_free(dom);
    CHECK(snaptree_last_error_code() == SNAPTREE_ERR_OPERATION_INVALID);
    CHECK_OK(snaptree_conn_close(conn));

    /* The parent's database file is refused by any name (SQLite in this process would share
     * the parent's lock record for it), before anything of it is opened: its directory... */
    CHECK_FAIL_PTR(snaptree_conn_open(state, 0), SNAPTREE_ERR_OPERATION_INVALID, INHERITED);
    /* ...through a symbolic link... */
    snprintf(path, sizeof path, "%s/fork-state-link", scratch);
    CHECK(symlink(state, path) == 0);
    CHECK_FAIL_PTR(snaptree_conn_open(path, 0), SNAPTREE_ERR_OPERATION_INVALID, INHERITED);
    /* ...as a relative path... */
    CHECK(chdir(scratch) == 0);
    CHECK_FAIL_PTR(snaptree_conn_open("fork-state", 0), SNAPTREE_ERR_OPERATION_INVALID, INHERITED);
    /* ...as the default store... */
    CHECK(setenv("SNAPTREE_STORE", state, 1) == 0);
    CHECK_FAIL_PTR(snaptree_conn_open(NULL, 0), SNAPTREE_ERR_OPERATION_INVALID, INHERITED);
    CHECK(unsetenv("SNAPTREE_STORE") == 0);
    /* ...and as a hard link of the database file in another directory. */
    snprintf(path, sizeof path, "%s/fork-state-hard", scratch);
    CHECK(mkdir(path, 0700) == 0);
    snprintf(other, sizeof other, "%s/snaptree.db", state);
    snprintf(path, sizeof path, "%s/fork-state-hard/snaptree.db", scratch);
    CHECK(link(other, path) == 0);
    snprintf(path, sizeof path, "%s/fork-state-hard", scratch);
    CHECK_FAIL_PTR(snaptree_conn_open(path, 0), SNAPTREE_ERR_OPERATION_INVALID, INHERITED);

    /* Another store works, and may be used through the child's own handles. */
    snprintf(other, sizeof other, "%s-child", state);
    own = CHECK_PTR(snaptree_conn_open(other, 0));
    own_dom = CHECK_PTR(snaptree_domain_define_xml(own, "<domain type='null'><name>child</name></domain>", 0));
    snaptree_snapshot_free(create(own_dom, "from-child"));
    expect_only(own_dom, "from-child");
    snaptree_domain_free(own_dom);
    CHECK_OK(snaptree_conn_close(own));
    /* And once closed, opened again. */
    own = CHECK_PTR(snaptree_conn_open(other, 0));
    CHECK_OK(snaptree_conn_close(own));
    return 0;
}

int main(void)
{
    char state[4096], dir[4096], *xml;
    const char *domain_xml = env("SNAPTREE_TEST_DOMAIN_XML", "<domain type='null'><name>@NAME@</name></domain>");
    const char *prepare = env("SNAPTREE_TEST_PREPARE", NULL);
    snaptree_conn *again;
    snaptree_domain *again_dom;
    int busy = strcmp(env("SNAPTREE_TEST_FORK_BUSY", "0"), "1") == 0;

    scratch = env("SNAPTREE_TEST_DIR", NULL);
    plugin = env("SNAPTREE_TEST_PLUGIN", NULL);
    CHECK(scratch != NULL);
    snprintf(state, sizeof state, "%s/fork-state", scratch);
    snprintf(dir, sizeof dir, "%s/fork-domain", scratch);
    CHECK(mkdir(dir, 0700) == 0 || errno == EEXIST);
    if (prepare != NULL) {
        char *cmd = substitute_name_dir(prepare, "forked", dir);
        CHECK(system(cmd) == 0);
        free(cmd);
    }

    conn = open_conn(state);
    xml = substitute_name_dir(domain_xml, "forked", dir);
    dom = CHECK_PTR(snaptree_domain_define_xml(conn, xml, 0));
    free(xml);
    snap = create(dom, "before");
    if (busy) {
        /* A snapshot with data of its own, then back to "before" and that data freed: the
         * QEMU backend hands the removed layer to its thread, which stays alive a while. */
        snaptree_snapshot *second = create(dom, "second");
        CHECK_OK(snaptree_domain_create_from_snapshot(snap, 0));
        CHECK_OK(snaptree_snapshot_delete(second, SNAPTREE_SNAPSHOT_DELETE_DISCARD_FORCE));
        snaptree_snapshot_free(second);
        /* The test's premise: the thread is there to be missing in the child. */
        CHECK(has_thread("snaptree-free"));
    }

    in_child(child, state);

    /* The parent's handles work on, and change the store. */
    CHECK(snaptree_snapshot_num(dom, 0) == 1);
    snaptree_snapshot_free(create(dom, "after"));
    CHECK(snaptree_snapshot_num(dom, 0) == 2);
    CHECK_OK(snaptree_snapshot_delete(snap, 0));
    snaptree_snapshot_free(snap);
    snaptree_domain_free(dom);
    CHECK_OK(snaptree_conn_close(conn));

    /* And the store is whole for a new connection. */
    again = open_conn(state);
    again_dom = CHECK_PTR(snaptree_domain_lookup_by_name(again, "forked"));
    expect_only(again_dom, "after");
    snaptree_domain_free(again_dom);
    CHECK_OK(snaptree_conn_close(again));

    /* A domain handle keeps the store open after its connection handle is closed. */
    again = open_conn(state);
    dom = CHECK_PTR(snaptree_domain_lookup_by_name(again, "forked"));
    CHECK(snaptree_snapshot_num(dom, 0) == 1);
    CHECK_OK(snaptree_conn_close(again));
    in_child(child_of_a_domain_handle, state);
    CHECK(snaptree_snapshot_num(dom, 0) == 1);
    snaptree_domain_free(dom);

    /* Nothing of this process has the store open now: a child may open it. */
    in_child(child_after_close, state);
    printf("fork_test: passed\n");
    return 0;
}
