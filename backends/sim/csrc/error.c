/* Filling the caller's error struct. */
#include <stdarg.h>
#include <stdio.h>

#include "sim.h"

int sim_fail(snaptree_backend_error *err, int32_t code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return -1;
    err->code = code;
    va_start(ap, fmt);
    /* vsnprintf truncates and always terminates: the message fits the buffer. */
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}
