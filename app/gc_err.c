#include "gc_err.h"

static const char *const names[] = {
    [GC_OK] = "success",
    [GC_ENOMEM] = "out of memory",
    [GC_EINVAL] = "invalid input",
    [GC_ETOOBIG] = "input too large",
    [GC_EAUTH] = "authentication failed",
    [GC_EFORBIDDEN] = "forbidden",
    [GC_ENOTFOUND] = "not found",
    [GC_EEXISTS] = "already exists",
    [GC_ESTORE] = "store unavailable",
    [GC_EUPSTREAM] = "upstream error",
    [GC_ETIMEOUT] = "timed out",
    [GC_ESYS] = "system error",
    [GC_ECONFIG] = "invalid configuration",
    [GC_ECRYPTO] = "cryptographic failure",
};
_Static_assert(sizeof(names) / sizeof(names[0]) == GC_E__MAX,
               "gc_err names[] out of step with enum gc_err");

/* See gc_err.h. */
const char *
gc_strerror(enum gc_err err)
{
	if ((unsigned)err >= GC_E__MAX)
		return "unknown error";
	return names[err];
}
