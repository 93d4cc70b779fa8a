/*
 * A deliberately broken or minimal plugin, compiled by the host's tests with one of:
 *
 *   -DNO_ENTRY          no snaptree_backend_entry symbol at all
 *   -DNULL_ENTRY        the entry returns NULL
 *   -DNEWER_MAJOR       the vtable claims ABI 2.0
 *   -DOLDER_MAJOR       the vtable claims ABI 0.9
 *   -DSMALL_STRUCT      struct_size is smaller than the 1.0 vtable
 *   -DNULL_MANDATORY    revert is NULL
 *   -DFAILING           every step fails with a BACKEND error
 *   -DBAD_RETURN        create returns 5, neither 0 nor -1
 *   -DNEWER_MINOR       the vtable claims ABI 1.7 and is longer than the 1.0 vtable
 *   -DBAD_POWER         power_state reports 9, which is no SNAPTREE_POWER_* value
 *   -DABI_1_0           an ABI 1.0 plugin: version 1.0 and the 1.0 struct_size, which ends
 *                       before 1.1's adopt slot; that slot holds a trap that would "adopt"
 *                       anything, so a host reading past struct_size is caught
 *   -DADOPTS            a 1.1 plugin whose adopt holds data only for snapshots named "held"
 *
 * and -DNAME='"type"'. Without a variant it is a valid plugin with no data whose optional
 * slots are all NULL.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snaptree_backend.h"

#ifndef NAME
#define NAME "hostile"
#endif

static int fail(snaptree_backend_error *err, const char *what)
{
    err->code = SNAPTREE_BACKEND_ERR_BACKEND;
    snprintf(err->message, sizeof err->message, "%s failed: the disk is on fire", what);
    return -1;
}

static int open_domain(const char *xml, size_t len, void **handle, unsigned int flags, snaptree_backend_error *err)
{
    (void)xml;
    (void)len;
    if (flags != 0) {
        err->code = SNAPTREE_BACKEND_ERR_INVALID_ARG;
        snprintf(err->message, sizeof err->message, "unknown flag bits 0x%x", flags);
        return -1;
    }
    *handle = malloc(1);
    return *handle ? 0 : -1;
}

static int close_domain(void *handle, unsigned int flags, snaptree_backend_error *err)
{
    (void)flags;
    (void)err;
    free(handle);
    return 0;
}

static int power_state(void *handle, int *state, unsigned int flags, snaptree_backend_error *err)
{
    (void)handle;
    (void)flags;
    (void)err;
#if defined(BAD_POWER)
    *state = 9;
#else
    *state = SNAPTREE_POWER_SHUTOFF;
#endif
    return 0;
}

static int create(void *handle, const snaptree_uuid *snapshot, const snaptree_uuid *parent, const char *name,
                  const char *description, snaptree_progress_fn progress, void *ctx, unsigned int flags,
                  snaptree_backend_error *err)
{
    (void)handle, (void)snapshot, (void)parent, (void)name, (void)description, (void)progress, (void)ctx, (void)flags;
#if defined(FAILING)
    return fail(err, "create");
#elif defined(BAD_RETURN)
    (void)err;
    return 5;
#else
    (void)err;
    return 0;
#endif
}

static int revert(void *handle, const snaptree_uuid *snapshot, int state, snaptree_progress_fn progress, void *ctx,
                  unsigned int flags, snaptree_backend_error *err)
{
    (void)handle, (void)snapshot, (void)state, (void)progress, (void)ctx, (void)flags;
#if defined(FAILING)
    return fail(err, "revert");
#else
    (void)err;
    return 0;
#endif
}

static int discard_leaf(void *handle, const snaptree_uuid *snapshot, snaptree_progress_fn progress, void *ctx,
                        unsigned int flags, snaptree_backend_error *err)
{
    (void)handle, (void)snapshot, (void)progress, (void)ctx, (void)flags;
#if defined(FAILING)
    return fail(err, "discard_leaf");
#else
    (void)err;
    return 0;
#endif
}

static int list_physical(void *handle, snaptree_layer_fn layer, void *ctx, snaptree_uuid *live_parent,
                         int *has_live_parent, unsigned int flags, snaptree_backend_error *err)
{
    (void)handle, (void)layer, (void)ctx, (void)live_parent, (void)flags, (void)err;
    *has_live_parent = 0;
    return 0;
}

/* ABI 1.1's adopt: "held" is adopted, anything else is missing. Under ABI_1_0 this sits
 * past the declared struct_size and must never be called. */
static int adopt(void *handle, const snaptree_uuid *snapshot, const snaptree_uuid *parent, const char *name,
                 unsigned int flags, snaptree_backend_error *err)
{
    (void)handle, (void)snapshot, (void)parent, (void)flags;
#if defined(ABI_1_0)
    (void)name, (void)err;
    abort();
#else
    if (strcmp(name, "held") == 0)
        return 0;
    err->code = SNAPTREE_BACKEND_ERR_OPERATION_INVALID;
    snprintf(err->message, sizeof err->message, "no data for snapshot '%s'", name);
    return -1;
#endif
}

/* ABI 1.2's manifest slots (MANIFEST): what is saved is given back. BAD_MANIFEST gives
 * back text that is not UTF-8, which the host must refuse. */
static char kept[4096];
static size_t kept_len;
static int kept_any;

static int save_manifest(void *handle, const char *manifest, size_t len, unsigned int flags,
                         snaptree_backend_error *err)
{
    (void)handle;
#if defined(MANIFEST_FAILS_ONCE)
    static int failed;
    if (!failed) {
        failed = 1;
        err->code = SNAPTREE_BACKEND_ERR_BACKEND;
        snprintf(err->message, sizeof err->message, "the disk holding the manifest is full");
        return -1;
    }
#endif
    if (flags != 0 || len >= sizeof kept) {
        err->code = SNAPTREE_BACKEND_ERR_INVALID_ARG;
        snprintf(err->message, sizeof err->message, "cannot keep this manifest");
        return -1;
    }
    memcpy(kept, manifest, len);
    kept[len] = 0;
    kept_len = len;
    kept_any = 1;
    return 0;
}

static int load_manifest(void *handle, snaptree_text_fn text, void *ctx, unsigned int flags,
                         snaptree_backend_error *err)
{
    (void)handle, (void)flags, (void)err;
#if defined(BAD_MANIFEST)
    text(ctx, "\xff\xfe", 2);
#else
    if (kept_any)
        text(ctx, kept, kept_len);
#endif
    return 0;
}

#if !defined(NO_ENTRY)

/* A 1.0 vtable followed by slots of a future minor version, for NEWER_MINOR. */
struct longer_vtable {
    snaptree_backend_vtable v1_0;
    void (*future_slot)(void);
    uint64_t future_field;
};

static const struct longer_vtable table = {
    {
#if defined(NEWER_MAJOR)
        (2 << 16) | 0,
#elif defined(OLDER_MAJOR)
        (0 << 16) | 9,
#elif defined(NEWER_MINOR)
        (SNAPTREE_BACKEND_ABI_MAJOR << 16) | 7,
#elif defined(ABI_1_0)
        (1 << 16) | 0,
#else
        SNAPTREE_BACKEND_ABI_VERSION,
#endif
#if defined(SMALL_STRUCT)
        16,
#elif defined(NEWER_MINOR)
        sizeof(struct longer_vtable),
#elif defined(ABI_1_0)
        offsetof(snaptree_backend_vtable, adopt),
#else
        sizeof(snaptree_backend_vtable),
#endif
        NAME,
        SNAPTREE_CAP(SNAPTREE_STEP_CREATE, SNAPTREE_POWER_MASK_ANY) |
            SNAPTREE_CAP(SNAPTREE_STEP_REVERT, SNAPTREE_POWER_MASK_ANY) |
            SNAPTREE_CAP(SNAPTREE_STEP_DISCARD_LEAF, SNAPTREE_POWER_MASK_ANY) |
            /* Claimed, but the slots are NULL: the host must call them unsupported. */
            SNAPTREE_CAP(SNAPTREE_STEP_MERGE_INTO_PARENT, SNAPTREE_POWER_MASK_ANY) |
            SNAPTREE_CAP(SNAPTREE_STEP_CONSOLIDATE, SNAPTREE_POWER_MASK_ANY),
        open_domain,
        close_domain,
        power_state,
        NULL,
        create,
#if defined(NULL_MANDATORY)
        NULL,
#else
        revert,
#endif
        discard_leaf,
        NULL,
        NULL,
        NULL,
        NULL,
        list_physical,
        NULL,
        NULL,
#if defined(ABI_1_0) || defined(ADOPTS)
        adopt,
#else
        NULL,
#endif
#if defined(MANIFEST) || defined(BAD_MANIFEST) || defined(MANIFEST_FAILS_ONCE)
        save_manifest,
        load_manifest,
#else
        NULL,
        NULL,
#endif
        NULL, /* estimate (ABI 1.3) */
    },
    NULL,
    0,
};

const snaptree_backend_vtable *snaptree_backend_entry(void)
{
#if defined(NULL_ENTRY)
    return NULL;
#else
    return &table.v1_0;
#endif
}

#else

/* Something exported, so the library is a real one without the entry. */
int snaptree_not_the_entry(void)
{
    return 0;
}

#endif
