/*
 * Event parsing, validation and normalisation (event.c).  Each row is a
 * body, made by patching one of two valid base events (or given raw), and
 * the expected outcome: the error, the field and a substring of the
 * detail for a rejection; for an acceptance, members the normalised event
 * (event_to_json) must have, null meaning "must be absent".  Every
 * accepted row is also round-tripped through event_from_json.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event.h"

#define NOW 1800000000 /* 2027-01-15T08:00:00Z */

/* Every field, user_country left to the mobile. */
static const char offer_base[] =
    "{\"event\":\"offer_claimed\",\"brand_slug\":\"acme\","
    "\"email\":\" Jane.Doe@Example.COM \",\"mobile\":\"+44 7700 900123\","
    "\"campaign_slug\":\"key-workers\",\"type\":\"Code\","
    "\"pending_group_type\":\"Occupation\","
    "\"pending_group_parent\":\"Key Worker\","
    "\"pending_group_child\":\"NHS Worker\",\"token\":\"ABCD1234\","
    "\"subid\":\"user_1\",\"brand_country\":\"gb\",\"campaign_id\":1234,"
    "\"campaign_title\":\"20% OFF for Key Workers\","
    "\"campaign_url\":\"https://secure.gocertify.me/at/amazon\","
    "\"iframe_parent_url\":\"https://www.customer-website/keyworkers\","
    "\"occurred_at\":\"2026-11-21T10:15:00Z\"}";

/* Only what a consent needs. */
static const char consent_base[] =
    "{\"event\":\"consent_intent\",\"brand_slug\":\"acme\","
    "\"email\":\"jane@example.com\",\"mobile\":\"+447700900123\","
    "\"type\":\"Deal\",\"token\":\"T1\",\"brand_country\":\"GB\","
    "\"campaign_id\":7,\"campaign_title\":\"Students\","
    "\"campaign_url\":\"https://secure.gocertify.me/at/acme\"}";

enum base { OFFER, CONSENT, RAW };

struct row {
	int line;
	enum base base;
	/* Members to set; a key "-name" removes name.  RAW: the body. */
	const char *patch;
	enum gc_err want;
	const char *field;  /* rejection: the field named */
	const char *detail; /* rejection: a substring of the detail */
	const char *expect; /* acceptance: members of event_to_json */
};

#define BAD(b, patch, field, detail)                                           \
	{                                                                      \
		__LINE__, b, patch, GC_EINVAL, field, detail, NULL             \
	}
#define GOOD(b, patch, expect)                                                 \
	{                                                                      \
		__LINE__, b, patch, GC_OK, "", "", expect                      \
	}

#define X10   "xxxxxxxxxx"
#define X50   X10 X10 X10 X10 X10
#define X100  X50 X50
#define X1000 X100 X100 X100 X100 X100 X100 X100 X100 X100 X100
#define A10   "aaaaaaaaaa"
#define A64   A10 A10 A10 A10 A10 A10 "aaaa"
#define E10   "éééééééééé"

static const struct row rows[] = {
    /* The bases themselves, fully normalised. */
    GOOD(OFFER, "{}",
         "{\"event\":\"offer_claimed\",\"brand_slug\":\"acme\","
         "\"email\":\"jane.doe@example.com\",\"mobile\":\"+447700900123\","
         "\"campaign_slug\":\"key-workers\",\"type\":\"Code\","
         "\"pending_group_type\":\"Occupation\","
         "\"pending_group_parent\":\"Key Worker\","
         "\"pending_group_child\":\"NHS Worker\",\"token\":\"ABCD1234\","
         "\"subid\":\"user_1\",\"brand_country\":\"GB\","
         "\"user_country\":\"GB\",\"campaign_id\":1234,"
         "\"campaign_title\":\"20% OFF for Key Workers\","
         "\"campaign_url\":\"https://secure.gocertify.me/at/amazon\","
         "\"iframe_parent_url\":"
         "\"https://www.customer-website/keyworkers\","
         "\"email_opt_in\":null,\"sms_opt_in\":null,"
         "\"occurred_at\":\"2026-11-21T10:15:00Z\"}"),
    GOOD(CONSENT, "{}",
         "{\"event\":\"consent_intent\",\"email_opt_in\":true,"
         "\"sms_opt_in\":true,\"campaign_slug\":null,\"subid\":null,"
         "\"pending_group_type\":null,\"iframe_parent_url\":null,"
         "\"user_country\":\"GB\",\"occurred_at\":\"2027-01-15T08:00:00Z\"}"),
    /* Unknown members are ignored, whatever their type. */
    GOOD(CONSENT, "{\"extra\":{\"nested\":[1,2,{}]},\"version\":2}",
         "{\"extra\":null,\"version\":null}"),

    /* The body as a whole. */
    BAD(RAW, "", "", "body is empty"),
    BAD(RAW, "[]", "", "body is not a JSON object"),
    BAD(RAW, "[{\"event\":\"offer_claimed\"}]", "", "not a JSON object"),
    BAD(RAW, "\"offer_claimed\"", "", "body is not a JSON object"),
    BAD(RAW, "null", "", "body is not a JSON object"),
    BAD(RAW, "42", "", "body is not a JSON object"),
    BAD(RAW, "{", "", "malformed JSON at line 1, column 1"),
    BAD(RAW, "{\"event\":\n\"offer_claimed\",}", "",
        "malformed JSON at line 2"),
    BAD(RAW, "{} x", "", "end of file expected near 'x'"),
    BAD(RAW, "{\"a\":\"\\u0000\"}", "", "malformed JSON"),
    BAD(RAW, "{\"a\":\"\xff\"}", "", "unable to decode byte 0xff"),
    BAD(RAW, "{\"campaign_id\":99999999999999999999}", "", "too big integer"),
    BAD(RAW,
        "{\"event\":\"offer_claimed\",\"email\":\"a@example.com\","
        "\"event\":\"offer_claimed\"}",
        "event", "event: duplicate key at line 1"),
    BAD(RAW, "{\"x\\u0041\":1,\"x\\u0041\":2}", "", "duplicate key"),

    /* event */
    BAD(OFFER, "{\"-event\":0}", "event", "event: is required"),
    BAD(OFFER, "{\"event\":null}", "event", "event: is required"),
    BAD(OFFER, "{\"event\":\"\"}", "event", "event: must not be empty"),
    BAD(OFFER, "{\"event\":5}", "event", "event: must be a string"),
    BAD(OFFER, "{\"event\":\"purchase\"}", "event",
        "event: \"purchase\" must be \"consent_intent\" or "
        "\"offer_claimed\""),
    BAD(OFFER, "{\"event\":\"Offer_Claimed\"}", "event", "must be"),

    /* brand_slug */
    BAD(OFFER, "{\"-brand_slug\":0}", "brand_slug", "brand_slug: is required"),
    BAD(OFFER, "{\"brand_slug\":\"\"}", "brand_slug", "must not be empty"),
    BAD(OFFER, "{\"brand_slug\":\"Acme\"}", "brand_slug",
        "brand_slug: \"Acme\" must be 1 to 64 lower-case letters"),
    BAD(OFFER, "{\"brand_slug\":\"-acme\"}", "brand_slug", "must be 1 to 64"),
    BAD(OFFER, "{\"brand_slug\":\"acme_uk\"}", "brand_slug", "must be 1 to 64"),
    BAD(OFFER, "{\"brand_slug\":\"acme uk\"}", "brand_slug", "must be 1 to 64"),
    BAD(OFFER, "{\"brand_slug\":\"" A64 "a\"}", "brand_slug",
        "must be 1 to 64"),
    BAD(OFFER, "{\"brand_slug\":[\"acme\"]}", "brand_slug",
        "brand_slug: must be a string"),
    GOOD(OFFER, "{\"brand_slug\":\"" A64 "\"}", "{\"brand_slug\":\"" A64 "\"}"),
    GOOD(OFFER, "{\"brand_slug\":\"9acme-uk-\"}",
         "{\"brand_slug\":\"9acme-uk-\"}"),

    /* email and mobile */
    BAD(OFFER, "{\"-email\":0,\"-mobile\":0}", "email",
        "one of email or mobile is required"),
    BAD(OFFER, "{\"email\":\"\",\"mobile\":null}", "email",
        "one of email or mobile is required"),
    BAD(OFFER, "{\"email\":\"janedoe.example.com\"}", "email",
        "email: missing @"),
    BAD(OFFER, "{\"email\":\"a@b\",\"-mobile\":0}", "email",
        "email: domain has no dot"),
    BAD(OFFER, "{\"email\":42}", "email", "email: must be a string"),
    BAD(OFFER, "{\"mobile\":\"07700900123\"}", "mobile", "mobile: "),
    BAD(OFFER, "{\"mobile\":\"+999 123456\"}", "mobile",
        "mobile: unknown country calling code"),
    BAD(OFFER, "{\"mobile\":true}", "mobile", "mobile: must be a string"),
    BAD(OFFER, "{\"mobile\":\"12\",\"-email\":0}", "mobile", "mobile: "),
    GOOD(OFFER, "{\"-mobile\":0}",
         "{\"email\":\"jane.doe@example.com\",\"mobile\":null,"
         "\"user_country\":null}"),
    GOOD(OFFER, "{\"-email\":0,\"mobile\":\"0044 7700-900.123\"}",
         "{\"email\":null,\"mobile\":\"+447700900123\"}"),
    GOOD(OFFER, "{\"email\":null}", "{\"email\":null}"),

    /* email_opt_in and sms_opt_in */
    BAD(CONSENT, "{\"email_opt_in\":\"yes\"}", "email_opt_in",
        "email_opt_in: must be true or false"),
    BAD(CONSENT, "{\"sms_opt_in\":1}", "sms_opt_in",
        "sms_opt_in: must be true or false"),
    BAD(OFFER, "{\"sms_opt_in\":\"false\"}", "sms_opt_in",
        "must be true or false"),
    GOOD(CONSENT, "{\"-mobile\":0}",
         "{\"email_opt_in\":true,\"sms_opt_in\":null}"),
    GOOD(CONSENT, "{\"-email\":0}",
         "{\"email_opt_in\":null,\"sms_opt_in\":true}"),
    GOOD(CONSENT, "{\"email_opt_in\":false,\"sms_opt_in\":false}",
         "{\"email_opt_in\":false,\"sms_opt_in\":false}"),
    GOOD(CONSENT, "{\"email_opt_in\":null,\"sms_opt_in\":null}",
         "{\"email_opt_in\":true,\"sms_opt_in\":true}"),
    GOOD(CONSENT, "{\"-mobile\":0,\"sms_opt_in\":true}",
         "{\"email_opt_in\":true,\"sms_opt_in\":null}"),
    GOOD(CONSENT, "{\"-email\":0,\"email_opt_in\":true}",
         "{\"email_opt_in\":null,\"sms_opt_in\":true}"),
    GOOD(CONSENT, "{\"-email\":0,\"email_opt_in\":false}",
         "{\"email_opt_in\":null}"),
    GOOD(OFFER, "{}", "{\"email_opt_in\":null,\"sms_opt_in\":null}"),
    GOOD(OFFER, "{\"email_opt_in\":true,\"sms_opt_in\":false}",
         "{\"email_opt_in\":true,\"sms_opt_in\":false}"),
    GOOD(OFFER, "{\"-mobile\":0,\"sms_opt_in\":true}", "{\"sms_opt_in\":null}"),

    /* campaign_slug */
    BAD(OFFER, "{\"campaign_slug\":\"Students\"}", "campaign_slug",
        "campaign_slug: \"Students\" must be 1 to 64"),
    BAD(OFFER, "{\"campaign_slug\":\"_students\"}", "campaign_slug",
        "must be 1 to 64"),
    BAD(OFFER, "{\"campaign_slug\":\"key workers\"}", "campaign_slug",
        "must be 1 to 64"),
    BAD(OFFER, "{\"campaign_slug\":\"" A64 "a\"}", "campaign_slug",
        "must be 1 to 64"),
    BAD(OFFER, "{\"campaign_slug\":7}", "campaign_slug", "must be a string"),
    GOOD(OFFER, "{\"campaign_slug\":\"students_2026-uk\"}",
         "{\"campaign_slug\":\"students_2026-uk\"}"),
    GOOD(OFFER, "{\"campaign_slug\":\"\"}", "{\"campaign_slug\":null}"),
    GOOD(OFFER, "{\"campaign_slug\":null}", "{\"campaign_slug\":null}"),

    /* type */
    BAD(OFFER, "{\"-type\":0}", "type", "type: is required"),
    BAD(OFFER, "{\"type\":\"code\"}", "type",
        "type: \"code\" must be \"Code\" or \"Deal\""),
    BAD(OFFER, "{\"type\":\"Code \"}", "type", "must be \"Code\" or"),
    BAD(OFFER, "{\"type\":\"\"}", "type", "type: must not be empty"),
    GOOD(OFFER, "{\"type\":\"Deal\"}", "{\"type\":\"Deal\"}"),

    /* pending_group_* */
    BAD(OFFER, "{\"pending_group_parent\":\"日本\"}", "pending_group_parent",
        "pending_group_parent: \"日本\" has no ASCII letters or digits for "
        "a field name"),
    BAD(OFFER, "{\"pending_group_type\":\"!!!\"}", "pending_group_type",
        "pending_group_type: \"!!!\" has no ASCII letters or digits"),
    BAD(OFFER, "{\"pending_group_child\":\" - \"}", "pending_group_child",
        "has no ASCII letters or digits"),
    BAD(OFFER, "{\"pending_group_child\":\"" X100 "x\"}", "pending_group_child",
        "is longer than 100 bytes"),
    BAD(OFFER, "{\"pending_group_child\":\"" X50 X10 X10 "\"}",
        "pending_group_child", "is too long for a field name"),
    BAD(OFFER, "{\"pending_group_parent\":\"Key\\nWorker\"}",
        "pending_group_parent", "must not contain control characters"),
    BAD(OFFER, "{\"pending_group_parent\":\"Key\\u0085Worker\"}",
        "pending_group_parent", "must not contain control characters"),
    BAD(OFFER, "{\"pending_group_parent\":\"Key\\u007fWorker\"}",
        "pending_group_parent", "control characters"),
    BAD(OFFER, "{\"pending_group_type\":{}}", "pending_group_type",
        "must be a string"),
    /* 100 bytes, 50 of them dropped from the slug. */
    GOOD(OFFER,
         "{\"pending_group_child\":\"éééééééééééééééééééééééé" X50 "é\"}",
         NULL),
    GOOD(OFFER,
         "{\"pending_group_parent\":\"Étudiants & Apprentis\","
         "\"pending_group_child\":null,\"pending_group_type\":\"\"}",
         "{\"pending_group_parent\":\"Étudiants & Apprentis\","
         "\"pending_group_child\":null,\"pending_group_type\":null}"),

    /* token */
    BAD(OFFER, "{\"-token\":0}", "token", "token: is required"),
    BAD(OFFER, "{\"token\":\"AB CD\"}", "token",
        "token: must be 1 to 128 printable ASCII characters without spaces"),
    BAD(OFFER, "{\"token\":\"tøken\"}", "token", "printable ASCII"),
    BAD(OFFER, "{\"token\":\"AB\\tCD\"}", "token", "printable ASCII"),
    BAD(OFFER, "{\"token\":\"" X100 X10 X10 "xxxxxxxxx\"}", "token",
        "must be 1 to 128"),
    BAD(OFFER, "{\"token\":1234}", "token", "must be a string"),
    GOOD(OFFER, "{\"token\":\"" X100 X10 X10 "xxxxxxxx\"}", NULL),
    GOOD(OFFER, "{\"token\":\"a-Z_0.9~!{}\"}", "{\"token\":\"a-Z_0.9~!{}\"}"),

    /* subid */
    BAD(OFFER, "{\"subid\":\"" X100 X100 X50 "xxxxxx\"}", "subid",
        "subid: is longer than 255 bytes"),
    BAD(OFFER, "{\"subid\":5}", "subid", "subid: must be a string"),
    GOOD(OFFER, "{\"subid\":\"" X100 X100 X50 "xxxxx\"}", NULL),
    GOOD(OFFER, "{\"subid\":\"\"}", "{\"subid\":null}"),

    /* brand_country and user_country */
    BAD(OFFER, "{\"-brand_country\":0}", "brand_country",
        "brand_country: is required"),
    BAD(OFFER, "{\"brand_country\":\"gbr\"}", "brand_country",
        "brand_country: \"gbr\" must be an ISO 3166-1 alpha-2 code"),
    BAD(OFFER, "{\"brand_country\":\"G1\"}", "brand_country",
        "must be an ISO 3166-1 alpha-2 code"),
    BAD(OFFER, "{\"brand_country\":\"uk\"}", "brand_country",
        "brand_country: \"UK\" is not an assigned ISO 3166-1 alpha-2 code"),
    BAD(OFFER, "{\"brand_country\":\"XK\"}", "brand_country",
        "is not an assigned"),
    BAD(OFFER, "{\"brand_country\":\"ÉÉ\"}", "brand_country",
        "must be an ISO 3166-1 alpha-2 code"),
    BAD(OFFER, "{\"user_country\":\"EU\"}", "user_country",
        "user_country: \"EU\" is not an assigned"),
    BAD(OFFER, "{\"user_country\":false}", "user_country", "must be a string"),
    GOOD(OFFER, "{\"brand_country\":\"Ie\",\"user_country\":\"zw\"}",
         "{\"brand_country\":\"IE\",\"user_country\":\"ZW\"}"),
    GOOD(OFFER, "{\"user_country\":\"ie\"}", "{\"user_country\":\"IE\"}"),
    GOOD(OFFER, "{\"user_country\":\"\"}", "{\"user_country\":\"GB\"}"),
    GOOD(OFFER, "{\"mobile\":\"+353 85 123 4567\"}",
         "{\"user_country\":\"IE\"}"),
    GOOD(OFFER, "{\"mobile\":\"+1 (415) 555-0100\"}",
         "{\"user_country\":\"US\"}"),
    GOOD(OFFER, "{\"mobile\":\"+800 1234 5678\"}",
         "{\"mobile\":\"+80012345678\",\"user_country\":null}"),

    /* campaign_id */
    BAD(OFFER, "{\"-campaign_id\":0}", "campaign_id",
        "campaign_id: is required"),
    BAD(OFFER, "{\"campaign_id\":\"1234\"}", "campaign_id",
        "campaign_id: must be an integer"),
    BAD(OFFER, "{\"campaign_id\":1234.0}", "campaign_id",
        "campaign_id: must be an integer"),
    BAD(OFFER, "{\"campaign_id\":true}", "campaign_id", "must be an integer"),
    BAD(OFFER, "{\"campaign_id\":0}", "campaign_id",
        "campaign_id: must be at least 1"),
    BAD(OFFER, "{\"campaign_id\":-5}", "campaign_id", "must be at least 1"),
    GOOD(OFFER, "{\"campaign_id\":9223372036854775807}",
         "{\"campaign_id\":9223372036854775807}"),
    GOOD(OFFER, "{\"campaign_id\":1}", "{\"campaign_id\":1}"),

    /* campaign_title */
    BAD(OFFER, "{\"-campaign_title\":0}", "campaign_title",
        "campaign_title: is required"),
    BAD(OFFER, "{\"campaign_title\":\"\"}", "campaign_title",
        "campaign_title: must not be empty"),
    BAD(OFFER, "{\"campaign_title\":\"" X100 X100 X50 "xxxxxx\"}",
        "campaign_title", "campaign_title: is longer than 255 bytes"),
    GOOD(OFFER, "{\"campaign_title\":\"" X100 X100 X50 "xxxxx\"}", NULL),

    /* campaign_url and iframe_parent_url */
    BAD(OFFER, "{\"-campaign_url\":0}", "campaign_url",
        "campaign_url: is required"),
    BAD(OFFER, "{\"campaign_url\":\"ftp://example.com/x\"}", "campaign_url",
        "campaign_url: \"ftp://example.com/x\" must be an absolute http:// "
        "or https:// URL"),
    BAD(OFFER, "{\"campaign_url\":\"//example.com/x\"}", "campaign_url",
        "must be an absolute"),
    BAD(OFFER, "{\"campaign_url\":\"javascript:alert(1)\"}", "campaign_url",
        "must be an absolute"),
    BAD(OFFER, "{\"campaign_url\":\"/at/amazon\"}", "campaign_url",
        "must be an absolute"),
    BAD(OFFER, "{\"campaign_url\":\"https://\"}", "campaign_url",
        "campaign_url: \"https://\" has no host"),
    BAD(OFFER, "{\"campaign_url\":\"https:///at\"}", "campaign_url",
        "has no host"),
    BAD(OFFER, "{\"campaign_url\":\"http://?q\"}", "campaign_url",
        "has no host"),
    BAD(OFFER, "{\"campaign_url\":\"https://example.com/a b\"}", "campaign_url",
        "must not contain spaces or control characters"),
    BAD(OFFER, "{\"campaign_url\":\"https://example.com/\\r\\n\"}",
        "campaign_url", "must not contain spaces"),
    BAD(OFFER,
        "{\"campaign_url\":\"https://e.com/" X1000 X1000 X10 X10 X10 "xxxxx\"}",
        "campaign_url", "is longer than 2048 bytes"),
    BAD(OFFER, "{\"iframe_parent_url\":\"www.customer-website\"}",
        "iframe_parent_url", "iframe_parent_url: \"www.customer-website\""),
    BAD(OFFER, "{\"iframe_parent_url\":[]}", "iframe_parent_url",
        "must be a string"),
    GOOD(OFFER,
         "{\"campaign_url\":\"https://e.com/" X1000 X1000 X10 X10 X10 "xxxx\"}",
         NULL),
    GOOD(OFFER, "{\"campaign_url\":\"HTTP://localhost:8080/x?y=é#z\"}",
         "{\"campaign_url\":\"HTTP://localhost:8080/x?y=é#z\"}"),
    GOOD(OFFER, "{\"iframe_parent_url\":\"\"}", "{\"iframe_parent_url\":null}"),

    /* occurred_at */
    GOOD(OFFER, "{\"occurred_at\":\"2026-11-21T10:15:00.123456789Z\"}",
         "{\"occurred_at\":\"2026-11-21T10:15:00Z\"}"),
    GOOD(OFFER, "{\"occurred_at\":\"2026-11-21t10:15:00z\"}",
         "{\"occurred_at\":\"2026-11-21T10:15:00Z\"}"),
    GOOD(OFFER, "{\"occurred_at\":\"2026-11-21T11:15:00+01:00\"}",
         "{\"occurred_at\":\"2026-11-21T10:15:00Z\"}"),
    GOOD(OFFER, "{\"occurred_at\":\"2026-11-21T04:45:00.5-05:30\"}",
         "{\"occurred_at\":\"2026-11-21T10:15:00Z\"}"),
    GOOD(OFFER, "{\"occurred_at\":\"2026-11-21T00:30:00+01:00\"}",
         "{\"occurred_at\":\"2026-11-20T23:30:00Z\"}"),
    GOOD(OFFER, "{\"occurred_at\":\"2024-02-29T23:00:00-02:00\"}",
         "{\"occurred_at\":\"2024-03-01T01:00:00Z\"}"),
    GOOD(OFFER, "{\"occurred_at\":\"2000-02-29T00:00:00-00:00\"}",
         "{\"occurred_at\":\"2000-02-29T00:00:00Z\"}"),
    GOOD(OFFER, "{\"occurred_at\":\"2026-12-31T23:59:60Z\"}",
         "{\"occurred_at\":\"2026-12-31T23:59:59Z\"}"),
    GOOD(OFFER, "{\"occurred_at\":\"1970-01-01T00:00:00Z\"}",
         "{\"occurred_at\":\"1970-01-01T00:00:00Z\"}"),
    GOOD(OFFER, "{\"occurred_at\":\"9999-12-31T23:59:59Z\"}",
         "{\"occurred_at\":\"9999-12-31T23:59:59Z\"}"),
    GOOD(OFFER, "{\"-occurred_at\":0}",
         "{\"occurred_at\":\"2027-01-15T08:00:00Z\"}"),
    GOOD(OFFER, "{\"occurred_at\":\"\"}",
         "{\"occurred_at\":\"2027-01-15T08:00:00Z\"}"),
    GOOD(OFFER, "{\"occurred_at\":null}",
         "{\"occurred_at\":\"2027-01-15T08:00:00Z\"}"),
    BAD(OFFER, "{\"occurred_at\":\"2023-02-29T00:00:00Z\"}", "occurred_at",
        "occurred_at: day out of range for the month: "
        "\"2023-02-29T00:00:00Z\""),
    BAD(OFFER, "{\"occurred_at\":\"1900-02-29T00:00:00Z\"}", "occurred_at",
        "day out of range"),
    BAD(OFFER, "{\"occurred_at\":\"2026-04-31T00:00:00Z\"}", "occurred_at",
        "day out of range"),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-00T00:00:00Z\"}", "occurred_at",
        "day out of range"),
    BAD(OFFER, "{\"occurred_at\":\"2026-13-01T00:00:00Z\"}", "occurred_at",
        "month out of range"),
    BAD(OFFER, "{\"occurred_at\":\"2026-00-01T00:00:00Z\"}", "occurred_at",
        "month out of range"),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-21T24:00:00Z\"}", "occurred_at",
        "hour out of range"),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-21T10:60:00Z\"}", "occurred_at",
        "minute out of range"),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-21T10:15:61Z\"}", "occurred_at",
        "second out of range"),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-21T10:15:00+24:00\"}", "occurred_at",
        "offset out of range"),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-21T10:15:00+01:60\"}", "occurred_at",
        "offset out of range"),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-21T10:15:00\"}", "occurred_at",
        "occurred_at: not an RFC 3339 date-time like "
        "2026-11-21T10:15:00Z: \"2026-11-21T10:15:00\""),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-21 10:15:00Z\"}", "occurred_at",
        "not an RFC 3339 date-time"),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-21T10:15:00+0100\"}", "occurred_at",
        "not an RFC 3339 date-time"),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-21T10:15:00.Z\"}", "occurred_at",
        "not an RFC 3339 date-time"),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-21T10:15Z\"}", "occurred_at",
        "not an RFC 3339 date-time"),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-21\"}", "occurred_at",
        "not an RFC 3339 date-time"),
    BAD(OFFER, "{\"occurred_at\":\"2026-11-21T10:15:00Zjunk\"}", "occurred_at",
        "not an RFC 3339 date-time"),
    BAD(OFFER, "{\"occurred_at\":\"+2026-11-21T10:15:00Z\"}", "occurred_at",
        "not an RFC 3339 date-time"),
    BAD(OFFER, "{\"occurred_at\":\"26-11-21T10:15:00Z\"}", "occurred_at",
        "not an RFC 3339 date-time"),
    BAD(OFFER, "{\"occurred_at\":\"1969-12-31T23:59:59Z\"}", "occurred_at",
        "outside 1970-01-01 to 9999-12-31 in UTC"),
    BAD(OFFER, "{\"occurred_at\":\"1970-01-01T00:30:00+01:00\"}", "occurred_at",
        "outside 1970-01-01"),
    BAD(OFFER, "{\"occurred_at\":\"9999-12-31T23:59:59-00:01\"}", "occurred_at",
        "outside 1970-01-01"),
    BAD(OFFER, "{\"occurred_at\":1795256100}", "occurred_at",
        "occurred_at: must be a string"),
};

/* The body of r: RAW as is, else its base with the patch applied. */
static char *
row_body(const struct row *r)
{
	json_t *obj, *patch;
	const char *key;
	json_t *v;
	char *body;

	if (r->base == RAW)
		return strdup(r->patch);
	obj = json_loads(r->base == OFFER ? offer_base : consent_base, 0, NULL);
	patch = json_loads(r->patch, 0, NULL);
	assert_non_null(obj);
	if (patch == NULL)
		fail_msg("%s:%d: patch is not JSON", __FILE__, r->line);
	json_object_foreach (patch, key, v) {
		if (key[0] == '-')
			json_object_del(obj, key + 1);
		else
			json_object_set(obj, key, v);
	}
	body = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(obj);
	json_decref(patch);
	return body;
}

/* 1 when every member of want is in have with an equal value (null:
 * absent).  Prints what differs. */
static int
json_has(const struct row *r, const json_t *have, const char *want_text)
{
	json_t *want = json_loads(want_text, 0, NULL), *v;
	const char *key;
	int ok = 1;

	if (want == NULL)
		fail_msg("%s:%d: expectation is not JSON", __FILE__, r->line);
	json_object_foreach (want, key, v) {
		json_t *h = json_object_get(have, key);
		if (json_is_null(v) ? h == NULL : json_equal(h, v))
			continue;
		char *hs = h ? json_dumps(h, JSON_ENCODE_ANY) : NULL;
		char *ws = json_dumps(v, JSON_ENCODE_ANY);
		print_error("%s:%d: %s: have %s, want %s\n", __FILE__, r->line,
		            key, hs ? hs : "(absent)",
		            json_is_null(v) ? "(absent)" : ws);
		free(hs);
		free(ws);
		ok = 0;
	}
	json_decref(want);
	return ok;
}

/* to_json -> from_json -> to_json gives the same object and fields. */
static int
round_trip(const struct row *r, const struct gc_event *ev, json_t *j)
{
	struct gc_event back;
	json_t *j2;
	int ok;

	if (event_from_json(j, &back) != GC_OK) {
		print_error("%s:%d: event_from_json failed\n", __FILE__,
		            r->line);
		return 0;
	}
	j2 = event_to_json(&back);
	ok = j2 != NULL && json_equal(j, j2) && back.kind == ev->kind &&
	     back.occurred_at == ev->occurred_at &&
	     back.campaign_id == ev->campaign_id &&
	     back.email_opt_in == ev->email_opt_in &&
	     back.sms_opt_in == ev->sms_opt_in;
	if (!ok)
		print_error("%s:%d: round trip differs\n", __FILE__, r->line);
	json_decref(j2);
	event_fini(&back);
	return ok;
}

/* Check an accepted row; 1 when it matches. */
static int
check_good(const struct row *r, const struct gc_event *ev)
{
	json_t *j = event_to_json(ev);
	int ok;

	if (j == NULL) {
		print_error("%s:%d: event_to_json failed\n", __FILE__, r->line);
		return 0;
	}
	ok = r->expect == NULL || json_has(r, j, r->expect);
	ok &= round_trip(r, ev, j);
	json_decref(j);
	return ok;
}

/* Check a rejected row; 1 when it matches. */
static int
check_bad(const struct row *r, const struct ev_problem *prob)
{
	if (strcmp(prob->field, r->field) == 0 &&
	    strstr(prob->detail, r->detail) != NULL)
		return 1;
	print_error("%s:%d: have field \"%s\" detail \"%s\", want field "
	            "\"%s\" detail containing \"%s\"\n",
	            __FILE__, r->line, prob->field, prob->detail, r->field,
	            r->detail);
	return 0;
}

static int
check_row(const struct row *r)
{
	struct ev_problem prob;
	struct gc_event ev;
	char *body = row_body(r);
	enum gc_err err;
	int ok;

	assert_non_null(body);
	err = event_parse(body, strlen(body), NOW, &ev, &prob);
	if (err != r->want) {
		print_error("%s:%d: have %s (%s: %s), want %s\n", __FILE__,
		            r->line, err == GC_OK ? "GC_OK" : "an error",
		            prob.field, prob.detail,
		            r->want == GC_OK ? "GC_OK" : "GC_EINVAL");
		ok = 0;
	} else if (err == GC_OK)
		ok = check_good(r, &ev);
	else
		ok = check_bad(r, &prob);
	event_fini(&ev);
	free(body);
	return ok;
}

static void
test_rows(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		failed += !check_row(&rows[i]);
	print_message("%zu rows, %d failed\n", sizeof(rows) / sizeof(rows[0]),
	              failed);
	assert_int_equal(failed, 0);
}

/* The normalised values of the full base, member by member. */
static void
test_fields(void **state)
{
	struct ev_problem prob;
	struct gc_event ev;

	(void)state;
	assert_int_equal(
	    event_parse(offer_base, strlen(offer_base), NOW, &ev, &prob),
	    GC_OK);
	assert_string_equal(prob.field, "");
	assert_string_equal(prob.detail, "");
	assert_int_equal(ev.kind, EV_OFFER_CLAIMED);
	assert_string_equal(ev.email, "jane.doe@example.com");
	assert_string_equal(ev.mobile, "+447700900123");
	assert_string_equal(ev.brand_country, "GB");
	assert_string_equal(ev.user_country, "GB");
	assert_int_equal(ev.campaign_id, 1234);
	assert_int_equal(ev.occurred_at, 1795256100);
	assert_int_equal(ev.email_opt_in, EV_OPT_UNSET);
	assert_int_equal(ev.sms_opt_in, EV_OPT_UNSET);
	event_fini(&ev);
	assert_null(ev.email);
	event_fini(&ev); /* twice is harmless */
	assert_string_equal(ev_kind_names[EV_CONSENT_INTENT], "consent_intent");
	assert_string_equal(ev_kind_names[EV_OFFER_CLAIMED], "offer_claimed");
}

/* A rejected parse leaves nothing allocated and the event empty. */
static void
test_reject_empties(void **state)
{
	const char body[] = "{\"event\":\"offer_claimed\",\"brand_slug\":\"a\","
	                    "\"email\":\"a@example.com\",\"type\":\"Code\","
	                    "\"token\":\"t\",\"brand_country\":\"GB\","
	                    "\"campaign_title\":\"T\","
	                    "\"campaign_url\":\"https://x\","
	                    "\"campaign_id\":\"7\"}";
	struct ev_problem prob;
	struct gc_event ev;

	(void)state;
	assert_int_equal(event_parse(body, strlen(body), NOW, &ev, &prob),
	                 GC_EINVAL);
	assert_string_equal(prob.field, "campaign_id");
	assert_null(ev.brand_slug);
	assert_null(ev.email);
	assert_null(ev.token);
	/* The length is honoured: the same body cut short is malformed. */
	assert_int_equal(
	    event_parse(offer_base, strlen(offer_base) - 1, NOW, &ev, &prob),
	    GC_EINVAL);
	assert_string_equal(prob.field, "");
}

/* Count the bytes of c in s. */
static size_t
count_char(const char *s, char c)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += *s == c;
	return n;
}

/* At most ~60 bytes of the sender's text reach a detail; no PII. */
static void
test_clip(void **state)
{
	char body[1024];
	struct ev_problem prob;
	struct gc_event ev;

	(void)state;
	snprintf(body, sizeof(body), "{\"event\":\"%0400d\"}", 0);
	assert_int_equal(event_parse(body, strlen(body), NOW, &ev, &prob),
	                 GC_EINVAL);
	assert_true(count_char(prob.detail, '0') <= 60);
	assert_non_null(strstr(prob.detail, "...\" must be"));
	snprintf(body, sizeof(body), "{\"event\": \"%0400d", 0);
	assert_int_equal(event_parse(body, strlen(body), NOW, &ev, &prob),
	                 GC_EINVAL);
	assert_true(count_char(prob.detail, '0') <= 60);
	/* A cut never splits a character: "é" is two bytes. */
	snprintf(body, sizeof(body), "{\"event\":\"x%s\"}",
	         "éééééééééééééééééééééééééééééééééééééééééééééééééé");
	assert_int_equal(event_parse(body, strlen(body), NOW, &ev, &prob),
	                 GC_EINVAL);
	/* 60 bytes would end inside the 30th "é": 59 are kept. */
	assert_non_null(strstr(prob.detail, "\"x" E10 E10 "ééééééééé...\""));
	snprintf(body, sizeof(body), "%s", offer_base);
	memcpy(strstr(body, "Jane.Doe@"), "Jane.Doe!", 9);
	assert_int_equal(event_parse(body, strlen(body), NOW, &ev, &prob),
	                 GC_EINVAL);
	assert_string_equal(prob.field, "email");
	assert_null(strstr(prob.detail, "Jane"));
	assert_null(strstr(prob.detail, "jane"));
}

struct load_row {
	int line;
	const char *json;
	enum gc_err want;
};

/* event_from_json accepts only the stored shape. */
static const struct load_row load_rows[] = {
    {__LINE__,
     "{\"event\":\"offer_claimed\",\"brand_slug\":\"a\",\"email\":\"a@b.co\","
     "\"type\":\"Code\",\"token\":\"t\",\"brand_country\":\"GB\","
     "\"campaign_id\":1,\"campaign_title\":\"T\","
     "\"campaign_url\":\"https://x\",\"occurred_at\":\"2026-11-21T10:15:00Z\"}",
     GC_OK},
    {__LINE__, "[]", GC_EINVAL},
    {__LINE__, "{}", GC_EINVAL},
    /* Each of these breaks the good one above in one way. */
    {__LINE__,
     "{\"event\":\"signup\",\"brand_slug\":\"a\",\"email\":\"a@b.co\","
     "\"type\":\"Code\",\"token\":\"t\",\"brand_country\":\"GB\","
     "\"campaign_id\":1,\"campaign_title\":\"T\","
     "\"campaign_url\":\"https://x\",\"occurred_at\":\"2026-11-21T10:15:00Z\"}",
     GC_EINVAL},
    {__LINE__,
     "{\"event\":\"offer_claimed\",\"brand_slug\":\"a\","
     "\"type\":\"Code\",\"token\":\"t\",\"brand_country\":\"GB\","
     "\"campaign_id\":1,\"campaign_title\":\"T\","
     "\"campaign_url\":\"https://x\",\"occurred_at\":\"2026-11-21T10:15:00Z\"}",
     GC_EINVAL},
    {__LINE__,
     "{\"event\":\"offer_claimed\",\"brand_slug\":\"a\",\"email\":\"a@b.co\","
     "\"type\":\"Code\",\"token\":\"t\",\"brand_country\":\"GB\","
     "\"campaign_id\":1,\"campaign_title\":\"T\","
     "\"campaign_url\":\"https://x\"}",
     GC_EINVAL},
    {__LINE__,
     "{\"event\":\"offer_claimed\",\"brand_slug\":\"a\",\"email\":\"a@b.co\","
     "\"type\":\"Code\",\"token\":\"t\",\"brand_country\":\"GB\","
     "\"campaign_id\":\"1\",\"campaign_title\":\"T\","
     "\"campaign_url\":\"https://x\",\"occurred_at\":\"2026-11-21T10:15:00Z\"}",
     GC_EINVAL},
    {__LINE__,
     "{\"event\":\"offer_claimed\",\"brand_slug\":\"a\",\"email\":\"a@b.co\","
     "\"type\":\"Code\",\"token\":\"t\",\"brand_country\":\"GB\","
     "\"campaign_id\":1,\"campaign_title\":\"T\",\"sms_opt_in\":1,"
     "\"campaign_url\":\"https://x\",\"occurred_at\":\"2026-11-21T10:15:00Z\"}",
     GC_EINVAL},
    {__LINE__,
     "{\"event\":\"offer_claimed\",\"brand_slug\":\"a\",\"email\":\"a@b.co\","
     "\"type\":\"Code\",\"token\":\"t\",\"brand_country\":\"GB\","
     "\"campaign_id\":1,\"campaign_title\":\"T\","
     "\"campaign_url\":\"https://x\",\"occurred_at\":\"yesterday\"}",
     GC_EINVAL},
};

static void
test_from_json(void **state)
{
	struct gc_event ev;
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(load_rows) / sizeof(load_rows[0]); i++) {
		const struct load_row *r = &load_rows[i];
		json_t *j = json_loads(r->json, 0, NULL);
		enum gc_err err;

		assert_non_null(j);
		err = event_from_json(j, &ev);
		if (err != r->want) {
			print_error("%s:%d: have %d, want %d\n", __FILE__,
			            r->line, err, r->want);
			failed++;
		}
		/* Stored opt-ins are taken as they are: absent stays UNSET. */
		if (err == GC_OK && (ev.email_opt_in != EV_OPT_UNSET ||
		                     ev.user_country != NULL))
			failed++;
		event_fini(&ev);
		json_decref(j);
	}
	assert_int_equal(failed, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rows),
	    cmocka_unit_test(test_fields),
	    cmocka_unit_test(test_reject_empties),
	    cmocka_unit_test(test_clip),
	    cmocka_unit_test(test_from_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
