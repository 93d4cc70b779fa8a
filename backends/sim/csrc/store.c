/*
 * The layer store: one text file per layer in the domain's directory.
 *
 *   base.layer, live.layer, <uuid>.layer
 *
 *   snaptree-sim-layer 1
 *   parent none|base|<uuid>
 *   power running|paused|shutoff      (live layer only)
 *   <block> <value>                   (one line per delta entry, decimal)
 *
 * Every write replaces a whole file atomically (temporary file, fsync, rename, fsync of
 * the directory), so a kill -9 leaves each file either old or new.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sim.h"

#define MAGIC "snaptree-sim-layer 1"

static void file_name(sim_id id, char out[64])
{
    char text[37];

    switch (id.kind) {
    case SIM_BASE:
        strcpy(out, "base.layer");
        break;
    case SIM_LIVE:
        strcpy(out, "live.layer");
        break;
    case SIM_SNAP:
        sim_uuid_format(&id.uuid, text);
        sprintf(out, "%s.layer", text);
        break;
    }
}

/* dir/name into a malloc'ed string, or NULL with `err` filled. */
static char *join(const char *dir, const char *name, snaptree_backend_error *err)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);

    if (path == NULL) {
        sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "out of memory");
        return NULL;
    }
    snprintf(path, n, "%s/%s", dir, name);
    return path;
}

static const char *power_name(int power)
{
    switch (power) {
    case SNAPTREE_POWER_RUNNING:
        return "running";
    case SNAPTREE_POWER_PAUSED:
        return "paused";
    default:
        return "shutoff";
    }
}

static int parse_parent(const char *text, sim_id *parent)
{
    snaptree_uuid uuid;

    if (strcmp(text, "none") == 0 || strcmp(text, "base") == 0) {
        *parent = sim_base_id();
        return 0;
    }
    if (strlen(text) != 36 || sim_uuid_parse(text, &uuid) != 0)
        return -1;
    *parent = sim_snap_id(&uuid);
    return 0;
}

/* Parses one "<block> <value>" line into the delta; -1 when malformed. */
static int parse_entry(char *line, sim_map *delta)
{
    char *end;
    unsigned long long block, value;

    errno = 0;
    block = strtoull(line, &end, 10);
    if (errno != 0 || end == line || *end != ' ' || block > UINT32_MAX)
        return -1;
    line = end + 1;
    value = strtoull(line, &end, 10);
    if (errno != 0 || end == line || *end != '\0')
        return -1;
    return sim_map_set(delta, (uint32_t)block, (uint64_t)value) == 0 ? 0 : -1;
}

static int parse(FILE *f, const char *path, sim_layer *out, snaptree_backend_error *err)
{
    char line[256];
    unsigned long lineno = 0;

    while (fgets(line, sizeof line, f) != NULL) {
        size_t n = strlen(line);
        lineno++;
        if (n == 0 || line[n - 1] != '\n')
            return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "layer file %s is corrupt at line %lu", path, lineno);
        line[n - 1] = '\0';
        if (lineno == 1) {
            if (strcmp(line, MAGIC) != 0)
                return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "%s is not a sim layer file", path);
        } else if (strncmp(line, "parent ", 7) == 0) {
            if (parse_parent(line + 7, &out->parent) != 0)
                return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "layer file %s has a bad parent at line %lu", path, lineno);
        } else if (strncmp(line, "power ", 6) == 0) {
            if (strcmp(line + 6, "running") == 0)
                out->power = SNAPTREE_POWER_RUNNING;
            else if (strcmp(line + 6, "paused") == 0)
                out->power = SNAPTREE_POWER_PAUSED;
            else if (strcmp(line + 6, "shutoff") == 0)
                out->power = SNAPTREE_POWER_SHUTOFF;
            else
                return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "layer file %s has a bad power state at line %lu", path, lineno);
        } else if (parse_entry(line, &out->delta) != 0) {
            return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "layer file %s has a bad block at line %lu", path, lineno);
        }
    }
    if (ferror(f) || lineno == 0)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "cannot read layer file %s", path);
    return 0;
}

int sim_load(const char *dir, sim_id id, sim_layer *out, int *exists, snaptree_backend_error *err)
{
    char name[64];
    char *path;
    FILE *f;
    int rc;

    sim_layer_init(out, id);
    file_name(id, name);
    path = join(dir, name, err);
    if (path == NULL)
        return -1;
    f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT) {
            *exists = 0;
            free(path);
            return 0;
        }
        rc = sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "cannot open layer file %s: %s", path, strerror(errno));
        free(path);
        return rc;
    }
    *exists = 1;
    rc = parse(f, path, out, err);
    fclose(f);
    free(path);
    if (rc != 0)
        sim_layer_free(out);
    return rc;
}

static int fsync_dir(const char *dir, snaptree_backend_error *err)
{
    int fd = open(dir, O_RDONLY);

    if (fd < 0)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "cannot open directory %s: %s", dir, strerror(errno));
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "cannot sync directory %s: %s", dir, strerror(e));
    }
    close(fd);
    return 0;
}

static int write_layer(FILE *f, const sim_layer *l)
{
    char text[37];
    size_t i;

    if (fprintf(f, "%s\n", MAGIC) < 0)
        return -1;
    if (l->id.kind == SIM_BASE) {
        if (fprintf(f, "parent none\n") < 0)
            return -1;
    } else if (l->parent.kind == SIM_BASE) {
        if (fprintf(f, "parent base\n") < 0)
            return -1;
    } else {
        sim_uuid_format(&l->parent.uuid, text);
        if (fprintf(f, "parent %s\n", text) < 0)
            return -1;
    }
    if (l->id.kind == SIM_LIVE && fprintf(f, "power %s\n", power_name(l->power)) < 0)
        return -1;
    for (i = 0; i < l->delta.len; i++)
        if (fprintf(f, "%" PRIu32 " %" PRIu64 "\n", l->delta.v[i].block, l->delta.v[i].value) < 0)
            return -1;
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        return -1;
    return 0;
}

int sim_store(const char *dir, const sim_layer *l, snaptree_backend_error *err)
{
    char name[64], tmpname[72];
    char *path = NULL, *tmp = NULL;
    FILE *f;
    int rc = -1;

    file_name(l->id, name);
    snprintf(tmpname, sizeof tmpname, ".%s.tmp", name);
    path = join(dir, name, err);
    tmp = path ? join(dir, tmpname, err) : NULL;
    if (tmp == NULL)
        goto out;
    f = fopen(tmp, "w");
    if (f == NULL) {
        sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (write_layer(f, l) != 0) {
        int e = errno;
        fclose(f);
        unlink(tmp);
        sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "cannot write %s: %s", tmp, strerror(e));
        goto out;
    }
    if (fclose(f) != 0) {
        sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto out;
    }
    rc = fsync_dir(dir, err);
out:
    free(path);
    free(tmp);
    return rc;
}

int sim_remove(const char *dir, sim_id id, snaptree_backend_error *err)
{
    char name[64];
    char *path;
    int rc = 0;

    file_name(id, name);
    path = join(dir, name, err);
    if (path == NULL)
        return -1;
    if (unlink(path) != 0 && errno != ENOENT)
        rc = sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "cannot remove layer file %s: %s", path, strerror(errno));
    free(path);
    return rc == 0 ? fsync_dir(dir, err) : rc;
}

int sim_list(const char *dir, sim_id **ids, size_t *count, snaptree_backend_error *err)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    sim_id *v = NULL;
    size_t n = 0, cap = 0;
    snaptree_uuid uuid;

    if (d == NULL)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "cannot list directory %s: %s", dir, strerror(errno));
    while ((e = readdir(d)) != NULL) {
        /* Exactly "<uuid>.layer": temporary files and the base and live layers are not snapshots. */
        if (strlen(e->d_name) != 42 || strcmp(e->d_name + 36, ".layer") != 0 || sim_uuid_parse(e->d_name, &uuid) != 0)
            continue;
        if (n == cap) {
            sim_id *grown;
            cap = cap ? cap * 2 : 16;
            grown = realloc(v, cap * sizeof *v);
            if (grown == NULL) {
                free(v);
                closedir(d);
                return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "out of memory");
            }
            v = grown;
        }
        v[n++] = sim_snap_id(&uuid);
    }
    closedir(d);
    *ids = v;
    *count = n;
    return 0;
}

int sim_content(const char *dir, sim_id id, sim_map *out, snaptree_backend_error *err)
{
    /* Collect the chain from `id` down to the base, then apply deltas base first. */
    sim_layer *chain = NULL;
    size_t n = 0, cap = 0, i, j;
    int rc = 0, exists;
    sim_id at = id;
    sim_map content;

    for (;;) {
        sim_layer l;
        if (n == cap) {
            sim_layer *grown;
            cap = cap ? cap * 2 : 8;
            grown = realloc(chain, cap * sizeof *chain);
            if (grown == NULL) {
                rc = sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "out of memory");
                goto out;
            }
            chain = grown;
        }
        if (sim_load(dir, at, &l, &exists, err) != 0) {
            rc = -1;
            goto out;
        }
        if (!exists && at.kind == SIM_SNAP) {
            char text[37];
            sim_layer_free(&l);
            sim_uuid_format(&at.uuid, text);
            rc = sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "snapshot %s has no layer in %s", text, dir);
            goto out;
        }
        chain[n++] = l;
        if (at.kind == SIM_BASE)
            break;
        at = l.parent;
        /* A chain longer than every file in the directory would be a cycle. */
        if (n > 1000000) {
            rc = sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "the layers in %s form a cycle", dir);
            goto out;
        }
    }
    sim_map_init(&content);
    for (i = n; i-- > 0;)
        for (j = 0; j < chain[i].delta.len; j++)
            if (sim_map_set(&content, chain[i].delta.v[j].block, chain[i].delta.v[j].value) != 0) {
                sim_map_free(&content);
                rc = sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "out of memory");
                goto out;
            }
    sim_map_free(out);
    *out = content;
out:
    for (i = 0; i < n; i++)
        sim_layer_free(&chain[i]);
    free(chain);
    return rc;
}
