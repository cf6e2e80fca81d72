/*
 * Inbound Gocertify events: parsing, validation and normalisation of the
 * JSON body of POST /v1/events (see DESIGN.md, Inbound), and the normalised
 * form stored in the ledger.
 */
#ifndef GC_EVENT_H
#define GC_EVENT_H

#include <stddef.h>
#include <time.h>

#include <jansson.h>

#include "gc_err.h"

enum ev_kind { EV_CONSENT_INTENT, EV_OFFER_CLAIMED, EV__MAX };

/* "consent_intent", "offer_claimed". */
extern const char *const ev_kind_names[EV__MAX];

/* Tri-state for optional booleans. */
enum ev_opt { EV_OPT_UNSET = -1, EV_OPT_NO = 0, EV_OPT_YES = 1 };

/*
 * A validated event.  Every string is owned by the struct (freed by
 * event_fini); optional strings are NULL when absent, never "".
 */
struct gc_event {
	enum ev_kind kind;
	char *brand_slug;
	char *email;  /* trimmed, lower-cased, or NULL */
	char *mobile; /* E.164, or NULL */
	/* Resolved opt-ins: EV_OPT_YES means "set the opt-in field to 1". */
	enum ev_opt email_opt_in;
	enum ev_opt sms_opt_in;
	char *campaign_slug; /* NULL when absent */
	char *type;          /* "Code" or "Deal" */
	char *pending_group_type;
	char *pending_group_parent;
	char *pending_group_child;
	char *token;
	char *subid;
	char *brand_country; /* ISO 3166-1 alpha-2, upper case */
	char *user_country; /* given, or derived from the mobile; may be NULL */
	long long campaign_id;
	char *campaign_title;
	char *campaign_url;
	char *iframe_parent_url;
	time_t occurred_at; /* UTC seconds */
};

/* Why an event was rejected: the field (or "" for the body) and reason. */
struct ev_problem {
	char field[48];
	char detail[200];
};

/*
 * Parse and validate a raw JSON body.  now is the receive time (default
 * for occurred_at).  On success ev is filled (release with event_fini).
 * GC_EINVAL with prob filled when the body is malformed or a field is
 * missing or invalid; ev is then empty.  GC_ENOMEM on allocation failure.
 */
enum gc_err event_parse(const char *body, size_t len, time_t now,
                        struct gc_event *ev, struct ev_problem *prob);

/* Free what ev owns and zero it. */
void event_fini(struct gc_event *ev);

/*
 * The normalised event as a JSON object (all fields, for the ledger);
 * new reference, NULL on allocation failure.
 */
json_t *event_to_json(const struct gc_event *ev);

/*
 * Rebuild an event from event_to_json output (ledger -> dispatcher).
 * GC_EINVAL when the object is not a stored event.
 */
enum gc_err event_from_json(const json_t *obj, struct gc_event *ev);

#endif
