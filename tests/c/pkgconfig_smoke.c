/*
 * The smallest real user of an installed libsnaptree: built with nothing but
 * `pkg-config --cflags --libs snaptree` (ffi/tests/install.rs). Takes a state directory,
 * uses the null backend, prints what it saw.
 */
#include <stdio.h>

#include <snaptree.h>

static int fail(const char *what)
{
    const char *msg = snaptree_last_error_message();
    fprintf(stderr, "%s failed: error %d: %s\n", what, snaptree_last_error_code(), msg != NULL ? msg : "(none)");
    return 1;
}

int main(int argc, char **argv)
{
    snaptree_conn *conn;
    snaptree_domain *dom;
    snaptree_snapshot *snap;
    char *names[4];
    char uuid[SNAPTREE_UUID_BUFLEN];
    int n, i;

    if (argc != 2) {
        fprintf(stderr, "usage: %s STATE_DIR\n", argv[0]);
        return 2;
    }
    if ((conn = snaptree_conn_open(argv[1], 0)) == NULL)
        return fail("snaptree_conn_open");
    if ((dom = snaptree_domain_define_xml(conn, "<domain type='null'><name>smoke</name></domain>", 0)) == NULL)
        return fail("snaptree_domain_define_xml");
    if ((snap = snaptree_snapshot_create_xml(dom, "<domainsnapshot><name>first</name></domainsnapshot>", 0)) == NULL)
        return fail("snaptree_snapshot_create_xml");
    if (snaptree_snapshot_get_uuid_string(snap, uuid) != 0)
        return fail("snaptree_snapshot_get_uuid_string");
    if ((n = snaptree_snapshot_list_names(dom, names, 4, 0)) < 0)
        return fail("snaptree_snapshot_list_names");
    for (i = 0; i < n; i++) {
        printf("snapshot %s\n", names[i]);
        snaptree_free(names[i]);
    }
    printf("uuid length %d\n", (int)(sizeof uuid - 1));
    if (snaptree_snapshot_delete(snap, SNAPTREE_SNAPSHOT_DELETE_DISCARD) != 0)
        return fail("snaptree_snapshot_delete");
    snaptree_snapshot_free(snap);
    if (snaptree_domain_undefine(dom, 0) != 0)
        return fail("snaptree_domain_undefine");
    snaptree_domain_free(dom);
    if (snaptree_conn_close(conn) != 0)
        return fail("snaptree_conn_close");
    printf("ok\n");
    return 0;
}
