/*
 * Mobile numbers: normalisation to E.164 and the country of a calling
 * code.  No external data: the ITU-T E.164 country calling code table and
 * the possible national number lengths live in this file.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "phone.h"

#define PHONE_DIGITS_MAX 15 /* E.164: at most 15 digits after the "+" */
#define PHONE_SCAN_MAX   32 /* digits kept while scanning input */

/* Flags of a calling code. */
#define PHONE_F_TRUNK0 0x01 /* trunk prefix 0, never part of the NSN */
#define PHONE_F_NANP   0x02 /* North American Numbering Plan rules */

/*
 * A country calling code: its digits, the ISO 3166-1 alpha-2 code of the
 * country that owns it (NULL for non-geographic codes), the possible
 * lengths of its national significant number (NSN), and flags.  min = 0
 * means "no data": the generic 4..(15 - length of code) applies.
 */
struct phone_cc {
	const char *cc;
	const char *iso;
	unsigned char min;
	unsigned char max;
	unsigned char flags;
};

#define T0   PHONE_F_TRUNK0
#define NANP PHONE_F_NANP

/*
 * The ITU-T E.164 country calling codes in service (ITU-T E.164 Annex to
 * the Operational Bulletin), matched by longest prefix on the digits.
 *
 * Shared codes map to one main country.  phone_country() therefore says:
 *	+1	US	(also CA and the NANP members AG AI AS BB BM BS DM DO
 *			GD GU JM KN KY LC MP MS PR SX TC TT VC VG VI)
 *	+7	RU	(also KZ)
 *	+39	IT	(also VA, dialled as +39 06 698)
 *	+44	GB	(also GG, IM, JE)
 *	+47	NO	(also SJ)
 *	+61	AU	(also CC, CX)
 *	+64	NZ	(also PN)
 *	+212	MA	(also EH)
 *	+247	SH	(Ascension; "AC" is only reserved in ISO 3166-1)
 *	+262	RE	(also YT, TF)
 *	+290	SH	(also Tristan da Cunha, "TA")
 *	+358	FI	(also AX)
 *	+383	XK	(Kosovo has no ISO 3166-1 code; XK is the user-assigned
 *			code in common use)
 *	+500	FK	(also GS)
 *	+590	GP	(also BL, MF)
 *	+599	CW	(also BQ)
 *	+672	NF	(also AQ, Australian Antarctic bases)
 * Non-geographic codes (+800 +808 +870 +878 +881 +882 +883 +888 +979) are
 * valid but have no country: NULL.
 *
 * Not in the table, so rejected as "unknown country calling code": zone 0,
 * spare codes (259, 28x, 292-296, 384, 422, 424-429, 671, 684, 693-699,
 * 801-807, 809, 83x, 851, 854, 857-859, 871-877, 879, 884, 885, 887, 889,
 * 89x, 969, 978, 990, 999), and assigned codes with no numbers in service:
 * 379 (Vatican, which uses +39), 388 (ETNS, withdrawn) and 991 (ITPCS
 * trial).
 *
 * min..max are the possible NSN lengths of fixed-line and mobile numbers,
 * not of short service numbers, after libphonenumber's possible lengths
 * (transcribed by hand, not generated: check there before changing one).
 * Codes without data (0, 0) get the generic 4..(15 - length of code); no
 * number is ever longer than 15 digits with its code.
 *
 * T0 marks codes whose national trunk prefix is 0 and whose NSN never
 * starts with 0: a 0 written after the code ("+44 (0)7700 900123") is
 * dropped, and a second one is an error.  They are EG MA DZ GH NG RW ET KE
 * TZ UG ZM ZA NL BE FR IE FI BG MD AM UA RS ME HR SI BA MK RO CH SK AT GB
 * SE DE PE AR BR VE GP GF MQ RE MY AU ID PH NZ TH JP KR VN CN BD TW TR IN
 * PK AF LK LB JO SA AE IL IR.  Elsewhere a leading 0 is kept as part of
 * the NSN: Italy (+39 06 ...), San Marino, Cote d'Ivoire (+225 07 ...).
 */
/* clang-format off */
static const struct phone_cc phone_ccs[] = {
	/* Zone 1: North American Numbering Plan */
	{ "1",   "US", 10, 10, NANP },
	/* Zone 2: Africa and some islands */
	{ "20",  "EG",  8, 10, T0 },
	{ "211", "SS",  0,  0, 0 },
	{ "212", "MA",  9,  9, T0 },
	{ "213", "DZ",  8,  9, T0 },
	{ "216", "TN",  8,  8, 0 },
	{ "218", "LY",  0,  0, 0 },
	{ "220", "GM",  0,  0, 0 },
	{ "221", "SN",  9,  9, 0 },
	{ "222", "MR",  0,  0, 0 },
	{ "223", "ML",  0,  0, 0 },
	{ "224", "GN",  0,  0, 0 },
	{ "225", "CI", 10, 10, 0 },
	{ "226", "BF",  0,  0, 0 },
	{ "227", "NE",  0,  0, 0 },
	{ "228", "TG",  0,  0, 0 },
	{ "229", "BJ",  0,  0, 0 },
	{ "230", "MU",  0,  0, 0 },
	{ "231", "LR",  0,  0, 0 },
	{ "232", "SL",  0,  0, 0 },
	{ "233", "GH",  9,  9, T0 },
	{ "234", "NG",  8, 10, T0 },
	{ "235", "TD",  0,  0, 0 },
	{ "236", "CF",  0,  0, 0 },
	{ "237", "CM",  9,  9, 0 },
	{ "238", "CV",  0,  0, 0 },
	{ "239", "ST",  0,  0, 0 },
	{ "240", "GQ",  0,  0, 0 },
	{ "241", "GA",  0,  0, 0 },
	{ "242", "CG",  0,  0, 0 },
	{ "243", "CD",  0,  0, 0 },
	{ "244", "AO",  0,  0, 0 },
	{ "245", "GW",  0,  0, 0 },
	{ "246", "IO",  0,  0, 0 },
	{ "247", "SH",  0,  0, 0 },
	{ "248", "SC",  0,  0, 0 },
	{ "249", "SD",  0,  0, 0 },
	{ "250", "RW",  9,  9, T0 },
	{ "251", "ET",  9,  9, T0 },
	{ "252", "SO",  0,  0, 0 },
	{ "253", "DJ",  0,  0, 0 },
	{ "254", "KE",  7, 10, T0 },
	{ "255", "TZ",  9,  9, T0 },
	{ "256", "UG",  9,  9, T0 },
	{ "257", "BI",  0,  0, 0 },
	{ "258", "MZ",  0,  0, 0 },
	{ "260", "ZM",  9,  9, T0 },
	{ "261", "MG",  0,  0, 0 },
	{ "262", "RE",  9,  9, T0 },
	{ "263", "ZW",  0,  0, 0 },
	{ "264", "NA",  0,  0, 0 },
	{ "265", "MW",  0,  0, 0 },
	{ "266", "LS",  0,  0, 0 },
	{ "267", "BW",  0,  0, 0 },
	{ "268", "SZ",  0,  0, 0 },
	{ "269", "KM",  0,  0, 0 },
	{ "27",  "ZA",  9,  9, T0 },
	{ "290", "SH",  0,  0, 0 },
	{ "291", "ER",  0,  0, 0 },
	{ "297", "AW",  0,  0, 0 },
	{ "298", "FO",  0,  0, 0 },
	{ "299", "GL",  0,  0, 0 },
	/* Zones 3 and 4: Europe */
	{ "30",  "GR", 10, 10, 0 },
	{ "31",  "NL",  9,  9, T0 },
	{ "32",  "BE",  8,  9, T0 },
	{ "33",  "FR",  9,  9, T0 },
	{ "34",  "ES",  9,  9, 0 },
	{ "350", "GI",  8,  8, 0 },
	{ "351", "PT",  9,  9, 0 },
	{ "352", "LU",  4, 11, 0 },
	{ "353", "IE",  7,  9, T0 },
	{ "354", "IS",  7,  9, 0 },
	{ "355", "AL",  0,  0, 0 },
	{ "356", "MT",  8,  8, 0 },
	{ "357", "CY",  8,  8, 0 },
	{ "358", "FI",  5, 12, T0 },
	{ "359", "BG",  6,  9, T0 },
	{ "36",  "HU",  8,  9, 0 },
	{ "370", "LT",  8,  8, 0 },
	{ "371", "LV",  8,  8, 0 },
	{ "372", "EE",  7,  8, 0 },
	{ "373", "MD",  8,  8, T0 },
	{ "374", "AM",  8,  8, T0 },
	{ "375", "BY",  9,  9, 0 },
	{ "376", "AD",  0,  0, 0 },
	{ "377", "MC",  8,  9, 0 },
	{ "378", "SM",  0,  0, 0 },
	{ "380", "UA",  9,  9, T0 },
	{ "381", "RS",  0,  0, T0 },
	{ "382", "ME",  8,  8, T0 },
	{ "383", "XK",  0,  0, 0 },
	{ "385", "HR",  8,  9, T0 },
	{ "386", "SI",  8,  8, T0 },
	{ "387", "BA",  8,  9, T0 },
	{ "389", "MK",  8,  8, T0 },
	{ "39",  "IT",  6, 11, 0 },
	{ "40",  "RO",  9,  9, T0 },
	{ "41",  "CH",  9,  9, T0 },
	{ "420", "CZ",  9,  9, 0 },
	{ "421", "SK",  9,  9, T0 },
	{ "423", "LI",  7,  9, 0 },
	{ "43",  "AT",  4, 13, T0 },
	{ "44",  "GB",  9, 10, T0 },
	{ "45",  "DK",  8,  8, 0 },
	{ "46",  "SE",  7,  9, T0 },
	{ "47",  "NO",  8,  8, 0 },
	{ "48",  "PL",  9,  9, 0 },
	{ "49",  "DE",  5, 13, T0 },
	/* Zone 5: Central and South America */
	{ "500", "FK",  0,  0, 0 },
	{ "501", "BZ",  0,  0, 0 },
	{ "502", "GT",  0,  0, 0 },
	{ "503", "SV",  0,  0, 0 },
	{ "504", "HN",  0,  0, 0 },
	{ "505", "NI",  0,  0, 0 },
	{ "506", "CR",  0,  0, 0 },
	{ "507", "PA",  0,  0, 0 },
	{ "508", "PM",  0,  0, 0 },
	{ "509", "HT",  0,  0, 0 },
	{ "51",  "PE",  8,  9, T0 },
	{ "52",  "MX", 10, 10, 0 },
	{ "53",  "CU",  0,  0, 0 },
	{ "54",  "AR", 10, 11, T0 },
	{ "55",  "BR", 10, 11, T0 },
	{ "56",  "CL",  9,  9, 0 },
	{ "57",  "CO", 10, 10, 0 },
	{ "58",  "VE", 10, 10, T0 },
	{ "590", "GP",  9,  9, T0 },
	{ "591", "BO",  0,  0, 0 },
	{ "592", "GY",  0,  0, 0 },
	{ "593", "EC",  0,  0, 0 },
	{ "594", "GF",  9,  9, T0 },
	{ "595", "PY",  0,  0, 0 },
	{ "596", "MQ",  9,  9, T0 },
	{ "597", "SR",  0,  0, 0 },
	{ "598", "UY",  0,  0, 0 },
	{ "599", "CW",  0,  0, 0 },
	/* Zone 6: South-East Asia and Oceania */
	{ "60",  "MY",  8, 10, T0 },
	{ "61",  "AU",  9,  9, T0 },
	{ "62",  "ID",  7, 12, T0 },
	{ "63",  "PH",  8, 10, T0 },
	{ "64",  "NZ",  8, 10, T0 },
	{ "65",  "SG",  8,  8, 0 },
	{ "66",  "TH",  8,  9, T0 },
	{ "670", "TL",  0,  0, 0 },
	{ "672", "NF",  0,  0, 0 },
	{ "673", "BN",  0,  0, 0 },
	{ "674", "NR",  0,  0, 0 },
	{ "675", "PG",  0,  0, 0 },
	{ "676", "TO",  0,  0, 0 },
	{ "677", "SB",  0,  0, 0 },
	{ "678", "VU",  0,  0, 0 },
	{ "679", "FJ",  0,  0, 0 },
	{ "680", "PW",  0,  0, 0 },
	{ "681", "WF",  0,  0, 0 },
	{ "682", "CK",  0,  0, 0 },
	{ "683", "NU",  0,  0, 0 },
	{ "685", "WS",  0,  0, 0 },
	{ "686", "KI",  0,  0, 0 },
	{ "687", "NC",  0,  0, 0 },
	{ "688", "TV",  0,  0, 0 },
	{ "689", "PF",  0,  0, 0 },
	{ "690", "TK",  0,  0, 0 },
	{ "691", "FM",  0,  0, 0 },
	{ "692", "MH",  0,  0, 0 },
	/* Zone 7: Russia and Kazakhstan */
	{ "7",   "RU", 10, 10, 0 },
	/* Zone 8: East Asia and international services */
	{ "800", NULL,  8,  8, 0 },	/* International Freephone */
	{ "808", NULL,  8,  8, 0 },	/* International Shared Cost */
	{ "81",  "JP",  9, 10, T0 },
	{ "82",  "KR",  8, 10, T0 },
	{ "84",  "VN",  9, 10, T0 },
	{ "850", "KP",  0,  0, 0 },
	{ "852", "HK",  8,  8, 0 },
	{ "853", "MO",  8,  8, 0 },
	{ "855", "KH",  0,  0, 0 },
	{ "856", "LA",  0,  0, 0 },
	{ "86",  "CN",  9, 11, T0 },
	{ "870", NULL,  9,  9, 0 },	/* Inmarsat */
	{ "878", NULL,  0,  0, 0 },	/* Universal Personal Telecom. */
	{ "880", "BD",  6, 10, T0 },
	{ "881", NULL,  0,  0, 0 },	/* Global Mobile Satellite System */
	{ "882", NULL,  0,  0, 0 },	/* International Networks */
	{ "883", NULL,  0,  0, 0 },	/* International Networks */
	{ "886", "TW",  8,  9, T0 },
	{ "888", NULL,  0,  0, 0 },	/* OCHA disaster relief */
	/* Zone 9: West, Central and South Asia, Middle East */
	{ "90",  "TR", 10, 10, T0 },
	{ "91",  "IN", 10, 10, T0 },
	{ "92",  "PK",  9, 10, T0 },
	{ "93",  "AF",  9,  9, T0 },
	{ "94",  "LK",  9,  9, T0 },
	{ "95",  "MM",  0,  0, 0 },
	{ "960", "MV",  7,  7, 0 },
	{ "961", "LB",  7,  8, T0 },
	{ "962", "JO",  8,  9, T0 },
	{ "963", "SY",  0,  0, 0 },
	{ "964", "IQ",  0,  0, 0 },
	{ "965", "KW",  8,  8, 0 },
	{ "966", "SA",  8,  9, T0 },
	{ "967", "YE",  0,  0, 0 },
	{ "968", "OM",  8,  8, 0 },
	{ "970", "PS",  0,  0, 0 },
	{ "971", "AE",  8,  9, T0 },
	{ "972", "IL",  8,  9, T0 },
	{ "973", "BH",  8,  8, 0 },
	{ "974", "QA",  8,  8, 0 },
	{ "975", "BT",  0,  0, 0 },
	{ "976", "MN",  0,  0, 0 },
	{ "977", "NP",  0,  0, 0 },
	{ "979", NULL,  9,  9, 0 },	/* International Premium Rate */
	{ "98",  "IR", 10, 10, T0 },
	{ "992", "TJ",  0,  0, 0 },
	{ "993", "TM",  0,  0, 0 },
	{ "994", "AZ",  0,  0, 0 },
	{ "995", "GE",  0,  0, 0 },
	{ "996", "KG",  0,  0, 0 },
	{ "997", "KZ",  0,  0, 0 },	/* assigned, for future use */
	{ "998", "UZ",  0,  0, 0 },
};
/* clang-format on */

#undef T0
#undef NANP

static enum gc_err phone_fail(char *, size_t, const char *, ...)
    __attribute__((format(printf, 3, 4)));

/* Fill why (if any) with a formatted reason; always GC_EINVAL. */
static enum gc_err
phone_fail(char *why, size_t whysz, const char *fmt, ...)
{
	va_list ap;

	if (why != NULL && whysz > 0) {
		va_start(ap, fmt);
		vsnprintf(why, whysz, fmt, ap);
		va_end(ap);
	}
	return GC_EINVAL;
}

/* The calling code that is the longest prefix of digits, or NULL. */
static const struct phone_cc *
phone_cc_find(const char *digits, size_t n)
{
	const struct phone_cc *best = NULL;
	size_t i, len;

	for (i = 0; i < sizeof(phone_ccs) / sizeof(phone_ccs[0]); i++) {
		len = strlen(phone_ccs[i].cc);
		if (len > n || memcmp(digits, phone_ccs[i].cc, len) != 0)
			continue;
		if (best == NULL || len > strlen(best->cc))
			best = &phone_ccs[i];
	}
	return best;
}

/* Characters people put between digits; they carry no meaning. */
static int
phone_is_punct(char c)
{
	return c != '\0' && strchr(" \t\r\n\v\f-.()/", c) != NULL;
}

/*
 * Collect the digits of in into dig (dsz bytes, NUL-terminated) and their
 * count into *n.  *plus is set when a "+" comes before the first digit.
 */
static enum gc_err
phone_scan(const char *in, char *dig, size_t dsz, size_t *n, int *plus,
           char *why, size_t whysz)
{
	*n = 0;
	*plus = 0;
	for (; *in != '\0'; in++) {
		if (*in >= '0' && *in <= '9') {
			if (*n + 1 >= dsz)
				return phone_fail(why, whysz, "too long");
			dig[(*n)++] = *in;
		} else if (*in == '+') {
			if (*n > 0 || *plus)
				return phone_fail(why, whysz, "misplaced +");
			*plus = 1;
		} else if (!phone_is_punct(*in))
			return phone_fail(why, whysz, "invalid character");
	}
	dig[*n] = '\0';
	return GC_OK;
}

/*
 * Check the national significant number nsn (n digits) against the rules
 * of its calling code c.
 */
static enum gc_err
phone_nsn_check(const struct phone_cc *c, const char *nsn, size_t n, char *why,
                size_t whysz)
{
	size_t min, max, cclen = strlen(c->cc);

	min = c->min != 0 ? c->min : 4;
	max = c->min != 0 ? c->max : PHONE_DIGITS_MAX - cclen;
	if (max > PHONE_DIGITS_MAX - cclen)
		max = PHONE_DIGITS_MAX - cclen;
	if (n < min)
		return phone_fail(why, whysz, "too short for +%s", c->cc);
	if (n > max)
		return phone_fail(why, whysz, "too long for +%s", c->cc);
	if ((c->flags & PHONE_F_TRUNK0) && nsn[0] == '0')
		return phone_fail(why, whysz, "unexpected 0 after +%s", c->cc);
	/* NANP: area code and exchange code both start with 2-9. */
	if ((c->flags & PHONE_F_NANP) && (nsn[0] < '2' || nsn[3] < '2'))
		return phone_fail(why, whysz, "no such area or exchange code");
	return GC_OK;
}

/* See phone.h. */
enum gc_err
phone_normalize(const char *in, char out[PHONE_E164_MAX], char *why,
                size_t whysz)
{
	char dig[PHONE_SCAN_MAX + 1];
	const struct phone_cc *c;
	const char *p, *nsn;
	size_t n = 0, cclen, nsnlen;
	enum gc_err err;
	int plus = 0;

	/* Read all of in before writing out: they may be the same buffer. */
	if (in == NULL)
		err = phone_fail(why, whysz, "no digits");
	else
		err = phone_scan(in, dig, sizeof(dig), &n, &plus, why, whysz);
	out[0] = '\0';
	if (err != GC_OK)
		return err;
	p = dig;
	if (!plus && n >= 2 && dig[0] == '0' && dig[1] == '0') {
		p += 2;
		n -= 2;
	} else if (!plus && n > 0)
		return phone_fail(
		    why, whysz, "must start with + and a country calling code");
	if (n == 0)
		return phone_fail(why, whysz, "no digits");
	if ((c = phone_cc_find(p, n)) == NULL)
		return phone_fail(why, whysz, "unknown country calling code");
	cclen = strlen(c->cc);
	nsn = p + cclen;
	nsnlen = n - cclen;
	/* "+44 (0)7700 900123": drop the trunk prefix written by habit. */
	if ((c->flags & PHONE_F_TRUNK0) && nsnlen > 0 && nsn[0] == '0') {
		nsn++;
		nsnlen--;
	}
	if ((err = phone_nsn_check(c, nsn, nsnlen, why, whysz)) != GC_OK)
		return err;
	out[0] = '+';
	memcpy(out + 1, c->cc, cclen);
	memcpy(out + 1 + cclen, nsn, nsnlen);
	out[1 + cclen + nsnlen] = '\0';
	return GC_OK;
}

/* See phone.h. */
const char *
phone_country(const char *e164)
{
	const struct phone_cc *c;
	size_t n;

	if (e164 == NULL || e164[0] != '+')
		return NULL;
	e164++;
	for (n = 0; e164[n] >= '0' && e164[n] <= '9'; n++)
		continue;
	if ((c = phone_cc_find(e164, n)) == NULL)
		return NULL;
	return c->iso;
}
