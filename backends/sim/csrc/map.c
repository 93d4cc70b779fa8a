/* Sorted block maps: small, and binary search keeps lookups cheap. */
#include <stdlib.h>
#include <string.h>

#include "sim.h"

void sim_map_init(sim_map *m)
{
    m->v = NULL;
    m->len = 0;
    m->cap = 0;
}

void sim_map_free(sim_map *m)
{
    free(m->v);
    sim_map_init(m);
}

/* The index of `block`, or of where it would be inserted. */
static size_t find(const sim_map *m, uint32_t block)
{
    size_t lo = 0, hi = m->len;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->v[mid].block < block)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int sim_map_get(const sim_map *m, uint32_t block, uint64_t *value)
{
    size_t i = find(m, block);

    if (i < m->len && m->v[i].block == block) {
        if (value != NULL)
            *value = m->v[i].value;
        return 1;
    }
    return 0;
}

uint64_t sim_map_value(const sim_map *m, uint32_t block)
{
    uint64_t value = 0;

    sim_map_get(m, block, &value);
    return value;
}

int sim_map_set(sim_map *m, uint32_t block, uint64_t value)
{
    size_t i = find(m, block);

    if (i < m->len && m->v[i].block == block) {
        m->v[i].value = value;
        return 0;
    }
    if (m->len == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        sim_entry *v = realloc(m->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        m->v = v;
        m->cap = cap;
    }
    memmove(&m->v[i + 1], &m->v[i], (m->len - i) * sizeof *m->v);
    m->v[i].block = block;
    m->v[i].value = value;
    m->len++;
    return 0;
}

int sim_map_copy(sim_map *dst, const sim_map *src)
{
    sim_map copy;

    sim_map_init(&copy);
    if (src->len > 0) {
        copy.v = malloc(src->len * sizeof *copy.v);
        if (copy.v == NULL)
            return -1;
        memcpy(copy.v, src->v, src->len * sizeof *copy.v);
        copy.len = copy.cap = src->len;
    }
    sim_map_free(dst);
    *dst = copy;
    return 0;
}
