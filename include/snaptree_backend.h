/*
 * snaptree_backend.h - the snaptree backend plugin ABI.
 *
 * This header is the one source of truth of the ABI between the snaptree engine (the
 * host) and a backend plugin. The Rust bindings in backends/abi/src/bindings.rs are
 * generated from it.
 *
 * A plugin is a shared library named libsnaptree_backend_<type>.so, where <type> is the
 * domain XML's type attribute. It exports one function, snaptree_backend_entry, returning
 * a pointer to a constant vtable that lives as long as the library (forever: the host
 * never unloads a plugin).
 *
 * Rules every function in the vtable follows:
 *  - It returns 0 on success and -1 on failure. On failure it fills the caller-owned
 *    error struct (code and a NUL-terminated message). Out-parameters are written only
 *    on success.
 *  - It takes a flags argument. No flag is defined in ABI 1.0, so a plugin must refuse
 *    every nonzero bit with SNAPTREE_BACKEND_ERR_INVALID_ARG: a later host may pass a
 *    flag it relies on, and silently ignoring it would be wrong.
 *  - No memory allocated on one side is freed on the other. Strings and lists flow
 *    through caller-owned buffers and callbacks.
 *  - Calls on one domain handle are never concurrent; calls on different handles, and
 *    open_domain, may run concurrently on different threads.
 *
 * The vtable begins with abi_version and struct_size and only ever grows at the end, in
 * minor versions. A NULL optional slot means "unsupported", and so does a slot past the
 * plugin's struct_size (a plugin built against an older minor version). The host rejects
 * a plugin whose major version is not its own, whose struct_size is smaller than the 1.0
 * vtable, or whose mandatory slots are NULL.
 *
 * History: 1.0 ends at write_guest. 1.1 appends adopt. 1.2 appends save_manifest and
 * load_manifest. 1.3 appends estimate.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#ifndef SNAPTREE_BACKEND_H
#define SNAPTREE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The major version of this ABI: a plugin of another major version is refused. */
#define SNAPTREE_BACKEND_ABI_MAJOR 1
/** The minor version of this ABI: minor versions only add slots at the vtable's end. */
#define SNAPTREE_BACKEND_ABI_MINOR 3
/** The ABI version a plugin puts in its vtable: major in the high 16 bits, minor low. */
#define SNAPTREE_BACKEND_ABI_VERSION ((SNAPTREE_BACKEND_ABI_MAJOR << 16) | SNAPTREE_BACKEND_ABI_MINOR)

/** The name of the one symbol a plugin exports. */
#define SNAPTREE_BACKEND_ENTRY_SYMBOL "snaptree_backend_entry"

/** The size of the message buffer in snaptree_backend_error, including the NUL. */
#define SNAPTREE_BACKEND_ERROR_MESSAGE_SIZE 512
/** The size of the buffer the host passes to content_digest, including the NUL. */
#define SNAPTREE_BACKEND_DIGEST_SIZE 256

/*
 * Error codes: the engine's stable error codes. A plugin normally reports BACKEND; the
 * host keeps INVALID_ARG and OPERATION_INVALID and turns every other code into BACKEND.
 */
/** An argument is invalid, such as unknown flag bits. */
#define SNAPTREE_BACKEND_ERR_INVALID_ARG 1
/** The backend cannot do this now, for example in this power state. */
#define SNAPTREE_BACKEND_ERR_OPERATION_INVALID 7
/** The backend failed; the message says why. */
#define SNAPTREE_BACKEND_ERR_BACKEND 8

/*
 * Power states, as power_state reports them and revert receives them.
 */
/** The guest is running. */
#define SNAPTREE_POWER_RUNNING 1
/** The guest is paused. */
#define SNAPTREE_POWER_PAUSED 2
/** The guest is shut off. */
#define SNAPTREE_POWER_SHUTOFF 3

/*
 * Power masks: sets of power states, one bit per state.
 */
/** The running state in a power mask. */
#define SNAPTREE_POWER_MASK_RUNNING 1
/** The paused state in a power mask. */
#define SNAPTREE_POWER_MASK_PAUSED 2
/** The shut-off state in a power mask. */
#define SNAPTREE_POWER_MASK_SHUTOFF 4
/** Every power state. */
#define SNAPTREE_POWER_MASK_ANY 7

/*
 * Steps, in the engine's order. Step k's power mask is byte k of the capabilities
 * bitmask: bits 8k..8k+2 say in which live power states the step is allowed, and a zero
 * byte means the step is unsupported. Bits 8k+3..8k+7 and byte 7 are reserved (zero).
 */
/** create: freeze the live state as a new snapshot. */
#define SNAPTREE_STEP_CREATE 0
/** revert: make the live state a snapshot's content. */
#define SNAPTREE_STEP_REVERT 1
/** discard_leaf: free a snapshot that has no children. */
#define SNAPTREE_STEP_DISCARD_LEAF 2
/** merge_into_parent: make the parent's content the snapshot's, free the snapshot. */
#define SNAPTREE_STEP_MERGE_INTO_PARENT 3
/** consolidate: free a snapshot, pushing its data into every dependent. */
#define SNAPTREE_STEP_CONSOLIDATE 4
/** detach_live: make the live state independent of every snapshot's data. */
#define SNAPTREE_STEP_DETACH_LIVE 5
/** forget: notice that a snapshot was retired; change no data. */
#define SNAPTREE_STEP_FORGET 6
/** How many steps ABI 1.0 defines. */
#define SNAPTREE_STEP_COUNT 7

/** The capability bits allowing step `step` in the power states of `mask`. */
#define SNAPTREE_CAP(step, mask) ((uint64_t)(mask) << (8 * (step)))

/** A caller-owned error: the host zeroes it before each call, the plugin fills it on failure. */
typedef struct snaptree_backend_error {
    /** One of the SNAPTREE_BACKEND_ERR_* codes. */
    int32_t code;
    /** A NUL-terminated sentence naming the object concerned, truncated to fit. */
    char message[SNAPTREE_BACKEND_ERROR_MESSAGE_SIZE];
} snaptree_backend_error;

/** A snapshot uuid: its 16 bytes in RFC 4122 (big-endian) order. */
typedef struct snaptree_uuid {
    /** The bytes, most significant first. */
    uint8_t bytes[16];
} snaptree_uuid;

/**
 * Progress of a long step: `fraction` runs from 0.0 to 1.0. Returns nonzero to go on, 0 to
 * ask the plugin to cancel at the next point where it can stop without having changed
 * anything; it then fails with a message saying it was cancelled. May be NULL.
 */
typedef int (*snaptree_progress_fn)(void *ctx, double fraction);

/**
 * Receives one layer of list_physical: a snapshot's uuid and its physical parent (NULL
 * when the layer sits on the base). Both pointers are valid only during the call.
 */
typedef void (*snaptree_layer_fn)(void *ctx, const snaptree_uuid *snapshot, const snaptree_uuid *parent);

/**
 * Receives a text of `len` bytes (NUL-terminated as well); valid only during the call.
 */
typedef void (*snaptree_text_fn)(void *ctx, const char *text, size_t len);

/**
 * One step's use of one file system, as estimate reports it (SEMANTICS.md 7.7).
 */
typedef struct snaptree_space_use {
    /** The file system's identity, equal for every file on it: its device number (st_dev). */
    uint64_t fs_id;
    /** Bytes the step newly allocates there. */
    uint64_t bytes_written;
    /** Bytes the step frees there once it succeeds. */
    uint64_t bytes_freed;
    /** Bytes free there now for an unprivileged writer (statvfs: f_bavail * f_frsize). */
    uint64_t bytes_free;
    /** A NUL-terminated path naming the file system in messages (its mount point). */
    const char *path;
} snaptree_space_use;

/**
 * Receives one file system's entry of estimate. The pointer and the path are valid only
 * during the call.
 */
typedef void (*snaptree_space_fn)(void *ctx, const snaptree_space_use *use);

/** The plugin's table: constant data and functions, valid as long as the library is loaded. */
typedef struct snaptree_backend_vtable {
    /** SNAPTREE_BACKEND_ABI_VERSION as the plugin was compiled. */
    uint32_t abi_version;
    /** sizeof(snaptree_backend_vtable) as the plugin was compiled. */
    uint32_t struct_size;
    /** The backend's type name, as in the domain's type attribute; NUL-terminated. */
    const char *name;
    /** Which steps the backend implements, in which power states: see SNAPTREE_CAP. */
    uint64_t capabilities;

    /**
     * Opens a domain. `domain_xml` is the whole domain document, NUL-terminated, `len`
     * bytes without the NUL. On success `*handle` is the plugin's handle for the domain.
     * Mandatory.
     */
    int (*open_domain)(const char *domain_xml, size_t len, void **handle, unsigned int flags,
                       snaptree_backend_error *err);
    /** Closes a domain and frees its handle, even on failure. Mandatory. */
    int (*close_domain)(void *handle, unsigned int flags, snaptree_backend_error *err);
    /** Writes the live power state (SNAPTREE_POWER_*) into `*state`. Mandatory. */
    int (*power_state)(void *handle, int *state, unsigned int flags, snaptree_backend_error *err);
    /**
     * Writes this domain's capabilities into `*capabilities`, for backends whose abilities
     * depend on the domain. Optional: NULL means the vtable's capabilities apply.
     */
    int (*domain_capabilities)(void *handle, uint64_t *capabilities, unsigned int flags,
                               snaptree_backend_error *err);

    /**
     * Freezes the live state as snapshot `snapshot` on every disk, atomically. `parent` is
     * the engine's current snapshot (NULL for none); `name` and `description` are
     * NUL-terminated, for backends that show them. Mandatory.
     */
    int (*create)(void *handle, const snaptree_uuid *snapshot, const snaptree_uuid *parent, const char *name,
                  const char *description, snaptree_progress_fn progress, void *progress_ctx, unsigned int flags,
                  snaptree_backend_error *err);
    /** Makes the live state `snapshot`'s content and the power state `state`. Mandatory. */
    int (*revert)(void *handle, const snaptree_uuid *snapshot, int state, snaptree_progress_fn progress,
                  void *progress_ctx, unsigned int flags, snaptree_backend_error *err);
    /** Frees `snapshot`, which has no children; keeps the live state valid. Mandatory. */
    int (*discard_leaf)(void *handle, const snaptree_uuid *snapshot, snaptree_progress_fn progress,
                        void *progress_ctx, unsigned int flags, snaptree_backend_error *err);
    /**
     * Makes the content of `parent` (NULL: the base) that of `snapshot`, its only child,
     * then frees `snapshot`, keeping its children and the live state valid. Optional.
     */
    int (*merge_into_parent)(void *handle, const snaptree_uuid *snapshot, const snaptree_uuid *parent,
                             snaptree_progress_fn progress, void *progress_ctx, unsigned int flags,
                             snaptree_backend_error *err);
    /** Frees `snapshot`, keeping the content of every dependent. Optional. */
    int (*consolidate)(void *handle, const snaptree_uuid *snapshot, snaptree_progress_fn progress,
                       void *progress_ctx, unsigned int flags, snaptree_backend_error *err);
    /** Makes the live state independent of every snapshot's data. Optional. */
    int (*detach_live)(void *handle, snaptree_progress_fn progress, void *progress_ctx, unsigned int flags,
                       snaptree_backend_error *err);
    /** Notices that `snapshot` was retired; changes no data. Optional. */
    int (*forget)(void *handle, const snaptree_uuid *snapshot, unsigned int flags, snaptree_backend_error *err);

    /**
     * Reports the physical tree: calls `layer` once per snapshot layer the backend holds,
     * then, on success, writes the layer the live state derives from into `*live_parent`
     * and sets `*has_live_parent` to 1, or sets `*has_live_parent` to 0 when the live state
     * sits on the base. Mandatory.
     */
    int (*list_physical)(void *handle, snaptree_layer_fn layer, void *layer_ctx, snaptree_uuid *live_parent,
                         int *has_live_parent, unsigned int flags, snaptree_backend_error *err);

    /**
     * Test hook: writes a NUL-terminated digest of the content of `snapshot` (NULL: the
     * live state) into `buf` of `buflen` bytes. Equal contents give equal digests whatever
     * the physical layout. Optional, together with write_guest.
     */
    int (*content_digest)(void *handle, const snaptree_uuid *snapshot, char *buf, size_t buflen,
                          unsigned int flags, snaptree_backend_error *err);
    /**
     * Test hook: writes guest data derived from `seed` into the live state, as a running
     * guest would. Optional, together with content_digest.
     */
    int (*write_guest)(void *handle, uint64_t seed, unsigned int flags, snaptree_backend_error *err);

    /* ---- ABI 1.1 ---- */

    /**
     * adopt (REDEFINE, SEMANTICS.md 7.3): checks that the backend already holds data for
     * snapshot `snapshot` stored on the data of `parent` (NULL: on the base), made by this
     * backend or by another tool, and records how to find it from now on (for example a
     * qcow2 tag or file named by `name`, the snapshot's NUL-terminated name). Changes no
     * data. Missing or misplaced data fails with SNAPTREE_BACKEND_ERR_OPERATION_INVALID
     * and a message naming what is missing. Restartable: adopting again what is adopted
     * succeeds. Optional: NULL means the backend cannot adopt, and the engine refuses a
     * REDEFINE of a new snapshot before calling anything.
     */
    int (*adopt)(void *handle, const snaptree_uuid *snapshot, const snaptree_uuid *parent, const char *name,
                 unsigned int flags, snaptree_backend_error *err);

    /* ---- ABI 1.2 ---- */

    /**
     * Keeps `manifest` (`len` bytes of UTF-8, NUL-terminated as well: the engine's
     * description of every snapshot — names, descriptions, dates, parents, current) beside
     * the domain's data, durably, replacing the one kept before, so that a lost state
     * directory can be rebuilt from the data alone (`snaptree adopt`). The engine calls it
     * after an operation's last step and before it records the operation as done, so the
     * manifest is never older than the data; an empty `manifest` (len 0) means the domain
     * has no snapshot left, and the backend may remove what it kept. Optional, together
     * with load_manifest.
     */
    int (*save_manifest)(void *handle, const char *manifest, size_t len, unsigned int flags,
                         snaptree_backend_error *err);
    /**
     * Calls `text` once with the manifest kept beside the domain's data, or not at all when
     * there is none. Optional, together with save_manifest.
     */
    int (*load_manifest)(void *handle, snaptree_text_fn text, void *text_ctx, unsigned int flags,
                         snaptree_backend_error *err);

    /* ---- ABI 1.3 ---- */

    /**
     * estimate (SEMANTICS.md 7.7): what step `step` (a SNAPTREE_STEP_*) on `snapshot` (NULL
     * for detach_live) with `parent` (merge_into_parent's and create's; NULL: the base)
     * would write and free, run from the current physical state. Calls `space` once per
     * file system the step touches, then sets `*known` to 1; or sets `*known` to 0 when it
     * cannot estimate this step (the engine then runs the plan unchecked). Changes nothing.
     * Optional: NULL means the backend cannot estimate any step.
     */
    int (*estimate)(void *handle, int step, const snaptree_uuid *snapshot, const snaptree_uuid *parent,
                    snaptree_space_fn space, void *space_ctx, int *known, unsigned int flags,
                    snaptree_backend_error *err);
} snaptree_backend_vtable;

/** The type of snaptree_backend_entry. */
typedef const snaptree_backend_vtable *(*snaptree_backend_entry_fn)(void);

/** The one function a plugin exports: its vtable, or NULL when it cannot be used at all. */
const snaptree_backend_vtable *snaptree_backend_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* SNAPTREE_BACKEND_H */
