/*
 * Tiny test helpers for the C programs of tests/c: a failed check prints where and why
 * (with the library's last error) and exits 1.
 */
#ifndef SNAPTREE_TEST_CHECK_H
#define SNAPTREE_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <snaptree.h>

static void check_fail(const char *file, int line, const char *what)
{
    const char *msg = snaptree_last_error_message();
    fprintf(stderr, "%s:%d: check failed: %s\n  last error: %d %s\n", file, line, what, snaptree_last_error_code(),
            msg != NULL ? msg : "(none)");
    exit(1);
}

#define CHECK(cond)                                  \
    do {                                             \
        if (!(cond))                                 \
            check_fail(__FILE__, __LINE__, #cond);   \
    } while (0)

/* The last error is `code`, with a message containing `needle` (NULL: any message). */
static void check_error(const char *file, int line, const char *expr, int code, const char *needle)
{
    const char *msg = snaptree_last_error_message();
    char what[512];

    if (snaptree_last_error_code() != code || msg == NULL || msg[0] == '\0' ||
        (needle != NULL && strstr(msg, needle) == NULL)) {
        snprintf(what, sizeof what, "%s: expected error %d with a message containing '%s'", expr, code,
                 needle != NULL ? needle : "");
        check_fail(file, line, what);
    }
}

/* `call` returns -1 and sets error `code` (message containing `needle`). */
#define CHECK_FAIL_INT(call, code, needle)                            \
    do {                                                              \
        int r_ = (call);                                              \
        if (r_ != -1)                                                 \
            check_fail(__FILE__, __LINE__, #call " should return -1"); \
        check_error(__FILE__, __LINE__, #call, (code), (needle));     \
    } while (0)

/* `call` returns NULL and sets error `code` (message containing `needle`). */
#define CHECK_FAIL_PTR(call, code, needle)                              \
    do {                                                                \
        const void *p_ = (call);                                        \
        if (p_ != NULL)                                                 \
            check_fail(__FILE__, __LINE__, #call " should return NULL"); \
        check_error(__FILE__, __LINE__, #call, (code), (needle));       \
    } while (0)

/* `call` returns 0 and leaves no error. */
#define CHECK_OK(call)                                                              \
    do {                                                                            \
        int r_ = (call);                                                            \
        if (r_ != 0 || snaptree_last_error_code() != 0 || snaptree_last_error_message() != NULL) \
            check_fail(__FILE__, __LINE__, #call " should succeed");                \
    } while (0)

/* `call` returns non-NULL and leaves no error; evaluates to it. */
static void *check_ptr(const char *file, int line, const char *expr, void *p)
{
    if (p == NULL || snaptree_last_error_code() != 0)
        check_fail(file, line, expr);
    return p;
}
#define CHECK_PTR(call) check_ptr(__FILE__, __LINE__, #call " should succeed", (call))

/* `text` with every @NAME@ and @DIR@ replaced by `name` and `dir`; malloc'ed. */
static inline char *substitute_name_dir(const char *text, const char *name, const char *dir)
{
    size_t cap = strlen(text) + 1, len = 0;
    const char *p;
    char *out;

    for (p = text; (p = strstr(p, "@")) != NULL; p++)
        cap += strlen(name) + strlen(dir);
    out = malloc(cap);
    CHECK(out != NULL);
    while (*text != '\0') {
        if (strncmp(text, "@NAME@", 6) == 0) {
            memcpy(out + len, name, strlen(name));
            len += strlen(name);
            text += 6;
        } else if (strncmp(text, "@DIR@", 5) == 0) {
            memcpy(out + len, dir, strlen(dir));
            len += strlen(dir);
            text += 5;
        } else {
            out[len++] = *text++;
        }
    }
    out[len] = '\0';
    return out;
}

#endif
