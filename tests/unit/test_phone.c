/*
 * Unit tests for app/phone.c: table-driven, good and bad rows side by
 * side.  A failing row prints file:line, what we had and what we wanted;
 * every row runs before the test fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "phone.h"

/* A phone_normalize() row: want is the output on GC_OK, else the reason. */
struct norm_row {
	int line;
	const char *in;
	enum gc_err err;
	const char *want;
};

/* clang-format off */
#define GOOD(in, want)	{ __LINE__, (in), GC_OK, (want) }
#define BAD(in, why)	{ __LINE__, (in), GC_EINVAL, (why) }
/* clang-format on */

#define UNKNOWN "unknown country calling code"
#define NOPLUS  "must start with + and a country calling code"

/* clang-format off */
static const struct norm_row norm_rows[] = {
	/* United Kingdom: trunk 0 dropped, international prefix 00. */
	GOOD("+447700900123",			"+447700900123"),
	GOOD("+44 7700 900123",			"+447700900123"),
	GOOD("+44 (0)7700 900123",		"+447700900123"),
	GOOD("+44 07700 900123",		"+447700900123"),
	GOOD("0044 7700 900123",		"+447700900123"),
	GOOD("00 44 (0) 7700-900-123",		"+447700900123"),
	GOOD("+44.7700.900.123",		"+447700900123"),
	GOOD("+44/7700/900123",			"+447700900123"),
	GOOD(" \t+44 7700 900123\r\n",		"+447700900123"),
	GOOD("(+44) 7700 900123",		"+447700900123"),
	GOOD("+44-20-7946-0018",		"+442079460018"),
	GOOD("+44 1481 723456",			"+441481723456"),
	GOOD("+44 16977 3456",			"+44169773456"),
	BAD("+44 7700 9001",			"too short for +44"),
	BAD("+44 7700 9001234",			"too long for +44"),
	BAD("+44 7700 9001 2345 67",		"too long for +44"),
	BAD("+44 00 7700 90012",		"unexpected 0 after +44"),
	BAD("+44 0",				"too short for +44"),
	/* Ireland */
	GOOD("+353 85 123 4567",		"+353851234567"),
	GOOD("+353 (0)1 234 5678",		"+35312345678"),
	GOOD("00353 87 765 4321",		"+353877654321"),
	BAD("+353 1 2345",			"too short for +353"),
	BAD("+353 85 123 45678",		"too long for +353"),
	/* United States (NANP) */
	GOOD("+1 (212) 555-0123",		"+12125550123"),
	GOOD("001 212 555 0123",		"+12125550123"),
	GOOD("+1.415.555.2671",			"+14155552671"),
	GOOD("+1/212/555/0123",			"+12125550123"),
	BAD("+1 212 555 012",			"too short for +1"),
	BAD("+1 212 555 01234",			"too long for +1"),
	BAD("+1 112 555 0123",			"no such area or exchange code"),
	BAD("+1 212 055 0123",			"no such area or exchange code"),
	/* France */
	GOOD("+33 6 12 34 56 78",		"+33612345678"),
	GOOD("+33 (0)1 23 45 67 89",		"+33123456789"),
	GOOD("0033 6.12.34.56.78",		"+33612345678"),
	BAD("+33 6 12 34 56 7",			"too short for +33"),
	BAD("+33 6 12 34 56 789",		"too long for +33"),
	/* Germany: up to the 15-digit E.164 limit. */
	GOOD("+49 30 123456",			"+4930123456"),
	GOOD("+49 (0)151 23456789",		"+4915123456789"),
	GOOD("+49 1234 5678 9012 3",		"+491234567890123"),
	BAD("+49 1234 5678 9012 34",		"too long for +49"),
	BAD("+49 1234",				"too short for +49"),
	/* India */
	GOOD("+91 98765 43210",			"+919876543210"),
	GOOD("+91 098765 43210",		"+919876543210"),
	BAD("+91 98765 4321",			"too short for +91"),
	BAD("+91 98765 432100",			"too long for +91"),
	/* Australia */
	GOOD("+61 412 345 678",			"+61412345678"),
	GOOD("+61 (0)2 9876 5432",		"+61298765432"),
	BAD("+61 412 345 67",			"too short for +61"),
	BAD("+61 4123 456 789",			"too long for +61"),
	/* Brazil */
	GOOD("+55 11 91234-5678",		"+5511912345678"),
	GOOD("+55 (11) 3123-4567",		"+551131234567"),
	GOOD("+55 (011) 91234-5678",		"+5511912345678"),
	BAD("+55 11 1234 567",			"too short for +55"),
	BAD("+55 11 91234 56789",		"too long for +55"),
	/* China */
	GOOD("+86 138 0013 8000",		"+8613800138000"),
	GOOD("+86 10 1234 5678",		"+861012345678"),
	BAD("+86 1380 013",			"too short for +86"),
	BAD("+86 138 0013 80001",		"too long for +86"),
	/* Japan */
	GOOD("+81 90-1234-5678",		"+819012345678"),
	GOOD("+81 3-1234-5678",			"+81312345678"),
	GOOD("+81 090 1234 5678",		"+819012345678"),
	BAD("+81 90 1234 56789",		"too long for +81"),
	/* South Africa */
	GOOD("+27 82 123 4567",			"+27821234567"),
	GOOD("+27 (0)82 123 4567",		"+27821234567"),
	BAD("+27 82 123 456",			"too short for +27"),
	BAD("+27 82 123 45678",			"too long for +27"),
	/* United Arab Emirates */
	GOOD("+971 50 123 4567",		"+971501234567"),
	GOOD("+971 4 123 4567",			"+97141234567"),
	GOOD("00971 050 123 4567",		"+971501234567"),
	BAD("+971 50 123 45678",		"too long for +971"),
	/* Nigeria */
	GOOD("+234 803 123 4567",		"+2348031234567"),
	GOOD("+234 (0)803 123 4567",		"+2348031234567"),
	BAD("+234 1234567",			"too short for +234"),
	BAD("+234 803 123 45678",		"too long for +234"),
	/* Italy and Cote d'Ivoire keep a leading 0: it is part of the NSN. */
	GOOD("+39 06 1234 5678",		"+390612345678"),
	GOOD("+39 347 123 4567",		"+393471234567"),
	BAD("+39 06 123",			"too short for +39"),
	GOOD("+225 07 12 34 56 78",		"+2250712345678"),
	/* Russia: the trunk prefix is 8, and is not dropped. */
	GOOD("+7 495 123-45-67",		"+74951234567"),
	BAD("+7 8 495 123 45 67",		"too long for +7"),
	/* Non-geographic: valid, no country. */
	GOOD("+800 1234 5678",			"+80012345678"),
	BAD("+800 1234 567",			"too short for +800"),
	/* No length data: generic 4..(15 - length of the code). */
	GOOD("+220 123 4567",			"+2201234567"),
	GOOD("+220 1234",			"+2201234"),
	BAD("+220 123",				"too short for +220"),
	GOOD("+882 1234 5678 9012",		"+882123456789012"),
	BAD("+882 1234 5678 9012 3",		"too long for +882"),
	/* Unknown and spare codes */
	BAD("+0 123 4567",			UNKNOWN),
	BAD("+0044 7700 900123",		UNKNOWN),
	BAD("+28 1234 5678",			UNKNOWN),
	BAD("+281 234 5678",			UNKNOWN),
	BAD("+999 1234 5678",			UNKNOWN),
	BAD("+422 123 456",			UNKNOWN),
	BAD("+801 1234 5678",			UNKNOWN),
	BAD("+379 06 698",			UNKNOWN),
	BAD("+8",				UNKNOWN),
	/* No international prefix */
	BAD("07700 900123",			NOPLUS),
	BAD("447700900123",			NOPLUS),
	BAD("011 44 7700 900123",		NOPLUS),
	BAD("0",				NOPLUS),
	/* Characters */
	BAD("+44 7700 CALL",			"invalid character"),
	BAD("+44 7700 900123 ext 4",		"invalid character"),
	BAD("+44_7700_900123",			"invalid character"),
	BAD("+44\xc2\xa0" "7700900123",		"invalid character"),
	BAD("tel:+447700900123",		"invalid character"),
	BAD("++447700900123",			"misplaced +"),
	BAD("44+7700900123",			"misplaced +"),
	BAD("+44 7700 +900123",			"misplaced +"),
	/* Nothing there */
	BAD("",					"no digits"),
	BAD("   ",				"no digits"),
	BAD("+",				"no digits"),
	BAD("00",				"no digits"),
	BAD("( ) - . /",			"no digits"),
	/* More digits than any number, however written */
	BAD("+44770090012345678901234567890123456", "too long"),
};
/* clang-format on */

static void
test_phone_normalize(void **state)
{
	const struct norm_row *r;
	char why[128], *out;
	const char *have;
	enum gc_err err;
	size_t i, nfail = 0;

	(void)state;
	/* Exactly PHONE_E164_MAX bytes on the heap: ASan sees an overrun. */
	out = malloc(PHONE_E164_MAX);
	assert_non_null(out);
	for (i = 0; i < sizeof(norm_rows) / sizeof(norm_rows[0]); i++) {
		r = &norm_rows[i];
		why[0] = '\0';
		memset(out, 'X', PHONE_E164_MAX);
		err = phone_normalize(r->in, out, why, sizeof(why));
		have = err == GC_OK ? out : why;
		if (err == r->err && strcmp(have, r->want) == 0 &&
		    (err == GC_OK || out[0] == '\0'))
			continue;
		print_error("%s:%d: phone_normalize(\"%s\"): have %s \"%s\", "
		            "want %s \"%s\"\n",
		            __FILE__, r->line, r->in, gc_strerror(err), have,
		            gc_strerror(r->err), r->want);
		nfail++;
	}
	free(out);
	if (nfail > 0)
		fail_msg("%zu of %zu rows failed", nfail, i);
}

/* A phone_country() row; want NULL means no country. */
struct country_row {
	int line;
	const char *in;
	const char *want;
};

/* clang-format off */
#define CTRY(in, want)	{ __LINE__, (in), (want) }
/* clang-format on */

/* clang-format off */
static const struct country_row country_rows[] = {
	/* Shared codes: the documented main country. */
	CTRY("+12125550123",	"US"),
	CTRY("+16135550123",	"US"),	/* Ottawa, CA */
	CTRY("+18765550123",	"US"),	/* Jamaica */
	CTRY("+74951234567",	"RU"),
	CTRY("+77011234567",	"RU"),	/* Kazakhstan */
	CTRY("+390669812345",	"IT"),	/* Vatican */
	CTRY("+447700900123",	"GB"),
	CTRY("+441481723456",	"GB"),	/* Guernsey */
	CTRY("+441534123456",	"GB"),	/* Jersey */
	CTRY("+441624123456",	"GB"),	/* Isle of Man */
	CTRY("+4779123456",	"NO"),	/* Svalbard */
	CTRY("+61891621234",	"AU"),	/* Christmas Island */
	CTRY("+6421123456",	"NZ"),
	CTRY("+212528123456",	"MA"),
	CTRY("+2476123",	"SH"),	/* Ascension */
	CTRY("+262269612345",	"RE"),	/* Mayotte */
	CTRY("+29022123",	"SH"),
	CTRY("+35818123456",	"FI"),	/* Aland */
	CTRY("+38344123456",	"XK"),
	CTRY("+50031234",	"FK"),
	CTRY("+590590123456",	"GP"),	/* St Barthelemy, St Martin */
	CTRY("+5997123456",	"CW"),	/* Bonaire */
	CTRY("+6723123",	"NF"),
	/* Longest prefix: one, two and three digits. */
	CTRY("+353851234567",	"IE"),
	CTRY("+351912345678",	"PT"),
	CTRY("+35912345678",	"BG"),
	CTRY("+2348031234567",	"NG"),
	CTRY("+27821234567",	"ZA"),
	CTRY("+971501234567",	"AE"),
	CTRY("+97226123456",	"IL"),
	/* Non-geographic and unknown */
	CTRY("+80012345678",	NULL),
	CTRY("+882123456789012", NULL),
	CTRY("+9991234567",	NULL),
	CTRY("+2812345678",	NULL),
	CTRY("+0123",		NULL),
	/* Not E.164 */
	CTRY("447700900123",	NULL),
	CTRY("+",		NULL),
	CTRY("",		NULL),
	CTRY(NULL,		NULL),
};
/* clang-format on */

static int
str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void
test_phone_country(void **state)
{
	const struct country_row *r;
	const char *have;
	size_t i, nfail = 0;

	(void)state;
	for (i = 0; i < sizeof(country_rows) / sizeof(country_rows[0]); i++) {
		r = &country_rows[i];
		have = phone_country(r->in);
		if (str_eq(have, r->want))
			continue;
		print_error("%s:%d: phone_country(\"%s\"): have %s, want %s\n",
		            __FILE__, r->line, r->in ? r->in : "(null)",
		            have ? have : "NULL", r->want ? r->want : "NULL");
		nfail++;
	}
	if (nfail > 0)
		fail_msg("%zu of %zu rows failed", nfail, i);
}

/*
 * The whole table, written out independently of phone.c from the ITU-T
 * list: every assigned code is known and maps to its country (NULL for
 * non-geographic codes), every spare code is unknown.
 */
struct code_row {
	const char *cc;
	const char *iso; /* "-" for a code that must be unknown */
};

/* clang-format off */
static const struct code_row code_rows[] = {
	{"1","US"}, {"7","RU"}, {"20","EG"}, {"27","ZA"}, {"30","GR"},
	{"31","NL"}, {"32","BE"}, {"33","FR"}, {"34","ES"}, {"36","HU"},
	{"39","IT"}, {"40","RO"}, {"41","CH"}, {"43","AT"}, {"44","GB"},
	{"45","DK"}, {"46","SE"}, {"47","NO"}, {"48","PL"}, {"49","DE"},
	{"51","PE"}, {"52","MX"}, {"53","CU"}, {"54","AR"}, {"55","BR"},
	{"56","CL"}, {"57","CO"}, {"58","VE"}, {"60","MY"}, {"61","AU"},
	{"62","ID"}, {"63","PH"}, {"64","NZ"}, {"65","SG"}, {"66","TH"},
	{"81","JP"}, {"82","KR"}, {"84","VN"}, {"86","CN"}, {"90","TR"},
	{"91","IN"}, {"92","PK"}, {"93","AF"}, {"94","LK"}, {"95","MM"},
	{"98","IR"},
	{"211","SS"}, {"212","MA"}, {"213","DZ"}, {"216","TN"}, {"218","LY"},
	{"220","GM"}, {"221","SN"}, {"222","MR"}, {"223","ML"}, {"224","GN"},
	{"225","CI"}, {"226","BF"}, {"227","NE"}, {"228","TG"}, {"229","BJ"},
	{"230","MU"}, {"231","LR"}, {"232","SL"}, {"233","GH"}, {"234","NG"},
	{"235","TD"}, {"236","CF"}, {"237","CM"}, {"238","CV"}, {"239","ST"},
	{"240","GQ"}, {"241","GA"}, {"242","CG"}, {"243","CD"}, {"244","AO"},
	{"245","GW"}, {"246","IO"}, {"247","SH"}, {"248","SC"}, {"249","SD"},
	{"250","RW"}, {"251","ET"}, {"252","SO"}, {"253","DJ"}, {"254","KE"},
	{"255","TZ"}, {"256","UG"}, {"257","BI"}, {"258","MZ"}, {"260","ZM"},
	{"261","MG"}, {"262","RE"}, {"263","ZW"}, {"264","NA"}, {"265","MW"},
	{"266","LS"}, {"267","BW"}, {"268","SZ"}, {"269","KM"}, {"290","SH"},
	{"291","ER"}, {"297","AW"}, {"298","FO"}, {"299","GL"},
	{"350","GI"}, {"351","PT"}, {"352","LU"}, {"353","IE"}, {"354","IS"},
	{"355","AL"}, {"356","MT"}, {"357","CY"}, {"358","FI"}, {"359","BG"},
	{"370","LT"}, {"371","LV"}, {"372","EE"}, {"373","MD"}, {"374","AM"},
	{"375","BY"}, {"376","AD"}, {"377","MC"}, {"378","SM"}, {"380","UA"},
	{"381","RS"}, {"382","ME"}, {"383","XK"}, {"385","HR"}, {"386","SI"},
	{"387","BA"}, {"389","MK"}, {"420","CZ"}, {"421","SK"}, {"423","LI"},
	{"500","FK"}, {"501","BZ"}, {"502","GT"}, {"503","SV"}, {"504","HN"},
	{"505","NI"}, {"506","CR"}, {"507","PA"}, {"508","PM"}, {"509","HT"},
	{"590","GP"}, {"591","BO"}, {"592","GY"}, {"593","EC"}, {"594","GF"},
	{"595","PY"}, {"596","MQ"}, {"597","SR"}, {"598","UY"}, {"599","CW"},
	{"670","TL"}, {"672","NF"}, {"673","BN"}, {"674","NR"}, {"675","PG"},
	{"676","TO"}, {"677","SB"}, {"678","VU"}, {"679","FJ"}, {"680","PW"},
	{"681","WF"}, {"682","CK"}, {"683","NU"}, {"685","WS"}, {"686","KI"},
	{"687","NC"}, {"688","TV"}, {"689","PF"}, {"690","TK"}, {"691","FM"},
	{"692","MH"},
	{"800",NULL}, {"808",NULL}, {"850","KP"}, {"852","HK"}, {"853","MO"},
	{"855","KH"}, {"856","LA"}, {"870",NULL}, {"878",NULL}, {"880","BD"},
	{"881",NULL}, {"882",NULL}, {"883",NULL}, {"886","TW"}, {"888",NULL},
	{"960","MV"}, {"961","LB"}, {"962","JO"}, {"963","SY"}, {"964","IQ"},
	{"965","KW"}, {"966","SA"}, {"967","YE"}, {"968","OM"}, {"970","PS"},
	{"971","AE"}, {"972","IL"}, {"973","BH"}, {"974","QA"}, {"975","BT"},
	{"976","MN"}, {"977","NP"}, {"979",NULL}, {"992","TJ"}, {"993","TM"},
	{"994","AZ"}, {"995","GE"}, {"996","KG"}, {"997","KZ"}, {"998","UZ"},
	/* Spare, or assigned with nothing in service */
	{"0","-"}, {"259","-"}, {"280","-"}, {"289","-"}, {"292","-"},
	{"296","-"}, {"379","-"}, {"384","-"}, {"388","-"}, {"422","-"},
	{"424","-"}, {"429","-"}, {"671","-"}, {"684","-"}, {"693","-"},
	{"699","-"}, {"801","-"}, {"807","-"}, {"809","-"}, {"830","-"},
	{"839","-"}, {"851","-"}, {"854","-"}, {"857","-"}, {"859","-"},
	{"871","-"}, {"875","-"}, {"877","-"}, {"879","-"}, {"884","-"},
	{"885","-"}, {"887","-"}, {"889","-"}, {"890","-"}, {"899","-"},
	{"969","-"}, {"978","-"}, {"990","-"}, {"991","-"}, {"999","-"},
};
/* clang-format on */

static void
test_phone_codes(void **state)
{
	const struct code_row *r;
	char in[32], out[PHONE_E164_MAX], why[128];
	const char *have;
	enum gc_err err;
	size_t i, nfail = 0;

	(void)state;
	for (i = 0; i < sizeof(code_rows) / sizeof(code_rows[0]); i++) {
		r = &code_rows[i];
		/* Eight digits after the code fit every code's lengths. */
		snprintf(in, sizeof(in), "+%s 2345 6789", r->cc);
		why[0] = '\0';
		err = phone_normalize(in, out, why, sizeof(why));
		have = phone_country(in);
		if (r->iso != NULL && strcmp(r->iso, "-") == 0) {
			if (err == GC_EINVAL && strcmp(why, UNKNOWN) == 0 &&
			    have == NULL)
				continue;
		} else if (str_eq(have, r->iso) && strcmp(why, UNKNOWN) != 0)
			continue;
		print_error("%s: +%s: have %s (%s), want %s\n", __FILE__, r->cc,
		            have ? have : "NULL", why,
		            r->iso ? r->iso : "NULL");
		nfail++;
	}
	if (nfail > 0)
		fail_msg("%zu of %zu codes failed", nfail, i);
}

/*
 * Reasons go only where there is room for them; out is "" on failure;
 * in and out may be the same buffer.
 */
static void
test_phone_edges(void **state)
{
	char out[PHONE_E164_MAX], why[8];
	char buf[PHONE_E164_MAX] = "+44 7700 900123";

	(void)state;
	assert_int_equal(phone_normalize("+44 1", out, NULL, 0), GC_EINVAL);
	assert_string_equal(out, "");
	assert_int_equal(phone_normalize("+44 1", out, why, 0), GC_EINVAL);
	assert_int_equal(phone_normalize("+44 1", out, why, sizeof(why)),
	                 GC_EINVAL);
	assert_string_equal(why, "too sho");
	assert_int_equal(phone_normalize(NULL, out, why, sizeof(why)),
	                 GC_EINVAL);
	assert_string_equal(out, "");
	assert_int_equal(phone_normalize("+447700900123", out, NULL, 0), GC_OK);
	assert_string_equal(out, "+447700900123");
	assert_int_equal(phone_normalize(buf, buf, NULL, 0), GC_OK);
	assert_string_equal(buf, "+447700900123");
	assert_int_equal(phone_normalize(buf, buf, NULL, 0), GC_OK);
	assert_string_equal(buf, "+447700900123");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_phone_normalize),
	    cmocka_unit_test(test_phone_country),
	    cmocka_unit_test(test_phone_codes),
	    cmocka_unit_test(test_phone_edges),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
