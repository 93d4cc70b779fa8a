/*
 * The sim's part of the domain XML: <sim dir='/absolute/path'/> anywhere inside <domain>.
 * The engine has already parsed and validated the document, so a small scan suffices.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sim.h"

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The start of the first "<sim" tag in xml[0..len), or NULL. */
static const char *find_tag(const char *xml, size_t len)
{
    size_t i;

    for (i = 0; i + 5 <= len; i++)
        if (memcmp(xml + i, "<sim", 4) == 0 && (is_space(xml[i + 4]) || xml[i + 4] == '/' || xml[i + 4] == '>'))
            return xml + i;
    return NULL;
}

/* Decodes the five predefined XML entities of [s, end) into a malloc'ed string. */
static char *decode(const char *s, const char *end)
{
    static const struct {
        const char *name;
        char c;
    } entities[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    char *out = malloc((size_t)(end - s) + 1), *o = out;
    size_t k;

    if (out == NULL)
        return NULL;
    while (s < end) {
        if (*s == '&') {
            for (k = 0; k < sizeof entities / sizeof entities[0]; k++) {
                size_t n = strlen(entities[k].name);
                if ((size_t)(end - s) >= n && memcmp(s, entities[k].name, n) == 0) {
                    *o++ = entities[k].c;
                    s += n;
                    break;
                }
            }
            if (k == sizeof entities / sizeof entities[0]) {
                free(out);
                return NULL;
            }
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

int sim_domain_dir(const char *xml, size_t len, char **dir, snaptree_backend_error *err)
{
    const char *tag = find_tag(xml, len), *end = xml + len, *p;
    char *value;
    struct stat st;

    if (tag == NULL)
        return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND,
                        "the domain XML has no <sim dir='...'/> element naming the directory of its layers");
    /* Walk the tag's attributes: name = 'value' or name = "value", up to '>'. */
    for (p = tag + 4; p < end && *p != '>';) {
        const char *name = p, *name_end, *v;
        char quote;

        if (is_space(*p) || *p == '/') {
            p++;
            continue;
        }
        while (p < end && *p != '=' && !is_space(*p) && *p != '>')
            p++;
        name_end = p;
        while (p < end && is_space(*p))
            p++;
        if (p >= end || *p != '=')
            break;
        p++;
        while (p < end && is_space(*p))
            p++;
        if (p >= end || (*p != '\'' && *p != '"'))
            break;
        quote = *p++;
        v = p;
        while (p < end && *p != quote)
            p++;
        if (p >= end)
            break;
        if (name_end - name == 3 && memcmp(name, "dir", 3) == 0) {
            value = decode(v, p);
            if (value == NULL)
                return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "the dir attribute of <sim> is not plain text");
            if (value[0] != '/') {
                sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "layer directory '%s' is not an absolute path", value);
                free(value);
                return -1;
            }
            /* The domain's directory is created on first use; its parent must exist. */
            if (mkdir(value, 0777) != 0 && errno != EEXIST) {
                sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "cannot create layer directory %s: %s", value,
                         strerror(errno));
                free(value);
                return -1;
            }
            if (stat(value, &st) != 0 || !S_ISDIR(st.st_mode)) {
                sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "layer directory %s is not a directory", value);
                free(value);
                return -1;
            }
            *dir = value;
            return 0;
        }
        p++;
    }
    return sim_fail(err, SNAPTREE_BACKEND_ERR_BACKEND, "the <sim> element has no dir attribute");
}
