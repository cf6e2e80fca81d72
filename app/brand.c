#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "brand.h"
#include "jsonutil.h"
#include "store.h"

#define MASK_PREFIX "****"

/* See brand.h. */
int
brand_slug_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64 || s[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return 0;
	return 1;
}

static void
add_error(json_t *errors, const char *field, const char *detail)
{
	json_array_append_new(
	    errors, json_pack("{s:s, s:s}", "field", field, "detail", detail));
}

/* Printable ASCII without spaces, 1..max bytes. */
static int
token_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return 0;
	return 1;
}

/* AAD binding a sealed secret to its brand and place. */
static void
secret_aad(const char *slug, const char *field, char *out, size_t n)
{
	snprintf(out, n, "brand:%s:%s", slug, field);
}

/* Mask of a clear secret into out. */
static void
secret_mask(const char *clear, char *out, size_t n)
{
	size_t len = strlen(clear);

	if (len <= 8)
		snprintf(out, n, MASK_PREFIX);
	else
		snprintf(out, n, MASK_PREFIX "%s", clear + len - 4);
}

/* Clear text of a stored sealed secret (caller frees), or NULL. */
static char *
secret_open(const json_t *section, const char *name, const char *slug,
            const char *field, const uint8_t key[CRYPTO_KEY_LEN])
{
	const char *sealed = jsonutil_str(section, name);
	char aad[160], *clear = NULL;

	if (sealed == NULL)
		return NULL;
	secret_aad(slug, field, aad, sizeof(aad));
	if (crypto_open(key, sealed, aad, &clear) != GC_OK)
		return NULL;
	return clear;
}

/*
 * One write-only secret: a new value is sealed into out; absent, null or
 * the mask of the stored value keeps the stored one; else an error.
 */
static void
merge_secret(const json_t *in, const json_t *stored, const char *name,
             const char *field, const char *slug,
             const uint8_t key[CRYPTO_KEY_LEN], json_t *out, json_t *errors)
{
	json_t *v = json_object_get(in, name);
	char aad[160], mask[64] = "", *clear, *sealed;

	if ((clear = secret_open(stored, name, slug, field, key)) != NULL) {
		secret_mask(clear, mask, sizeof(mask));
		OPENSSL_cleanse(clear, strlen(clear));
		free(clear);
	}
	if (v != NULL && !json_is_null(v) && !json_is_string(v)) {
		add_error(errors, field, "must be a string");
		return;
	}
	if (v == NULL || json_is_null(v) ||
	    (mask[0] != '\0' && strcmp(json_string_value(v), mask) == 0)) {
		if (jsonutil_str(stored, name) == NULL)
			add_error(errors, field, "required");
		else
			json_object_set_new(
			    out, name, json_string(jsonutil_str(stored, name)));
		return;
	}
	if (!token_ok(json_string_value(v), 512)) {
		add_error(errors, field,
		          "must be 1 to 512 printable characters without "
		          "spaces");
		return;
	}
	secret_aad(slug, field, aad, sizeof(aad));
	if ((sealed = crypto_seal(key, json_string_value(v), aad)) == NULL) {
		add_error(errors, field, "could not be encrypted");
		return;
	}
	json_object_set_new(out, name, json_string(sealed));
	free(sealed);
}

/* Reject members outside allowed (NULL-terminated). */
static void
check_keys(const json_t *obj, const char *prefix, const char *const *allowed,
           json_t *errors)
{
	const char *k;
	json_t *v;
	char field[128];

	json_object_foreach ((json_t *)obj, k, v) {
		size_t i;
		for (i = 0; allowed[i] != NULL; i++)
			if (strcmp(k, allowed[i]) == 0)
				break;
		if (allowed[i] == NULL) {
			snprintf(field, sizeof(field), "%s%.60s", prefix, k);
			add_error(errors, field, "unknown member");
		}
	}
}

/* Optional boolean "enabled", default true. */
static void
merge_enabled(const json_t *in, const char *field, json_t *out, json_t *errors)
{
	json_t *v = json_object_get(in, "enabled");

	if (v != NULL && !json_is_boolean(v))
		add_error(errors, field, "must be true or false");
	json_object_set_new(out, "enabled",
	                    json_boolean(v == NULL || json_is_true(v)));
}

static void
merge_fields(const json_t *in, json_t *out, json_t *errors)
{
	static const char *const names[] = {"email", "opt_in", "mobile",
	                                    "sms_opt_in", NULL};
	json_t *f = json_object_get(in, "fields"), *copy;
	char field[64];

	if (f == NULL || json_is_null(f))
		return;
	if (!json_is_object(f)) {
		add_error(errors, "emarsys.fields", "must be an object");
		return;
	}
	check_keys(f, "emarsys.fields.", names, errors);
	copy = json_object();
	for (int i = 0; names[i] != NULL; i++) {
		json_t *v = json_object_get(f, names[i]);
		if (v == NULL)
			continue;
		snprintf(field, sizeof(field), "emarsys.fields.%s", names[i]);
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 2147483647)
			add_error(errors, field,
			          "must be a positive integer field id");
		else
			json_object_set(copy, names[i], v);
	}
	json_object_set_new(out, "fields", copy);
}

static json_t *
merge_emarsys(const json_t *in, const json_t *stored, const char *slug,
              const uint8_t key[CRYPTO_KEY_LEN], json_t *errors)
{
	static const char *const allowed[] = {"enabled",       "client_id",
	                                      "client_secret", "key_field",
	                                      "fields",        NULL};
	json_t *out = json_object();
	const char *id = jsonutil_str(in, "client_id"),
	           *kf = jsonutil_str(in, "key_field");

	check_keys(in, "emarsys.", allowed, errors);
	merge_enabled(in, "emarsys.enabled", out, errors);
	if (id == NULL || !token_ok(id, 200))
		add_error(errors, "emarsys.client_id",
		          "required: 1 to 200 printable characters");
	else
		json_object_set_new(out, "client_id", json_string(id));
	merge_secret(in, stored, "client_secret", "emarsys.client_secret", slug,
	             key, out, errors);
	if (json_object_get(in, "key_field") != NULL &&
	    (kf == NULL || (strcmp(kf, "email") && strcmp(kf, "mobile"))))
		add_error(errors, "emarsys.key_field",
		          "must be \"email\" or \"mobile\"");
	json_object_set_new(
	    out, "key_field",
	    json_string(kf && !strcmp(kf, "mobile") ? "mobile" : "email"));
	merge_fields(in, out, errors);
	return out;
}

static void
merge_actions(const json_t *in, json_t *out, json_t *errors)
{
	json_t *a = json_object_get(in, "actions"), *copy, *v;
	const char *k;
	char field[128];

	if (a == NULL || json_is_null(a))
		return;
	if (!json_is_object(a)) {
		add_error(errors, "yotpo.actions", "must be an object");
		return;
	}
	copy = json_object();
	json_object_foreach (a, k, v) {
		snprintf(field, sizeof(field), "yotpo.actions.%.60s", k);
		if (!brand_slug_valid(k) && !token_ok(k, 64))
			add_error(errors, field,
			          "campaign slug must be 1 to 64 printable "
			          "characters");
		else if (!json_is_string(v) ||
		         !token_ok(json_string_value(v), 128))
			add_error(errors, field,
			          "action name must be 1 to 128 printable "
			          "characters without spaces");
		else
			json_object_set(copy, k, v);
	}
	json_object_set_new(out, "actions", copy);
}

static json_t *
merge_yotpo(const json_t *in, const json_t *stored, const char *slug,
            const uint8_t key[CRYPTO_KEY_LEN], json_t *errors)
{
	static const char *const allowed[] = {"enabled", "guid",    "api_key",
	                                      "max_rps", "actions", NULL};
	json_t *out = json_object(), *rps = json_object_get(in, "max_rps");

	check_keys(in, "yotpo.", allowed, errors);
	merge_enabled(in, "yotpo.enabled", out, errors);
	merge_secret(in, stored, "guid", "yotpo.guid", slug, key, out, errors);
	merge_secret(in, stored, "api_key", "yotpo.api_key", slug, key, out,
	             errors);
	if (rps != NULL &&
	    (!json_is_integer(rps) || json_integer_value(rps) < 1 ||
	     json_integer_value(rps) > 100))
		add_error(errors, "yotpo.max_rps",
		          "must be an integer from 1 to 100");
	else if (rps != NULL)
		json_object_set(out, "max_rps", rps);
	merge_actions(in, out, errors);
	return out;
}

/* A destination section: validated when present, else absent. */
static void
merge_section(const json_t *in, const json_t *stored, const char *name,
              const char *slug, const uint8_t key[CRYPTO_KEY_LEN], json_t *out,
              json_t *errors)
{
	json_t *sec = json_object_get(in, name), *prev, *merged;

	if (sec == NULL || json_is_null(sec))
		return;
	if (!json_is_object(sec)) {
		add_error(errors, name, "must be an object");
		return;
	}
	prev = json_object_get(stored, name);
	merged = strcmp(name, "emarsys") == 0
	             ? merge_emarsys(sec, prev, slug, key, errors)
	             : merge_yotpo(sec, prev, slug, key, errors);
	json_object_set_new(out, name, merged);
}

/* See brand.h. */
enum gc_err
brand_doc_merge(const json_t *in, const json_t *stored, const char *slug,
                const uint8_t key[CRYPTO_KEY_LEN], json_t **sealed,
                json_t *errors)
{
	static const char *const allowed[] = {"slug", "name", "emarsys",
	                                      "yotpo", NULL};
	const char *name = jsonutil_str(in, "name"),
	           *s = jsonutil_str(in, "slug");
	json_t *out;

	*sealed = NULL;
	if (!json_is_object(in)) {
		add_error(errors, "", "the brand must be a JSON object");
		return GC_EINVAL;
	}
	if ((out = json_object()) == NULL)
		return GC_ENOMEM;
	check_keys(in, "", allowed, errors);
	if (json_object_get(in, "slug") != NULL &&
	    (s == NULL || strcmp(s, slug) != 0))
		add_error(errors, "slug", "must match the slug in the URL");
	json_object_set_new(out, "slug", json_string(slug));
	if (name == NULL || name[0] == '\0' || strlen(name) > 200)
		add_error(errors, "name", "required: 1 to 200 characters");
	else
		json_object_set_new(out, "name", json_string(name));
	merge_section(in, stored, "emarsys", slug, key, out, errors);
	merge_section(in, stored, "yotpo", slug, key, out, errors);
	if (json_array_size(errors) > 0) {
		json_decref(out);
		return GC_EINVAL;
	}
	*sealed = out;
	return GC_OK;
}

static void
mask_in_place(json_t *section, const char *name, const char *slug,
              const char *field, const uint8_t key[CRYPTO_KEY_LEN])
{
	char mask[64], *clear;

	if (json_object_get(section, name) == NULL)
		return;
	clear = secret_open(section, name, slug, field, key);
	if (clear == NULL) {
		json_object_set_new(section, name,
		                    json_string("(cannot decrypt: wrong "
		                                "secrets key?)"));
		return;
	}
	secret_mask(clear, mask, sizeof(mask));
	OPENSSL_cleanse(clear, strlen(clear));
	free(clear);
	json_object_set_new(section, name, json_string(mask));
}

/* See brand.h. */
json_t *
brand_doc_public(const json_t *sealed, const uint8_t key[CRYPTO_KEY_LEN])
{
	json_t *pub = json_deep_copy(sealed), *em, *yo;
	const char *slug = jsonutil_str(sealed, "slug");

	if (pub == NULL || slug == NULL) {
		json_decref(pub);
		return NULL;
	}
	if ((em = json_object_get(pub, "emarsys")) != NULL)
		mask_in_place(em, "client_secret", slug,
		              "emarsys.client_secret", key);
	if ((yo = json_object_get(pub, "yotpo")) != NULL) {
		mask_in_place(yo, "guid", slug, "yotpo.guid", key);
		mask_in_place(yo, "api_key", slug, "yotpo.api_key", key);
	}
	return pub;
}

static long
field_id(const json_t *em, const char *name, long def)
{
	json_t *v = json_object_get(json_object_get(em, "fields"), name);

	return json_is_integer(v) ? (long)json_integer_value(v) : def;
}

static enum gc_err
load_emarsys(struct brand *b, const json_t *em,
             const uint8_t key[CRYPTO_KEY_LEN])
{
	const char *kf = jsonutil_str(em, "key_field");

	b->has_emarsys = 1;
	b->emarsys_enabled = !json_is_false(json_object_get(em, "enabled"));
	b->em_client_id = strdup(
	    jsonutil_str(em, "client_id") ? jsonutil_str(em, "client_id") : "");
	b->em_client_secret = secret_open(em, "client_secret", b->slug,
	                                  "emarsys.client_secret", key);
	b->em_key_field =
	    kf && !strcmp(kf, "mobile") ? BRAND_KEY_MOBILE : BRAND_KEY_EMAIL;
	b->em_field_email = field_id(em, "email", 3);
	b->em_field_opt_in = field_id(em, "opt_in", 31);
	b->em_field_mobile = field_id(em, "mobile", 37);
	b->em_field_sms = field_id(em, "sms_opt_in", 0);
	if (b->em_client_id == NULL || b->em_client_secret == NULL)
		return GC_ECRYPTO;
	return GC_OK;
}

static enum gc_err
load_yotpo(struct brand *b, const json_t *yo, const uint8_t key[CRYPTO_KEY_LEN])
{
	json_t *rps = json_object_get(yo, "max_rps"),
	       *actions = json_object_get(yo, "actions");

	b->has_yotpo = 1;
	b->yotpo_enabled = !json_is_false(json_object_get(yo, "enabled"));
	b->yo_guid = secret_open(yo, "guid", b->slug, "yotpo.guid", key);
	b->yo_api_key =
	    secret_open(yo, "api_key", b->slug, "yotpo.api_key", key);
	b->yo_max_rps = json_is_integer(rps) ? (int)json_integer_value(rps) : 0;
	b->yo_actions =
	    json_is_object(actions) ? json_incref(actions) : json_object();
	if (b->yo_guid == NULL || b->yo_api_key == NULL)
		return GC_ECRYPTO;
	return GC_OK;
}

/* See brand.h. */
enum gc_err
brand_load(struct store *st, const uint8_t key[CRYPTO_KEY_LEN],
           const char *slug, struct brand *b)
{
	char *text = NULL;
	enum gc_err err;

	memset(b, 0, sizeof(*b));
	if ((err = store_brand_doc(st, slug, &text)) != GC_OK)
		return err;
	err = brand_from_doc(key, slug, text, b);
	free(text);
	return err;
}

/* See brand.h. */
enum gc_err
brand_from_doc(const uint8_t key[CRYPTO_KEY_LEN], const char *slug,
               const char *text, struct brand *b)
{
	json_t *doc = json_loads(text, 0, NULL), *sec;
	enum gc_err err = GC_OK;

	memset(b, 0, sizeof(*b));
	if (doc == NULL)
		return GC_ESTORE;
	b->slug = strdup(slug);
	b->name = strdup(jsonutil_str(doc, "name") ? jsonutil_str(doc, "name")
	                                           : slug);
	if (b->slug == NULL || b->name == NULL)
		err = GC_ENOMEM;
	if (err == GC_OK && (sec = json_object_get(doc, "emarsys")) != NULL)
		err = load_emarsys(b, sec, key);
	if (err == GC_OK && (sec = json_object_get(doc, "yotpo")) != NULL)
		err = load_yotpo(b, sec, key);
	json_decref(doc);
	if (err != GC_OK)
		brand_fini(b);
	return err;
}

static void
free_secret(char *s)
{
	if (s != NULL) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

/* See brand.h. */
void
brand_fini(struct brand *b)
{
	free(b->slug);
	free(b->name);
	free(b->em_client_id);
	free_secret(b->em_client_secret);
	free_secret(b->yo_guid);
	free_secret(b->yo_api_key);
	json_decref(b->yo_actions);
	memset(b, 0, sizeof(*b));
}

/* See brand.h. */
void
brand_action_name(const struct brand *b, const char *campaign_slug, char *out,
                  size_t n)
{
	const char *mapped = jsonutil_str(b->yo_actions, campaign_slug);

	if (mapped != NULL)
		snprintf(out, n, "%s", mapped);
	else
		snprintf(out, n, "gocertify-%s", campaign_slug);
}
