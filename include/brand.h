/*
 * Brands: the admin document (DESIGN.md, Admin JSON API), its validation,
 * sealing of write-only secrets, masking for output, and the decrypted
 * form the delivery engine uses.
 */
#ifndef GC_BRAND_H
#define GC_BRAND_H

#include <stdint.h>

#include <jansson.h>

#include "crypto.h"
#include "gc_err.h"

struct store;

enum brand_key_field { BRAND_KEY_EMAIL, BRAND_KEY_MOBILE };

/* A brand ready for delivery: secrets in clear.  Owned strings. */
struct brand {
	char *slug;
	char *name;
	int has_emarsys;
	int emarsys_enabled;
	char *em_client_id;
	char *em_client_secret;
	enum brand_key_field em_key_field;
	long em_field_email;  /* 3 unless overridden */
	long em_field_opt_in; /* 31 */
	long em_field_mobile; /* 37 */
	long em_field_sms;    /* 0: find "Mobile SMS Opt-in" by name */
	int has_yotpo;
	int yotpo_enabled;
	char *yo_guid;
	char *yo_api_key;
	int yo_max_rps;     /* 0: the configured default */
	json_t *yo_actions; /* campaign slug -> action name (owned ref) */
};

/* Whether s is a valid brand slug: [a-z0-9][a-z0-9-]{0,63}. */
int brand_slug_valid(const char *s);

/*
 * Validate a PUT document for slug and merge it with the stored sealed
 * document (NULL when new): secrets omitted, null, or sent back masked
 * keep their stored value; new secrets are sealed under key.  On success
 * *sealed is the document to store (new reference).  GC_EINVAL when
 * invalid: errors (an array) receives {"field","detail"} objects.
 */
enum gc_err brand_doc_merge(const json_t *in, const json_t *stored,
                            const char *slug, const uint8_t key[CRYPTO_KEY_LEN],
                            json_t **sealed, json_t *errors);

/*
 * The public form of a sealed document: secrets replaced by "****" and
 * their last four characters.  New reference, NULL on failure.
 */
json_t *brand_doc_public(const json_t *sealed,
                         const uint8_t key[CRYPTO_KEY_LEN]);

/*
 * Load and decrypt brand slug for delivery.  GC_ENOTFOUND when there is
 * no such brand, GC_ECRYPTO when a secret does not open under key.
 */
enum gc_err brand_load(struct store *st, const uint8_t key[CRYPTO_KEY_LEN],
                       const char *slug, struct brand *b);
/* brand_load from the stored document text, read already. */
enum gc_err brand_from_doc(const uint8_t key[CRYPTO_KEY_LEN], const char *slug,
                           const char *text, struct brand *b);
void brand_fini(struct brand *b);

/*
 * Yotpo action name for a campaign: the brand's mapping, else
 * "gocertify-<campaign_slug>".  Writes into out (size n).
 */
void brand_action_name(const struct brand *b, const char *campaign_slug,
                       char *out, size_t n);

#endif
