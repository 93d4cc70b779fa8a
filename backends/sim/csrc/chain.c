/*
 * The steps of SEMANTICS.md section 4 on the delta chain.
 *
 * One rule keeps every content right: before a layer X's content changes, or X goes away,
 * every physical dependent D of X (layers whose parent is X, the live layer included) is
 * made to keep its own content: for each block where D has no entry of its own and X's
 * old value differs from the new one, D gets the old value as its own entry. A re-parent
 * does the same against the new parent's content: a "safe rebase", like qemu-img rebase.
 *
 * Every step is restartable: each file is written atomically, and the writes are ordered
 * so that running a step again after a crash at any point finishes it.
 */
#include <stdlib.h>
#include <string.h>

#include "sim.h"

static int oom(snaptree_backend_error *err)
{
    return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "out of memory");
}

static int missing(const char *dir, const snaptree_uuid *snap, snaptree_backend_error *err)
{
    char text[37];

    sim_uuid_format(snap, text);
    return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "snapshot %s has no layer in %s", text, dir);
}

/* Gives `d` its own entries wherever `old_parent` and `new_parent` differ and `d` has none. */
static int preserve(sim_layer *d, const sim_map *old_parent, const sim_map *new_parent, snaptree_backend_error *err)
{
    size_t i;

    for (i = 0; i < old_parent->len; i++) {
        uint32_t b = old_parent->v[i].block;
        if (!sim_map_get(&d->delta, b, NULL) && old_parent->v[i].value != sim_map_value(new_parent, b))
            if (sim_map_set(&d->delta, b, old_parent->v[i].value) != 0)
                return oom(err);
    }
    for (i = 0; i < new_parent->len; i++) {
        uint32_t b = new_parent->v[i].block;
        if (!sim_map_get(&d->delta, b, NULL) && sim_map_value(old_parent, b) != new_parent->v[i].value)
            if (sim_map_set(&d->delta, b, sim_map_value(old_parent, b)) != 0)
                return oom(err);
    }
    return 0;
}

/*
 * Moves every layer whose parent is `of` (except `skip`, if given) onto `to`, keeping its
 * content: `old_content` is the content it had through `of`, `new_content` the content of
 * `to`. With `to` equal to `of`, only the contents are preserved (X is about to change).
 */
static int rebase_dependents(const char *dir, sim_id of, const sim_id *skip, sim_id to, const sim_map *old_content,
                             const sim_map *new_content, snaptree_backend_error *err)
{
    sim_id *ids = NULL;
    size_t n = 0, i;
    int rc = 0;

    if (sim_list(dir, &ids, &n, err) != 0)
        return -1;
    /* The live layer is a dependent like any other: visit it after the snapshots. */
    for (i = 0; i <= n && rc == 0; i++) {
        sim_id id = i < n ? ids[i] : sim_live_id();
        sim_layer d;
        int exists;

        if (skip != NULL && sim_id_eq(id, *skip))
            continue;
        if (sim_load(dir, id, &d, &exists, err) != 0) {
            rc = -1;
            break;
        }
        if (sim_id_eq(d.parent, of)) {
            rc = preserve(&d, old_content, new_content, err);
            d.parent = to;
            if (rc == 0)
                rc = sim_store(dir, &d, err);
        }
        sim_layer_free(&d);
    }
    free(ids);
    return rc;
}

int sim_create(const char *dir, const snaptree_uuid *snap, snaptree_backend_error *err)
{
    sim_layer live, n;
    int exists, rc;
    sim_id id = sim_snap_id(snap);

    if (sim_load(dir, sim_live_id(), &live, &exists, err) != 0)
        return -1;
    if (sim_id_eq(live.parent, id)) {
        /* Done already: a re-run after the live layer was switched over. */
        sim_layer_free(&live);
        return 0;
    }
    /* The new layer takes the live delta and parent; a re-run rewrites it identically. */
    sim_layer_init(&n, id);
    n.parent = live.parent;
    rc = sim_map_copy(&n.delta, &live.delta) == 0 ? sim_store(dir, &n, err) : oom(err);
    sim_layer_free(&n);
    if (rc == 0) {
        live.parent = id;
        sim_map_free(&live.delta);
        rc = sim_store(dir, &live, err);
    }
    sim_layer_free(&live);
    return rc;
}

int sim_revert(const char *dir, const snaptree_uuid *snap, int power, snaptree_backend_error *err)
{
    sim_layer s, live;
    int exists, rc;

    if (sim_load(dir, sim_snap_id(snap), &s, &exists, err) != 0)
        return -1;
    sim_layer_free(&s);
    if (!exists)
        return missing(dir, snap, err);
    /* Nothing depends on the live layer, so replacing it is one atomic write. */
    sim_layer_init(&live, sim_live_id());
    live.parent = sim_snap_id(snap);
    live.power = power;
    rc = sim_store(dir, &live, err);
    sim_layer_free(&live);
    return rc;
}

int sim_require_no_layer_on(const char *dir, const snaptree_uuid *snap, snaptree_backend_error *err)
{
    sim_id *ids = NULL;
    size_t n = 0, i;
    int rc = 0;
    sim_id of = sim_snap_id(snap);

    if (sim_list(dir, &ids, &n, err) != 0)
        return -1;
    for (i = 0; i < n && rc == 0; i++) {
        sim_layer d;
        int exists;

        if (sim_load(dir, ids[i], &d, &exists, err) != 0) {
            rc = -1;
            break;
        }
        if (exists && sim_id_eq(d.parent, of)) {
            char on[37], below[37];

            sim_uuid_format(&ids[i].uuid, on);
            sim_uuid_format(snap, below);
            rc = sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND,
                          "precondition of discard_leaf violated: layer %s is stored on %s", on, below);
        }
        sim_layer_free(&d);
    }
    free(ids);
    return rc;
}

int sim_remove_preserving(const char *dir, const snaptree_uuid *snap, snaptree_backend_error *err)
{
    sim_id id = sim_snap_id(snap);
    sim_layer s;
    sim_map old_content, new_content;
    int exists, rc;

    if (sim_load(dir, id, &s, &exists, err) != 0)
        return -1;
    if (!exists) {
        /* Removed already: a re-run after the last write. */
        sim_layer_free(&s);
        return 0;
    }
    sim_map_init(&old_content);
    sim_map_init(&new_content);
    rc = sim_content(dir, id, &old_content, err);
    if (rc == 0)
        rc = sim_content(dir, s.parent, &new_content, err);
    /* Dependents already moved by an interrupted run no longer point at S: they are skipped. */
    if (rc == 0)
        rc = rebase_dependents(dir, id, NULL, s.parent, &old_content, &new_content, err);
    if (rc == 0)
        rc = sim_remove(dir, id, err);
    sim_map_free(&old_content);
    sim_map_free(&new_content);
    sim_layer_free(&s);
    return rc;
}

int sim_merge(const char *dir, const snaptree_uuid *snap, const snaptree_uuid *parent, snaptree_backend_error *err)
{
    sim_id sid = sim_snap_id(snap);
    sim_id pid = parent != NULL ? sim_snap_id(parent) : sim_base_id();
    sim_layer s, p;
    sim_map old_p, new_p;
    int exists, p_exists, rc;
    size_t i;

    if (sim_load(dir, sid, &s, &exists, err) != 0)
        return -1;
    sim_layer_free(&s);
    if (!exists)
        return 0; /* Merged already: S is removed last. */
    if (sim_load(dir, pid, &p, &p_exists, err) != 0)
        return -1;
    if (!p_exists && pid.kind == SIM_SNAP) {
        sim_layer_free(&p);
        return missing(dir, parent, err);
    }
    sim_map_init(&old_p);
    sim_map_init(&new_p);
    rc = sim_content(dir, pid, &old_p, err);
    if (rc == 0)
        rc = sim_content(dir, sid, &new_p, err);
    /* 1. P's other dependents keep their content. A re-run after step 2 finds old = new. */
    if (rc == 0)
        rc = rebase_dependents(dir, pid, &sid, pid, &old_p, &new_p, err);
    /* 2. content(P) := content(S), as P's own entries over P's unchanged parent. */
    for (i = 0; rc == 0 && i < old_p.len; i++)
        if (sim_map_value(&new_p, old_p.v[i].block) != old_p.v[i].value)
            if (sim_map_set(&p.delta, old_p.v[i].block, sim_map_value(&new_p, old_p.v[i].block)) != 0)
                rc = oom(err);
    for (i = 0; rc == 0 && i < new_p.len; i++)
        if (sim_map_value(&old_p, new_p.v[i].block) != new_p.v[i].value)
            if (sim_map_set(&p.delta, new_p.v[i].block, new_p.v[i].value) != 0)
                rc = oom(err);
    if (rc == 0)
        rc = sim_store(dir, &p, err);
    /* 3. S's dependents move onto P: the contents are equal now, so no data changes. */
    if (rc == 0)
        rc = rebase_dependents(dir, sid, NULL, pid, &new_p, &new_p, err);
    /* 4. S goes last, so its presence tells a re-run that the step is unfinished. */
    if (rc == 0)
        rc = sim_remove(dir, sid, err);
    sim_map_free(&old_p);
    sim_map_free(&new_p);
    sim_layer_free(&p);
    return rc;
}

int sim_detach_live(const char *dir, snaptree_backend_error *err)
{
    sim_layer live;
    sim_map old_content, base;
    int exists, rc;

    if (sim_load(dir, sim_live_id(), &live, &exists, err) != 0)
        return -1;
    if (live.parent.kind == SIM_BASE) {
        sim_layer_free(&live);
        return 0;
    }
    sim_map_init(&old_content);
    sim_map_init(&base);
    rc = sim_content(dir, live.parent, &old_content, err);
    if (rc == 0)
        rc = sim_content(dir, sim_base_id(), &base, err);
    if (rc == 0)
        rc = preserve(&live, &old_content, &base, err);
    if (rc == 0) {
        live.parent = sim_base_id();
        rc = sim_store(dir, &live, err);
    }
    sim_map_free(&old_content);
    sim_map_free(&base);
    sim_layer_free(&live);
    return rc;
}

/* FNV-1a, 64 bits, over the little-endian bytes of a value. */
static uint64_t fnv(uint64_t h, uint64_t value, int bytes)
{
    int i;

    for (i = 0; i < bytes; i++) {
        h ^= (value >> (8 * i)) & 0xff;
        h *= 0x100000001b3ULL;
    }
    return h;
}

int sim_digest(const char *dir, sim_id id, char *buf, size_t buflen, snaptree_backend_error *err)
{
    sim_map content;
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;
    int k;
    static const char hex[] = "0123456789abcdef";

    if (buflen < 17)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_INVALID_ARG, "a digest needs 17 bytes, the buffer has %lu",
                        (unsigned long)buflen);
    sim_map_init(&content);
    if (sim_content(dir, id, &content, err) != 0)
        return -1;
    /* Sorted by block already; zero values are the same as absent, so they are skipped. */
    for (i = 0; i < content.len; i++) {
        if (content.v[i].value == 0)
            continue;
        h = fnv(h, content.v[i].block, 4);
        h = fnv(h, content.v[i].value, 8);
    }
    sim_map_free(&content);
    for (k = 0; k < 16; k++)
        buf[k] = hex[(h >> (60 - 4 * k)) & 15];
    buf[16] = '\0';
    return 0;
}

int sim_write_guest(const char *dir, uint64_t seed, snaptree_backend_error *err)
{
    sim_layer live;
    uint64_t x = seed;
    int exists, rc = 0, i;

    if (sim_load(dir, sim_live_id(), &live, &exists, err) != 0)
        return -1;
    /* Four blocks among 0..63, from Knuth's MMIX linear congruential generator. */
    for (i = 0; i < 4 && rc == 0; i++) {
        uint32_t block;
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        block = (uint32_t)(x >> 58);
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        if (sim_map_set(&live.delta, block, x >> 1 | 1) != 0)
            rc = oom(err);
    }
    if (rc == 0)
        rc = sim_store(dir, &live, err);
    sim_layer_free(&live);
    return rc;
}
