/* Layer identities and uuid text. */
#include <string.h>

#include "sim.h"

sim_id sim_base_id(void)
{
    sim_id id;

    memset(&id, 0, sizeof id);
    id.kind = SIM_BASE;
    return id;
}

sim_id sim_live_id(void)
{
    sim_id id = sim_base_id();

    id.kind = SIM_LIVE;
    return id;
}

sim_id sim_snap_id(const snaptree_uuid *uuid)
{
    sim_id id = sim_base_id();

    id.kind = SIM_SNAP;
    id.uuid = *uuid;
    return id;
}

int sim_id_eq(sim_id a, sim_id b)
{
    if (a.kind != b.kind)
        return 0;
    return a.kind != SIM_SNAP || memcmp(a.uuid.bytes, b.uuid.bytes, sizeof a.uuid.bytes) == 0;
}

void sim_uuid_format(const snaptree_uuid *uuid, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    size_t i, o = 0;

    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[uuid->bytes[i] >> 4];
        out[o++] = hex[uuid->bytes[i] & 15];
    }
    out[o] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int sim_uuid_parse(const char *text, snaptree_uuid *out)
{
    size_t i, o = 0;

    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text[i] != '-')
                return -1;
            continue;
        }
        if (hexval(text[i]) < 0 || hexval(text[i + 1]) < 0)
            return -1;
        out->bytes[o++] = (uint8_t)(hexval(text[i]) << 4 | hexval(text[i + 1]));
        i++;
    }
    return 0;
}

void sim_layer_init(sim_layer *l, sim_id id)
{
    l->id = id;
    l->parent = sim_base_id();
    l->power = SNAPTREE_POWER_SHUTOFF;
    sim_map_init(&l->delta);
}

void sim_layer_free(sim_layer *l)
{
    sim_map_free(&l->delta);
}
