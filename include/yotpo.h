/*
 * Yotpo Loyalty API v2 client (reference/yotpo-api.md): requests and
 * replies of the Custom Action award and of the history check that
 * reconciles an award whose outcome is unknown.
 */
#ifndef GC_YOTPO_H
#define GC_YOTPO_H

#include <stddef.h>

#include <jansson.h>

#include "app_config.h"
#include "brand.h"
#include "httpc.h"

/*
 * The shopper-readable history title carrying the award's reference:
 * "<campaign title> (ref <token>)", the title cut to at most 80 bytes on
 * a UTF-8 character boundary.  Writes into out (size n).
 */
void yotpo_history_title(const char *campaign_title, const char *token,
                         char *out, size_t n);

/*
 * Whether a GET /customers reply (parsed) shows an award with this
 * reference ("(ref <token>)", exactly) in any string of its
 * history_items: 1 when it does, 0 when not or when there is no history.
 */
int yotpo_history_has(const json_t *customer, const char *token);

/*
 * Preflight for operators: check the brand's GUID and API key with
 * GET /campaigns and append {"check","ok","detail"} objects to checks.
 */
void yotpo_preflight(const struct app_config *cfg, const struct brand *b,
                     struct httpc *h, json_t *checks);

#endif
