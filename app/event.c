/*
 * Inbound Gocertify events: the JSON body of POST /v1/events is parsed,
 * checked field by field and normalised into a struct gc_event (DESIGN.md,
 * Inbound).  The first problem found is reported with the field name and
 * a short reason; at most EV_CLIP bytes of the sender's text are quoted
 * back, and never an email address or a mobile number.
 *
 * Strings come from jansson, which already rejects invalid UTF-8 and
 * "\u0000", so every string seen here is valid, NUL-free UTF-8.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "email.h"
#include "event.h"
#include "payload.h"
#include "phone.h"

#define EV_SLUG_MAX  64   /* brand_slug, campaign_slug */
#define EV_GROUP_MAX 100  /* pending_group_* */
#define EV_TOKEN_MAX 128  /* token */
#define EV_TEXT_MAX  255  /* subid, campaign_title */
#define EV_URL_MAX   2048 /* campaign_url, iframe_parent_url */
#define EV_CLIP      60   /* bytes of sender text quoted in a problem */
#define EV_TIME_BUF  64
/* 9999-12-31T23:59:59Z: the last instant with a four-digit year. */
#define EV_TIME_MAX 253402300799LL

#define RFC3339_SYNTAX "not an RFC 3339 date-time like 2026-11-21T10:15:00Z"

const char *const ev_kind_names[] = {
    [EV_CONSENT_INTENT] = "consent_intent",
    [EV_OFFER_CLAIMED] = "offer_claimed",
};
_Static_assert(sizeof(ev_kind_names) / sizeof(ev_kind_names[0]) == EV__MAX,
               "ev_kind_names out of step with enum ev_kind");

/* ISO 3166-1 alpha-2: the 249 officially assigned codes, in order. */
static const char iso3166[] =
    "ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBV"
    "BWBYBZCACCCDCFCGCHCICKCLCMCNCOCRCUCVCWCXCYCZDEDJDKDMDODZECEEEGEHERES"
    "ETFIFJFKFMFOFRGAGBGDGEGFGGGHGIGLGMGNGPGQGRGSGTGUGWGYHKHMHNHRHTHUIDIE"
    "ILIMINIOIQIRISITJEJMJOJPKEKGKHKIKMKNKPKRKWKYKZLALBLCLILKLRLSLTLULVLY"
    "MAMCMDMEMFMGMHMKMLMMMNMOMPMQMRMSMTMUMVMWMXMYMZNANCNENFNGNINLNONPNRNU"
    "NZOMPAPEPFPGPHPKPLPMPNPRPSPTPWPYQARERORSRURWSASBSCSDSESGSHSISJSKSLSM"
    "SNSOSRSSSTSVSXSYSZTCTDTFTGTHTJTKTLTMTNTOTRTTTVTWTZUAUGUMUSUYUZVAVCVE"
    "VGVIVNVUWFWSYEYTZAZMZW";
_Static_assert(sizeof(iso3166) == 2 * 249 + 1, "ISO 3166-1 table");

/* One parse: the object, where the result goes, where problems go. */
struct ev_parse {
	const json_t *obj;
	struct gc_event *ev;
	struct ev_problem *prob;
	time_t now;
};

/* A string member: its name, slot and how it is checked and normalised. */
struct ev_field {
	const char *name;
	size_t off; /* offsetof(struct gc_event, <char *member>) */
	int required;
	enum gc_err (*norm)(struct ev_parse *p, const char *name,
	                    const char *in, char **out);
};

static int
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static int
is_lower_alnum(int c)
{
	return (c >= 'a' && c <= 'z') || is_digit(c);
}

static int
is_alpha(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* At most EV_CLIP bytes of s, cut on a character boundary, "..." if cut. */
static const char *
clip(const char *s, char out[EV_CLIP + 4])
{
	size_t n = strlen(s);

	if (n <= EV_CLIP)
		return s;
	n = EV_CLIP;
	while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	memcpy(out, s, n);
	memcpy(out + n, "...", 4);
	return out;
}

/* Fill the problem: field, and detail "<field>: <reason>" when prefixed. */
static enum gc_err
vbad(struct ev_parse *p, const char *field, int prefixed, const char *fmt,
     va_list ap)
{
	struct ev_problem *prob = p->prob;
	int n = 0;

	snprintf(prob->field, sizeof(prob->field), "%s", field);
	if (prefixed && *field != '\0')
		n = snprintf(prob->detail, sizeof(prob->detail), "%s: ", field);
	if (n < 0 || (size_t)n >= sizeof(prob->detail))
		n = 0;
	vsnprintf(prob->detail + n, sizeof(prob->detail) - (size_t)n, fmt, ap);
	return GC_EINVAL;
}

/* Report a problem with field; the detail reads "<field>: <reason>". */
static enum gc_err __attribute__((format(printf, 3, 4)))
bad(struct ev_parse *p, const char *field, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vbad(p, field, 1, fmt, ap);
	va_end(ap);
	return GC_EINVAL;
}

/* Report a problem with field whose detail names it in its own words. */
static enum gc_err __attribute__((format(printf, 3, 4)))
bad_raw(struct ev_parse *p, const char *field, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vbad(p, field, 0, fmt, ap);
	va_end(ap);
	return GC_EINVAL;
}

/* *out = an owned copy of s. */
static enum gc_err
ev_dup(const char *s, char **out)
{
	*out = strdup(s);
	return *out != NULL ? GC_OK : GC_ENOMEM;
}

/* The char * member of ev that f describes. */
static char **
ev_slot(struct gc_event *ev, const struct ev_field *f)
{
	return (char **)(void *)((char *)ev + f->off);
}

/* Its value, read-only. */
static const char *
ev_get(const struct gc_event *ev, const struct ev_field *f)
{
	return *(char *const *)(const void *)((const char *)ev + f->off);
}

/*
 * [a-z0-9][a-z0-9<extra>]{0,63}: returns 1 when s matches.
 */
static int
slug_ok(const char *s, const char *extra)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		if (i == EV_SLUG_MAX)
			return 0;
		if (is_lower_alnum((unsigned char)s[i]))
			continue;
		if (i == 0 || strchr(extra, s[i]) == NULL)
			return 0;
	}
	return i > 0;
}

/* 1 when s holds a C0 or C1 control character or DEL. */
static int
has_control(const char *s)
{
	const unsigned char *u = (const unsigned char *)s;

	for (; *u != '\0'; u++) {
		if (*u < 0x20 || *u == 0x7f)
			return 1;
		/* U+0080..U+009F are encoded C2 80..C2 9F. */
		if (*u == 0xc2 && u[1] >= 0x80 && u[1] <= 0x9f)
			return 1;
	}
	return 0;
}

/* 1 when cc (two upper-case letters) is an assigned ISO 3166-1 code. */
static int
country_known(const char *cc)
{
	for (const char *t = iso3166; *t != '\0'; t += 2)
		if (t[0] == cc[0] && t[1] == cc[1])
			return 1;
	return 0;
}

static enum gc_err
norm_brand_slug(struct ev_parse *p, const char *name, const char *in,
                char **out)
{
	char q[EV_CLIP + 4];

	if (!slug_ok(in, "-"))
		return bad(p, name,
		           "\"%s\" must be 1 to 64 lower-case letters, digits "
		           "or '-', starting with a letter or digit",
		           clip(in, q));
	return ev_dup(in, out);
}

/* campaign_slug becomes part of the Yotpo action "gocertify-<slug>". */
static enum gc_err
norm_campaign_slug(struct ev_parse *p, const char *name, const char *in,
                   char **out)
{
	char q[EV_CLIP + 4];

	if (!slug_ok(in, "-_"))
		return bad(p, name,
		           "\"%s\" must be 1 to 64 lower-case letters, digits, "
		           "'-' or '_', starting with a letter or digit",
		           clip(in, q));
	return ev_dup(in, out);
}

/* The address is never quoted back: only the helper's reason. */
static enum gc_err
norm_email(struct ev_parse *p, const char *name, const char *in, char **out)
{
	char why[120] = "";
	enum gc_err err;

	err = email_normalize(in, out, why, sizeof(why));
	if (err == GC_EINVAL)
		return bad(p, name, "%s", *why ? why : "not a valid address");
	return err;
}

/* The number is never quoted back: only the helper's reason. */
static enum gc_err
norm_mobile(struct ev_parse *p, const char *name, const char *in, char **out)
{
	char e164[PHONE_E164_MAX], why[120] = "";
	enum gc_err err;

	err = phone_normalize(in, e164, why, sizeof(why));
	if (err == GC_EINVAL)
		return bad(p, name, "%s", *why ? why : "not a valid number");
	if (err != GC_OK)
		return err;
	return ev_dup(e164, out);
}

static enum gc_err
norm_type(struct ev_parse *p, const char *name, const char *in, char **out)
{
	char q[EV_CLIP + 4];

	if (strcmp(in, "Code") != 0 && strcmp(in, "Deal") != 0)
		return bad(p, name, "\"%s\" must be \"Code\" or \"Deal\"",
		           clip(in, q));
	return ev_dup(in, out);
}

/*
 * A group name must also make a field name: Emarsys gets
 * gocertify_<slug>_verified_at for it (payload_verified_field).
 */
static enum gc_err
norm_group(struct ev_parse *p, const char *name, const char *in, char **out)
{
	char slug[PAYLOAD_SLUG_MAX], q[EV_CLIP + 4];
	enum gc_err err;

	if (strlen(in) > EV_GROUP_MAX)
		return bad(p, name, "is longer than %d bytes", EV_GROUP_MAX);
	if (has_control(in))
		return bad(p, name, "must not contain control characters");
	err = payload_group_slug(in, slug);
	if (err == GC_EINVAL)
		return bad(p, name,
		           "\"%s\" has no ASCII letters or digits for a field "
		           "name",
		           clip(in, q));
	if (err != GC_OK)
		return bad(p, name, "\"%s\" is too long for a field name",
		           clip(in, q));
	return ev_dup(in, out);
}

static enum gc_err
norm_token(struct ev_parse *p, const char *name, const char *in, char **out)
{
	size_t i;

	for (i = 0; in[i] != '\0'; i++)
		if (i == EV_TOKEN_MAX || in[i] < 0x21 || in[i] > 0x7e)
			return bad(p, name,
			           "must be 1 to %d printable ASCII characters "
			           "without spaces",
			           EV_TOKEN_MAX);
	return ev_dup(in, out);
}

/* subid and campaign_title: free text, limited in bytes. */
static enum gc_err
norm_text(struct ev_parse *p, const char *name, const char *in, char **out)
{
	if (strlen(in) > EV_TEXT_MAX)
		return bad(p, name, "is longer than %d bytes", EV_TEXT_MAX);
	return ev_dup(in, out);
}

/* Two letters, any case, an assigned code; stored upper-case. */
static enum gc_err
norm_country(struct ev_parse *p, const char *name, const char *in, char **out)
{
	char q[EV_CLIP + 4], cc[3];

	if (strlen(in) != 2 || !is_alpha((unsigned char)in[0]) ||
	    !is_alpha((unsigned char)in[1]))
		return bad(p, name,
		           "\"%s\" must be an ISO 3166-1 alpha-2 code (two "
		           "letters)",
		           clip(in, q));
	cc[0] = (char)(in[0] & ~0x20);
	cc[1] = (char)(in[1] & ~0x20);
	cc[2] = '\0';
	if (!country_known(cc))
		return bad(p, name,
		           "\"%s\" is not an assigned ISO 3166-1 alpha-2 code",
		           cc);
	return ev_dup(cc, out);
}

/*
 * An absolute http:// or https:// URL with a host, at most EV_URL_MAX
 * bytes, without spaces or control characters.  NULL when acceptable,
 * else the reason.
 */
static const char *
url_problem(const char *s)
{
	size_t skip;

	if (strlen(s) > EV_URL_MAX)
		return "is longer than 2048 bytes";
	for (const unsigned char *u = (const unsigned char *)s; *u; u++)
		if (*u <= 0x20 || *u == 0x7f)
			return "must not contain spaces or control characters";
	if (strncasecmp(s, "https://", 8) == 0)
		skip = 8;
	else if (strncasecmp(s, "http://", 7) == 0)
		skip = 7;
	else
		return "must be an absolute http:// or https:// URL";
	if (strchr("/?#", s[skip]) != NULL) /* also matches the NUL */
		return "has no host";
	return NULL;
}

static enum gc_err
norm_url(struct ev_parse *p, const char *name, const char *in, char **out)
{
	const char *why = url_problem(in);
	char q[EV_CLIP + 4];

	if (why != NULL)
		return bad(p, name, "\"%s\" %s", clip(in, q), why);
	return ev_dup(in, out);
}

/* The string members, in the order they are checked and stored. */
static const struct ev_field ev_fields[] = {
    {"brand_slug", offsetof(struct gc_event, brand_slug), 1, norm_brand_slug},
    {"email", offsetof(struct gc_event, email), 0, norm_email},
    {"mobile", offsetof(struct gc_event, mobile), 0, norm_mobile},
    {"campaign_slug", offsetof(struct gc_event, campaign_slug), 0,
     norm_campaign_slug},
    {"type", offsetof(struct gc_event, type), 1, norm_type},
    {"pending_group_type", offsetof(struct gc_event, pending_group_type), 0,
     norm_group},
    {"pending_group_parent", offsetof(struct gc_event, pending_group_parent), 0,
     norm_group},
    {"pending_group_child", offsetof(struct gc_event, pending_group_child), 0,
     norm_group},
    {"token", offsetof(struct gc_event, token), 1, norm_token},
    {"subid", offsetof(struct gc_event, subid), 0, norm_text},
    {"brand_country", offsetof(struct gc_event, brand_country), 1,
     norm_country},
    {"user_country", offsetof(struct gc_event, user_country), 0, norm_country},
    {"campaign_title", offsetof(struct gc_event, campaign_title), 1, norm_text},
    {"campaign_url", offsetof(struct gc_event, campaign_url), 1, norm_url},
    {"iframe_parent_url", offsetof(struct gc_event, iframe_parent_url), 0,
     norm_url},
};
#define EV_NFIELDS (sizeof(ev_fields) / sizeof(ev_fields[0]))

/*
 * The string member name: *out is borrowed from the JSON, or NULL when
 * the member is absent, null or "" (all three mean "not given").  A
 * required member must be a non-empty string.
 */
static enum gc_err
get_str(struct ev_parse *p, const char *name, int required, const char **out)
{
	json_t *v = json_object_get(p->obj, name);

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return required ? bad(p, name, "is required") : GC_OK;
	if (!json_is_string(v))
		return bad(p, name, "must be a string");
	if (json_string_length(v) == 0)
		return required ? bad(p, name, "must not be empty") : GC_OK;
	*out = json_string_value(v);
	return GC_OK;
}

/* An optional boolean: EV_OPT_UNSET when absent or null. */
static enum gc_err
get_opt(struct ev_parse *p, const char *name, enum ev_opt *out)
{
	json_t *v = json_object_get(p->obj, name);

	*out = EV_OPT_UNSET;
	if (v == NULL || json_is_null(v))
		return GC_OK;
	if (!json_is_boolean(v))
		return bad(p, name, "must be true or false");
	*out = json_is_true(v) ? EV_OPT_YES : EV_OPT_NO;
	return GC_OK;
}

static enum gc_err
parse_kind(struct ev_parse *p)
{
	char q[EV_CLIP + 4];
	const char *s;
	enum gc_err err;

	if ((err = get_str(p, "event", 1, &s)) != GC_OK)
		return err;
	for (int k = 0; k < EV__MAX; k++) {
		if (strcmp(s, ev_kind_names[k]) == 0) {
			p->ev->kind = (enum ev_kind)k;
			return GC_OK;
		}
	}
	return bad(p, "event",
	           "\"%s\" must be \"consent_intent\" or \"offer_claimed\"",
	           clip(s, q));
}

/* Every string member, checked and normalised (event_parse). */
static enum gc_err
parse_strings(struct ev_parse *p)
{
	const struct ev_field *f;
	const char *s;
	enum gc_err err;

	for (f = ev_fields; f < ev_fields + EV_NFIELDS; f++) {
		err = get_str(p, f->name, f->required, &s);
		if (err == GC_OK && s != NULL)
			err = f->norm(p, f->name, s, ev_slot(p->ev, f));
		if (err != GC_OK)
			return err;
	}
	return GC_OK;
}

/* Every string member, copied as stored (event_from_json). */
static enum gc_err
load_strings(struct ev_parse *p)
{
	const struct ev_field *f;
	const char *s;
	enum gc_err err;

	for (f = ev_fields; f < ev_fields + EV_NFIELDS; f++) {
		err = get_str(p, f->name, f->required, &s);
		if (err == GC_OK && s != NULL)
			err = ev_dup(s, ev_slot(p->ev, f));
		if (err != GC_OK)
			return err;
	}
	return GC_OK;
}

static enum gc_err
parse_contact(struct ev_parse *p)
{
	if (p->ev->email == NULL && p->ev->mobile == NULL)
		return bad_raw(p, "email",
		               "one of email or mobile is required");
	return GC_OK;
}

/*
 * Opt-in resolution (README, "Consent"):
 * - explicit true is YES, explicit false is NO; a NO is recorded but never
 *   sent (the Emarsys client only acts on YES, gcrelay never opts out);
 * - absent on consent_intent is YES: agreeing to hear from the brand is
 *   what that event records;
 * - absent on offer_claimed is UNSET: claiming an offer is not consent;
 * - without its channel (email_opt_in without email, sms_opt_in without
 *   mobile) the opt-in is UNSET whatever was sent: there is nothing to
 *   opt in.
 */
static enum ev_opt
opt_resolve(enum ev_opt given, enum ev_kind kind, const char *channel)
{
	if (channel == NULL)
		return EV_OPT_UNSET;
	if (given != EV_OPT_UNSET)
		return given;
	return kind == EV_CONSENT_INTENT ? EV_OPT_YES : EV_OPT_UNSET;
}

static enum gc_err
parse_opt_ins(struct ev_parse *p)
{
	struct gc_event *ev = p->ev;
	enum ev_opt email, sms;
	enum gc_err err;

	if ((err = get_opt(p, "email_opt_in", &email)) != GC_OK)
		return err;
	if ((err = get_opt(p, "sms_opt_in", &sms)) != GC_OK)
		return err;
	ev->email_opt_in = opt_resolve(email, ev->kind, ev->email);
	ev->sms_opt_in = opt_resolve(sms, ev->kind, ev->mobile);
	return GC_OK;
}

/* Stored opt-ins are already resolved: absent is UNSET. */
static enum gc_err
load_opt_ins(struct ev_parse *p)
{
	enum gc_err err;

	if ((err = get_opt(p, "email_opt_in", &p->ev->email_opt_in)) != GC_OK)
		return err;
	return get_opt(p, "sms_opt_in", &p->ev->sms_opt_in);
}

/* A JSON integer >= 1; "1234" and 1234.0 are not integers. */
static enum gc_err
parse_campaign_id(struct ev_parse *p)
{
	json_t *v = json_object_get(p->obj, "campaign_id");

	if (v == NULL || json_is_null(v))
		return bad(p, "campaign_id", "is required");
	if (!json_is_integer(v))
		return bad(p, "campaign_id", "must be an integer");
	if (json_integer_value(v) < 1)
		return bad(p, "campaign_id", "must be at least 1");
	p->ev->campaign_id = (long long)json_integer_value(v);
	return GC_OK;
}

/* Value of the n decimal digits at s, or -1 (never reads past a NUL). */
static int
digits(const char *s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!is_digit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* A broken-down RFC 3339 date-time; off is seconds east of UTC. */
struct civil {
	int y, mo, d, h, mi, s, off;
};

/* "Z", "z" or "+HH:MM" / "-HH:MM" ending the string.  NULL when valid. */
static const char *
rfc3339_offset(const char *s, int *off)
{
	int h, m;

	if ((*s == 'Z' || *s == 'z') && s[1] == '\0') {
		*off = 0;
		return NULL;
	}
	if ((*s != '+' && *s != '-') || (h = digits(s + 1, 2)) < 0 ||
	    s[3] != ':' || (m = digits(s + 4, 2)) < 0 || s[6] != '\0')
		return RFC3339_SYNTAX;
	if (h > 23 || m > 59)
		return "offset out of range";
	*off = (*s == '-' ? -1 : 1) * (h * 3600 + m * 60);
	return NULL;
}

/*
 * Split "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" into c; fractional
 * seconds are dropped.  NULL when the syntax is right, else the reason.
 * Each test reads a byte only once the bytes before it are known not to
 * be the NUL.
 */
static const char *
rfc3339_fields(const char *s, struct civil *c)
{
	if ((c->y = digits(s, 4)) < 0 || s[4] != '-' ||
	    (c->mo = digits(s + 5, 2)) < 0 || s[7] != '-' ||
	    (c->d = digits(s + 8, 2)) < 0 || (s[10] != 'T' && s[10] != 't') ||
	    (c->h = digits(s + 11, 2)) < 0 || s[13] != ':' ||
	    (c->mi = digits(s + 14, 2)) < 0 || s[16] != ':' ||
	    (c->s = digits(s + 17, 2)) < 0)
		return RFC3339_SYNTAX;
	s += 19;
	if (*s == '.') {
		if (!is_digit((unsigned char)s[1]))
			return RFC3339_SYNTAX;
		for (s++; is_digit((unsigned char)*s); s++)
			continue;
	}
	return rfc3339_offset(s, &c->off);
}

static int
days_in_month(int y, int m)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30,
	                             31, 31, 30, 31, 30, 31};
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return days[m - 1] + (m == 2 && leap);
}

/* NULL when every field of c is in range, else the reason. */
static const char *
civil_check(const struct civil *c)
{
	if (c->mo < 1 || c->mo > 12)
		return "month out of range";
	if (c->d < 1 || c->d > days_in_month(c->y, c->mo))
		return "day out of range for the month";
	if (c->h > 23)
		return "hour out of range";
	if (c->mi > 59)
		return "minute out of range";
	if (c->s > 60)
		return "second out of range";
	return NULL;
}

/*
 * Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil), independent of TZ and of the C library.
 */
static long long
days_from_civil(long long y, int m, int d)
{
	long long era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/*
 * Parse an RFC 3339 date-time into UTC seconds.  A leap second (:60)
 * counts as :59, POSIX time having none.  GC_EINVAL with the reason in
 * *why when the text is malformed, out of range, or outside 1970..9999
 * once in UTC.
 */
static enum gc_err
rfc3339_parse(const char *s, time_t *t, const char **why)
{
	struct civil c;
	long long secs;

	if ((*why = rfc3339_fields(s, &c)) != NULL ||
	    (*why = civil_check(&c)) != NULL)
		return GC_EINVAL;
	secs = days_from_civil(c.y, c.mo, c.d) * 86400 + c.h * 3600 +
	       c.mi * 60 + (c.s == 60 ? 59 : c.s) - c.off;
	if (secs < 0 || secs > EV_TIME_MAX) {
		*why = "outside 1970-01-01 to 9999-12-31 in UTC";
		return GC_EINVAL;
	}
	*t = (time_t)secs;
	return GC_OK;
}

/* occurred_at, or the receive time when absent (required when stored). */
static enum gc_err
parse_time(struct ev_parse *p, int required)
{
	char q[EV_CLIP + 4];
	const char *s, *why;
	enum gc_err err;

	if ((err = get_str(p, "occurred_at", required, &s)) != GC_OK)
		return err;
	if (s == NULL) {
		p->ev->occurred_at = p->now;
		return GC_OK;
	}
	if (rfc3339_parse(s, &p->ev->occurred_at, &why) != GC_OK)
		return bad(p, "occurred_at", "%s: \"%s\"", why, clip(s, q));
	return GC_OK;
}

static enum gc_err
parse_occurred(struct ev_parse *p)
{
	return parse_time(p, 0);
}

static enum gc_err
load_occurred(struct ev_parse *p)
{
	return parse_time(p, 1);
}

/* user_country defaults to the country of the mobile's calling code. */
static enum gc_err
derive_user_country(struct ev_parse *p)
{
	struct gc_event *ev = p->ev;
	const char *cc;

	if (ev->user_country != NULL || ev->mobile == NULL)
		return GC_OK;
	cc = phone_country(ev->mobile);
	/* Shared codes such as +800 have no country: leave it unset. */
	if (cc == NULL || strlen(cc) != 2 || !country_known(cc))
		return GC_OK;
	return ev_dup(cc, &ev->user_country);
}

/* event_parse: the checks in the order problems are reported. */
static enum gc_err (*const parse_steps[])(struct ev_parse *) = {
    parse_kind,        parse_strings,  parse_contact,       parse_opt_ins,
    parse_campaign_id, parse_occurred, derive_user_country,
};

/* event_from_json: the stored form, taken as it is. */
static enum gc_err (*const load_steps[])(struct ev_parse *) = {
    parse_kind,   load_strings,      parse_contact,
    load_opt_ins, parse_campaign_id, load_occurred,
};

/* Run steps in order over p; the event is emptied on failure. */
static enum gc_err
run_steps(struct ev_parse *p, enum gc_err (*const *steps)(struct ev_parse *),
          size_t n)
{
	enum gc_err err = GC_OK;

	for (size_t i = 0; i < n && err == GC_OK; i++)
		err = steps[i](p);
	if (err != GC_OK)
		event_fini(p->ev);
	return err;
}

/*
 * A duplicate key: jansson's token is the key as written, in quotes.
 * Name it as the field when it is short and looks like a field name
 * (lower-case letters, digits, '_'): any other key, an email address
 * say, is not quoted back.
 */
static enum gc_err
duplicate_key(struct ev_parse *p, const json_error_t *jerr, const char *near)
{
	size_t n = strlen(near);
	char key[sizeof(p->prob->field)];

	if (n >= 4 && n - 4 < sizeof(key) && near[0] == '\'' &&
	    near[1] == '"' && near[n - 2] == '"' && near[n - 1] == '\'' &&
	    strspn(near + 2, "abcdefghijklmnopqrstuvwxyz0123456789_") ==
	        n - 4) {
		memcpy(key, near + 2, n - 4);
		key[n - 4] = '\0';
		return bad(p, key, "duplicate key at line %d, column %d",
		           jerr->line, jerr->column);
	}
	return bad(p, "", "duplicate key at line %d, column %d", jerr->line,
	           jerr->column);
}

/*
 * Whether jansson's "near" token ('<text>', in single quotes) may be quoted
 * back.  A string token may be (the start of) an email address or a mobile
 * number, and so may a run of digits: those are left out, the line and
 * column say where the problem is.
 */
static int
near_quotable(const char *near)
{
	int ndigits = 0;

	if (*near == '\0' || near[1] == '"' || strchr(near, '@') != NULL)
		return 0;
	for (; *near != '\0'; near++)
		ndigits += is_digit((unsigned char)*near);
	return ndigits <= 4;
}

/* Turn a jansson error into a problem; user text is clipped. */
static enum gc_err
json_problem(struct ev_parse *p, const json_error_t *jerr)
{
	char msg[JSON_ERROR_TEXT_LENGTH], q[EV_CLIP + 4], *cut;
	const char *near = "";

	if (json_error_code(jerr) == json_error_out_of_memory)
		return GC_ENOMEM;
	snprintf(msg, sizeof(msg), "%s", jerr->text);
	if ((cut = strstr(msg, " near ")) != NULL) {
		*cut = '\0';
		near = cut + 6;
	}
	if (json_error_code(jerr) == json_error_duplicate_key)
		return duplicate_key(p, jerr, near);
	if (!near_quotable(near))
		near = "";
	return bad(p, "", "malformed JSON at line %d, column %d: %s%s%s",
	           jerr->line, jerr->column, msg, *near ? " near " : "",
	           clip(near, q));
}

/* Decode body into a JSON object (*out, new reference). */
static enum gc_err
load_object(struct ev_parse *p, const char *body, size_t len, json_t **out)
{
	json_error_t jerr;
	json_t *j;

	*out = NULL;
	if (len == 0)
		return bad(p, "", "body is empty");
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
	               &jerr);
	if (j == NULL)
		return json_problem(p, &jerr);
	if (!json_is_object(j)) {
		json_decref(j);
		return bad(p, "", "body is not a JSON object");
	}
	*out = j;
	return GC_OK;
}

/*
 * See event.h.  Checks run in a fixed order and the first problem is
 * reported.  On failure ev is empty (event_fini) and, for GC_EINVAL, prob
 * names the field ("" for the body as a whole).  prob is cleared on
 * success.
 */
enum gc_err
event_parse(const char *body, size_t len, time_t now, struct gc_event *ev,
            struct ev_problem *prob)
{
	struct ev_parse p = {NULL, ev, prob, now};
	json_t *obj;
	enum gc_err err;

	memset(ev, 0, sizeof(*ev));
	memset(prob, 0, sizeof(*prob));
	if ((err = load_object(&p, body, len, &obj)) != GC_OK)
		return err;
	p.obj = obj;
	err = run_steps(&p, parse_steps,
	                sizeof(parse_steps) / sizeof(parse_steps[0]));
	json_decref(obj);
	return err;
}

/* See event.h.  Safe on an empty (zeroed) event and to call twice. */
void
event_fini(struct gc_event *ev)
{
	for (size_t i = 0; i < EV_NFIELDS; i++)
		free(*ev_slot(ev, &ev_fields[i]));
	memset(ev, 0, sizeof(*ev));
}

/* t as "YYYY-MM-DDTHH:MM:SSZ"; "" when it cannot be represented. */
static void
time_format(time_t t, char out[EV_TIME_BUF])
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(out, EV_TIME_BUF, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		out[0] = '\0';
}

/* Set key to an opt-in: true, false, or nothing for UNSET.  0 on success. */
static int
put_opt(json_t *o, const char *key, enum ev_opt v)
{
	if (v == EV_OPT_UNSET)
		return 0;
	return json_object_set_new(o, key, json_boolean(v == EV_OPT_YES));
}

/*
 * See event.h.  Members: event (the kind's name), the string members
 * that are set, email_opt_in and sms_opt_in when not UNSET, campaign_id,
 * occurred_at (RFC 3339 UTC).  Caller owns the reference (json_decref).
 */
json_t *
event_to_json(const struct gc_event *ev)
{
	char when[EV_TIME_BUF];
	json_t *o;
	int fail;

	if ((unsigned)ev->kind >= EV__MAX || (o = json_object()) == NULL)
		return NULL;
	fail = json_object_set_new(o, "event",
	                           json_string(ev_kind_names[ev->kind]));
	for (size_t i = 0; i < EV_NFIELDS; i++) {
		const char *s = ev_get(ev, &ev_fields[i]);
		if (s != NULL)
			fail |= json_object_set_new(o, ev_fields[i].name,
			                            json_string(s));
	}
	fail |= put_opt(o, "email_opt_in", ev->email_opt_in);
	fail |= put_opt(o, "sms_opt_in", ev->sms_opt_in);
	fail |= json_object_set_new(o, "campaign_id",
	                            json_integer(ev->campaign_id));
	time_format(ev->occurred_at, when);
	fail |= json_object_set_new(o, "occurred_at", json_string(when));
	if (fail != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/*
 * See event.h.  The stored form is trusted to be normalised already: the
 * structure is checked (kinds, types, required members) but values are
 * not re-validated, so a tightened rule cannot strand stored events.
 * GC_ENOMEM on allocation failure; ev is empty on any failure.
 */
enum gc_err
event_from_json(const json_t *obj, struct gc_event *ev)
{
	struct ev_problem prob;
	struct ev_parse p = {obj, ev, &prob, 0};

	memset(ev, 0, sizeof(*ev));
	if (!json_is_object(obj))
		return GC_EINVAL;
	return run_steps(&p, load_steps,
	                 sizeof(load_steps) / sizeof(load_steps[0]));
}
