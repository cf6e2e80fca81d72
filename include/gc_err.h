/*
 * Project-wide error codes.  Values are named after what the caller must
 * do; handlers map them to HTTP statuses in one place (handlers/http.c).
 */
#ifndef GC_ERR_H
#define GC_ERR_H

enum gc_err {
	GC_OK = 0,
	GC_ENOMEM,     /* allocation failed */
	GC_EINVAL,     /* input rejected: fix the request */
	GC_ETOOBIG,    /* input over its configured cap */
	GC_EAUTH,      /* signature or credentials rejected */
	GC_EFORBIDDEN, /* authenticated but not allowed */
	GC_ENOTFOUND,  /* no such object */
	GC_EEXISTS,    /* object already exists (idempotency hit) */
	GC_ESTORE,     /* the store failed: retry later */
	GC_EUPSTREAM,  /* remote API answered an error */
	GC_ETIMEOUT,   /* a deadline passed */
	GC_ESYS,       /* system call failed; see errno */
	GC_ECONFIG,    /* configuration is invalid */
	GC_ECRYPTO,    /* encryption or decryption failed */
	GC_E__MAX
};

/* Short English description of err; static storage, never NULL. */
const char *gc_strerror(enum gc_err err);

#endif
