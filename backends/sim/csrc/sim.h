/*
 * The sim backend's internals, shared by its modules: block maps, layers and the layer
 * store. The public face is only the vtable in sim.c.
 *
 * Model: a disk is a map block index (uint32) -> value (uint64); value 0 is the same as
 * absent. The base layer has no parent; there is one layer per snapshot uuid and the live
 * layer. Each layer stores only its delta over its physical parent plus the parent's id;
 * a layer's content is the fold of deltas from the base up.
 */
#ifndef SNAPTREE_SIM_H
#define SNAPTREE_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "snaptree_backend.h"

/* ---- errors (error.c) ---- */

/* Fills `err` with `code` and a formatted message; returns -1 so callers can `return`. */
int sim_fail(snaptree_backend_error *err, int32_t code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---- block maps (map.c) ---- */

/* One block of a delta: its index and value. */
typedef struct sim_entry {
    uint32_t block;
    uint64_t value;
} sim_entry;

/* A map block -> value, sorted by block. */
typedef struct sim_map {
    sim_entry *v;
    size_t len;
    size_t cap;
} sim_map;

void sim_map_init(sim_map *m);
void sim_map_free(sim_map *m);
/* 1 and *value when `block` has an entry, else 0. */
int sim_map_get(const sim_map *m, uint32_t block, uint64_t *value);
/* The block's value, 0 when absent. */
uint64_t sim_map_value(const sim_map *m, uint32_t block);
/* Sets an entry; 0, or -1 when out of memory. */
int sim_map_set(sim_map *m, uint32_t block, uint64_t value);
/* Makes `dst` a copy of `src`; 0, or -1 when out of memory. */
int sim_map_copy(sim_map *dst, const sim_map *src);

/* ---- layers (layer.c) ---- */

/* Which layer: the base, a snapshot's, or the live one. */
typedef enum sim_kind { SIM_BASE = 0, SIM_SNAP = 1, SIM_LIVE = 2 } sim_kind;

/* A layer's identity; `uuid` counts only for SIM_SNAP. */
typedef struct sim_id {
    sim_kind kind;
    snaptree_uuid uuid;
} sim_id;

/* A layer as stored: its delta over its parent. */
typedef struct sim_layer {
    sim_id id;
    /* The parent layer (SIM_BASE or SIM_SNAP); meaningless for the base, which has none. */
    sim_id parent;
    /* The live power state (SNAPTREE_POWER_*); stored in the live layer only. */
    int power;
    sim_map delta;
} sim_layer;

sim_id sim_base_id(void);
sim_id sim_live_id(void);
sim_id sim_snap_id(const snaptree_uuid *uuid);
int sim_id_eq(sim_id a, sim_id b);
/* Writes the canonical text of a uuid (36 characters and a NUL) into `out`. */
void sim_uuid_format(const snaptree_uuid *uuid, char out[37]);
/* Parses exactly 36 characters of canonical uuid text; 0 on success, -1 otherwise. */
int sim_uuid_parse(const char *text, snaptree_uuid *out);

void sim_layer_init(sim_layer *l, sim_id id);
void sim_layer_free(sim_layer *l);

/* ---- the layer store, a directory (store.c) ---- */

/*
 * Loads a layer. A missing base or live file reads as the initial state (empty base; empty
 * live layer on the base, shut off) with *exists = 0; a missing snapshot layer gives
 * *exists = 0 and an empty layer. Returns 0, or -1 with `err` filled.
 */
int sim_load(const char *dir, sim_id id, sim_layer *out, int *exists, snaptree_backend_error *err);
/* Writes a layer atomically: a temporary file, fsync, rename, fsync of the directory. */
int sim_store(const char *dir, const sim_layer *l, snaptree_backend_error *err);
/* Removes a snapshot layer's file; a missing file is fine. */
int sim_remove(const char *dir, sim_id id, snaptree_backend_error *err);
/* Lists every snapshot layer in the directory; the caller frees *ids. */
int sim_list(const char *dir, sim_id **ids, size_t *count, snaptree_backend_error *err);
/* The content of a layer: the fold of the deltas from the base up. */
int sim_content(const char *dir, sim_id id, sim_map *out, snaptree_backend_error *err);

/* ---- the steps (chain.c) ---- */

int sim_create(const char *dir, const snaptree_uuid *snap, snaptree_backend_error *err);
int sim_revert(const char *dir, const snaptree_uuid *snap, int power, snaptree_backend_error *err);
/* discard_leaf and consolidate: remove a layer, keeping the content of every dependent. */
/*
 * Refuses (-1, `err` filled) when a snapshot layer, retired or not, is stored on `snap`:
 * discard_leaf's precondition (SEMANTICS.md §4, §7.2). The live layer may be.
 */
int sim_require_no_layer_on(const char *dir, const snaptree_uuid *snap, snaptree_backend_error *err);
int sim_remove_preserving(const char *dir, const snaptree_uuid *snap, snaptree_backend_error *err);
int sim_merge(const char *dir, const snaptree_uuid *snap, const snaptree_uuid *parent, snaptree_backend_error *err);
int sim_detach_live(const char *dir, snaptree_backend_error *err);
int sim_digest(const char *dir, sim_id id, char *buf, size_t buflen, snaptree_backend_error *err);
int sim_write_guest(const char *dir, uint64_t seed, snaptree_backend_error *err);

/* ---- the domain XML (domain.c) ---- */

/* Finds <sim dir='...'/> in the domain XML; *dir is malloc'ed, absolute, and exists. */
int sim_domain_dir(const char *xml, size_t len, char **dir, snaptree_backend_error *err);

#endif /* SNAPTREE_SIM_H */
