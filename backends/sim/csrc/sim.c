/*
 * The sim backend: snaptree's delta-chain simulator as a plugin written in C.
 *
 * This file is the ABI face: the vtable, argument and flag checks, progress, and the
 * dispatch to the steps in chain.c. Every function refuses unknown flag bits (ABI 1.2
 * defines none) and NULL arguments, and writes out-parameters only on success.
 */
#include <stdlib.h>
#include <string.h>

#include "sim.h"

/* The flags this plugin understands: none, in ABI 1.2. */
#define SIM_KNOWN_FLAGS 0u

/* An open domain: only its directory; every call reads the files afresh, so two handles
 * on one directory, or a new process, see the same data. */
typedef struct sim_domain {
    char *dir;
} sim_domain;

static int check(void *handle, unsigned int flags, snaptree_backend_error *err)
{
    if (flags & ~SIM_KNOWN_FLAGS)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_INVALID_ARG, "unknown flag bits 0x%x", flags & ~SIM_KNOWN_FLAGS);
    if (handle == NULL)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_INVALID_ARG, "the domain handle is NULL");
    return 0;
}

static int need(const void *arg, const char *what, snaptree_backend_error *err)
{
    if (arg == NULL)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_INVALID_ARG, "%s is NULL", what);
    return 0;
}

/* Asks the caller whether to go on; called before a step changes anything, so a cancel
 * leaves no trace. */
static int start(snaptree_progress_fn progress, void *ctx, snaptree_backend_error *err)
{
    if (progress != NULL && progress(ctx, 0.0) == 0)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "the step was cancelled before it changed anything");
    return 0;
}

static int finish(int rc, snaptree_progress_fn progress, void *ctx)
{
    if (rc == 0 && progress != NULL)
        (void)progress(ctx, 1.0);
    return rc;
}

static const char *dir_of(void *handle)
{
    return ((sim_domain *)handle)->dir;
}

static int sim_open_domain(const char *xml, size_t len, void **handle, unsigned int flags, snaptree_backend_error *err)
{
    sim_domain *d;
    char *dir;

    if (flags & ~SIM_KNOWN_FLAGS)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_INVALID_ARG, "unknown flag bits 0x%x", flags & ~SIM_KNOWN_FLAGS);
    if (need(xml, "the domain XML", err) != 0 || need(handle, "the handle out-parameter", err) != 0)
        return -1;
    if (sim_domain_dir(xml, len, &dir, err) != 0)
        return -1;
    d = malloc(sizeof *d);
    if (d == NULL) {
        free(dir);
        return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "out of memory");
    }
    d->dir = dir;
    *handle = d;
    return 0;
}

static int sim_close_domain(void *handle, unsigned int flags, snaptree_backend_error *err)
{
    sim_domain *d = handle;

    /* The handle is freed even when the flags are refused: the caller will not retry. */
    if (d != NULL) {
        free(d->dir);
        free(d);
    }
    if (flags & ~SIM_KNOWN_FLAGS)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_INVALID_ARG, "unknown flag bits 0x%x", flags & ~SIM_KNOWN_FLAGS);
    return 0;
}

static int sim_power_state(void *handle, int *state, unsigned int flags, snaptree_backend_error *err)
{
    sim_layer live;
    int exists;

    if (check(handle, flags, err) != 0 || need(state, "the state out-parameter", err) != 0)
        return -1;
    if (sim_load(dir_of(handle), sim_live_id(), &live, &exists, err) != 0)
        return -1;
    *state = live.power;
    sim_layer_free(&live);
    return 0;
}

static int sim_create_step(void *handle, const snaptree_uuid *snapshot, const snaptree_uuid *parent, const char *name,
                           const char *description, snaptree_progress_fn progress, void *ctx, unsigned int flags,
                           snaptree_backend_error *err)
{
    /* The physical parent is whatever the live layer sits on (a retired layer, perhaps),
     * not the engine's current snapshot; names are metadata the sim does not keep. */
    (void)parent;
    (void)name;
    (void)description;
    if (check(handle, flags, err) != 0 || need(snapshot, "the snapshot uuid", err) != 0 ||
        start(progress, ctx, err) != 0)
        return -1;
    return finish(sim_create(dir_of(handle), snapshot, err), progress, ctx);
}

static int sim_revert_step(void *handle, const snaptree_uuid *snapshot, int state, snaptree_progress_fn progress,
                           void *ctx, unsigned int flags, snaptree_backend_error *err)
{
    if (check(handle, flags, err) != 0 || need(snapshot, "the snapshot uuid", err) != 0)
        return -1;
    if (state != SNAPTREE_POWER_RUNNING && state != SNAPTREE_POWER_PAUSED && state != SNAPTREE_POWER_SHUTOFF)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_INVALID_ARG, "unknown power state %d", state);
    if (start(progress, ctx, err) != 0)
        return -1;
    return finish(sim_revert(dir_of(handle), snapshot, state, err), progress, ctx);
}

static int sim_discard_leaf(void *handle, const snaptree_uuid *snapshot, snaptree_progress_fn progress, void *ctx,
                            unsigned int flags, snaptree_backend_error *err)
{
    /* Strict, so that an engine freeing data in the wrong order cannot pass unnoticed. */
    if (check(handle, flags, err) != 0 || need(snapshot, "the snapshot uuid", err) != 0 ||
        sim_require_no_layer_on(dir_of(handle), snapshot, err) != 0 || start(progress, ctx, err) != 0)
        return -1;
    return finish(sim_remove_preserving(dir_of(handle), snapshot, err), progress, ctx);
}

static int sim_merge_into_parent(void *handle, const snaptree_uuid *snapshot, const snaptree_uuid *parent,
                                 snaptree_progress_fn progress, void *ctx, unsigned int flags,
                                 snaptree_backend_error *err)
{
    if (check(handle, flags, err) != 0 || need(snapshot, "the snapshot uuid", err) != 0 ||
        start(progress, ctx, err) != 0)
        return -1;
    return finish(sim_merge(dir_of(handle), snapshot, parent, err), progress, ctx);
}

static int sim_consolidate(void *handle, const snaptree_uuid *snapshot, snaptree_progress_fn progress, void *ctx,
                           unsigned int flags, snaptree_backend_error *err)
{
    if (check(handle, flags, err) != 0 || need(snapshot, "the snapshot uuid", err) != 0 ||
        start(progress, ctx, err) != 0)
        return -1;
    return finish(sim_remove_preserving(dir_of(handle), snapshot, err), progress, ctx);
}

static int sim_detach_live_step(void *handle, snaptree_progress_fn progress, void *ctx, unsigned int flags,
                                snaptree_backend_error *err)
{
    if (check(handle, flags, err) != 0 || start(progress, ctx, err) != 0)
        return -1;
    return finish(sim_detach_live(dir_of(handle), err), progress, ctx);
}

static int sim_forget(void *handle, const snaptree_uuid *snapshot, unsigned int flags, snaptree_backend_error *err)
{
    /* A retired layer stays where it is; the engine remembers it. */
    if (check(handle, flags, err) != 0 || need(snapshot, "the snapshot uuid", err) != 0)
        return -1;
    return 0;
}

static int sim_list_physical(void *handle, snaptree_layer_fn layer, void *ctx, snaptree_uuid *live_parent,
                             int *has_live_parent, unsigned int flags, snaptree_backend_error *err)
{
    sim_id *ids = NULL;
    size_t n = 0, i;
    sim_layer l;
    int exists, rc = 0;

    if (check(handle, flags, err) != 0)
        return -1;
    if (layer == NULL)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_INVALID_ARG, "the layer callback is NULL");
    if (need(live_parent, "the live parent out-parameter", err) != 0 ||
        need(has_live_parent, "the has-live-parent out-parameter", err) != 0)
        return -1;
    if (sim_list(dir_of(handle), &ids, &n, err) != 0)
        return -1;
    for (i = 0; i < n && rc == 0; i++) {
        if (sim_load(dir_of(handle), ids[i], &l, &exists, err) != 0) {
            rc = -1;
            break;
        }
        /* A layer removed between listing and loading is simply gone. */
        if (exists)
            layer(ctx, &ids[i].uuid, l.parent.kind == SIM_SNAP ? &l.parent.uuid : NULL);
        sim_layer_free(&l);
    }
    free(ids);
    if (rc != 0 || sim_load(dir_of(handle), sim_live_id(), &l, &exists, err) != 0)
        return -1;
    *has_live_parent = l.parent.kind == SIM_SNAP;
    if (l.parent.kind == SIM_SNAP)
        *live_parent = l.parent.uuid;
    sim_layer_free(&l);
    return 0;
}

static int sim_content_digest(void *handle, const snaptree_uuid *snapshot, char *buf, size_t buflen,
                              unsigned int flags, snaptree_backend_error *err)
{
    char digest[17];

    if (check(handle, flags, err) != 0 || need(buf, "the digest buffer", err) != 0)
        return -1;
    if (sim_digest(dir_of(handle), snapshot != NULL ? sim_snap_id(snapshot) : sim_live_id(), digest, sizeof digest,
                   err) != 0)
        return -1;
    if (buflen < sizeof digest)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_INVALID_ARG, "a digest needs %lu bytes, the buffer has %lu",
                        (unsigned long)sizeof digest, (unsigned long)buflen);
    memcpy(buf, digest, sizeof digest);
    return 0;
}

static int sim_write_guest_hook(void *handle, uint64_t seed, unsigned int flags, snaptree_backend_error *err)
{
    if (check(handle, flags, err) != 0)
        return -1;
    return sim_write_guest(dir_of(handle), seed, err);
}

/* adopt (ABI 1.1): the sim keys its layers by uuid and keeps no names, so adopting checks
 * that the snapshot's layer exists and is stored on `parent`'s (NULL: the base); there is
 * nothing more to record. */
static int sim_adopt(void *handle, const snaptree_uuid *snapshot, const snaptree_uuid *parent, const char *name,
                     unsigned int flags, snaptree_backend_error *err)
{
    sim_layer l;
    int exists, rc = 0;
    char uuid[37], want[37], got[37];

    if (check(handle, flags, err) != 0 || need(snapshot, "the snapshot uuid", err) != 0 ||
        need(name, "the snapshot name", err) != 0)
        return -1;
    sim_uuid_format(snapshot, uuid);
    if (sim_load(dir_of(handle), sim_snap_id(snapshot), &l, &exists, err) != 0)
        return -1;
    if (!exists) {
        rc = sim_fail(err, SNAPTREE_BACKEND_ERR_OPERATION_INVALID,
                      "no layer for snapshot '%s' (%s) in %s, so there is nothing to adopt", name, uuid,
                      dir_of(handle));
    } else if (parent == NULL ? l.parent.kind != SIM_BASE
                              : l.parent.kind != SIM_SNAP || memcmp(&l.parent.uuid, parent, sizeof *parent) != 0) {
        if (parent != NULL)
            sim_uuid_format(parent, want);
        else
            strcpy(want, "the base");
        if (l.parent.kind == SIM_SNAP)
            sim_uuid_format(&l.parent.uuid, got);
        else
            strcpy(got, "the base");
        rc = sim_fail(err, SNAPTREE_BACKEND_ERR_OPERATION_INVALID,
                      "the layer of snapshot '%s' (%s) is stored on %s, not on %s", name, uuid, got, want);
    }
    sim_layer_free(&l);
    return rc;
}

#define EVERY_STATE SNAPTREE_POWER_MASK_ANY

static const snaptree_backend_vtable vtable = {
    SNAPTREE_BACKEND_ABI_VERSION,
    sizeof(snaptree_backend_vtable),
    "sim",
    SNAPTREE_CAP(SNAPTREE_STEP_CREATE, EVERY_STATE) | SNAPTREE_CAP(SNAPTREE_STEP_REVERT, EVERY_STATE) |
        SNAPTREE_CAP(SNAPTREE_STEP_DISCARD_LEAF, EVERY_STATE) | SNAPTREE_CAP(SNAPTREE_STEP_MERGE_INTO_PARENT, EVERY_STATE) |
        SNAPTREE_CAP(SNAPTREE_STEP_CONSOLIDATE, EVERY_STATE) | SNAPTREE_CAP(SNAPTREE_STEP_DETACH_LIVE, EVERY_STATE) |
        SNAPTREE_CAP(SNAPTREE_STEP_FORGET, EVERY_STATE),
    sim_open_domain,
    sim_close_domain,
    sim_power_state,
    NULL, /* domain_capabilities: the same for every domain */
    sim_create_step,
    sim_revert_step,
    sim_discard_leaf,
    sim_merge_into_parent,
    sim_consolidate,
    sim_detach_live_step,
    sim_forget,
    sim_list_physical,
    sim_content_digest,
    sim_write_guest_hook,
    sim_adopt,
    NULL, /* save_manifest: the simulator keeps no metadata beside its data */
    NULL, /* load_manifest */
    NULL, /* estimate: the simulator does not estimate space */
};

/* The one exported symbol: the library is built with hidden visibility for the rest. */
#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
const snaptree_backend_vtable *snaptree_backend_entry(void)
{
    return &vtable;
}
