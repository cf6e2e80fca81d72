/*
 * SAP Emarsys Core API v3 client (reference/emarsys-api.md): builds the
 * requests and interprets the replies for one delivery; the engine sends
 * them (dest.h).
 */
#ifndef GC_EMARSYS_H
#define GC_EMARSYS_H

#include <jansson.h>

#include "app_config.h"
#include "brand.h"
#include "httpc.h"

/* Parsed reply envelope {"replyCode","replyText","data"}. */
struct em_reply {
	json_t *root;     /* owned; NULL when the body is not a JSON object */
	long code;        /* replyCode (digits as string or number); else -1 */
	const char *text; /* replyText, borrowed from root ("" when absent) */
	json_t *data;     /* borrowed from root */
};

/* Parse r's body into rep (release with emarsys_reply_fini). */
void emarsys_reply_parse(const struct http_resp *r, struct em_reply *rep);
void emarsys_reply_fini(struct em_reply *rep);

/*
 * The error a contact got inside an upsert reply: looks up key_value in
 * data.errors (an object, or an empty [] / {} / absent); with key_value
 * NULL, the first error of any contact.  Returns 1 and fills code (0 when
 * the entry names none) and msg (size n) when there is one, else 0 and
 * leaves them alone.
 */
int emarsys_contact_error(const struct em_reply *rep, const char *key_value,
                          long *code, char *msg, size_t n);

/*
 * Id member as text whether the API sent a string or a number: returns 1
 * and fills out, or 0 with out "" when v is neither a non-negative
 * integer nor a string of 1 to 18 digits (v may be NULL).
 */
int emarsys_id_text(const json_t *v, char out[32]);

/*
 * Deterministic trigger_id of a brand's external event for one Gocertify
 * verification: "gcrelay-" and 32 hex digits of SHA-256(brand "\n"
 * event_name "\n" token) (token NULL counts as "").  Not the webhook id:
 * a retry, and the same verification re-sent under a new webhook id, get
 * the same id, so Emarsys applies the trigger once; nothing else
 * collides.  GC_OK, or GC_ECRYPTO / GC_ENOMEM with out "" (then no
 * trigger may be sent).
 */
enum gc_err emarsys_trigger_id(const char *brand, const char *token,
                               const char *event_name, char out[48]);

/*
 * Preflight for operators: check the brand's credentials and read-only
 * permissions against the real API and append {"check","ok","detail"}
 * objects to checks.  Creates nothing.
 */
void emarsys_preflight(const struct app_config *cfg, const struct brand *b,
                       struct httpc *h, json_t *checks);

#endif
