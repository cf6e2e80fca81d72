/*
 * The Emarsys destination's state, shared by emarsys.c (the plan and the
 * replies) and emarsys_batch.c (merging upserts and triggers).
 */
#ifndef GC_EMARSYS_PRIV_H
#define GC_EMARSYS_PRIV_H

#include "buf.h"
#include "dest.h"

enum em_req {
	EM_NONE,
	EM_TOKEN,
	EM_LIST_FIELDS,
	EM_CREATE_FIELD,
	EM_LIST_EVENTS,
	EM_CREATE_EVENT,
	EM_UPSERT,
	EM_TRIGGER,
	EM__MAX
};

struct em_field {
	char name[96];
	char id[32]; /* "" until known */
	int create_tried;
};

struct em_state {
	char scope[320]; /* brand:client_id, the cache scope */
	char token[4096];
	char auth[4200]; /* "Authorization: Bearer ..." */
	char userpwd[1100];
	int reauths;
	int leased;     /* holds the token fetch lease (j->lease->owner) */
	int ids_leased; /* holds the lease to resolve field and event ids */

	int want_sms;
	char sms_id[32];
	struct em_field vf[2];
	int nvf;
	int fields_listed, field_lists;

	char ev_name[48];
	char ev_id[32];
	int ev_create_tried, events_listed, event_lists;

	char key_id[24];
	const char *key_value;
	char trigger_id[48];
	int upserted, reresolved, reupserted, ev_reresolved;

	enum em_req inflight;
	int inflight_field;
	int finished;
	struct buf body;
	json_t *sent; /* the body as JSON (batches take their item from it) */
};

/* The batching hooks of emarsys_ops (emarsys_batch.c). */
int em_batch_item(struct job *j, char *key, size_t keysz, const char **member,
                  json_t **item, size_t *limit);
enum gc_err em_batch_request(struct job *first, json_t *items, struct buf *body,
                             struct http_req *req);
int em_batch_split(struct job **jobs, int n, const struct http_resp *r,
                   struct http_resp *each);

#endif
