/*
 * Destinations (Emarsys, Yotpo) as the delivery engine drives them.  A
 * destination client is a small state machine: the engine asks it what to
 * do next (send a request, wait, or stop with a result), performs the
 * request on the shared curl multi handle, and hands the response back.
 * This lets both destinations of one event run in parallel in one
 * process without threads.
 */
#ifndef GC_DEST_H
#define GC_DEST_H

#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "app_config.h"
#include "brand.h"
#include "buf.h"
#include "event.h"
#include "httpc.h"
#include "metrics.h"
#include "store.h"

enum dest_outcome {
	DEST_DELIVERED,
	DEST_WARNING, /* delivered, with something an operator should see */
	DEST_SKIPPED, /* nothing to do for this destination */
	DEST_RETRY,   /* retryable failure: try again later */
	DEST_FAILED,  /* permanent failure: an operator must act */
	DEST__MAX
};
extern const char *const dest_outcome_names[DEST__MAX];

enum job_next { JOB_REQUEST, JOB_WAIT, JOB_DONE };

/*
 * What a destination needs that outlives one call, owned by the engine
 * and handed to every job as j->env: the clock, the Yotpo award ledger,
 * the per-brand call throttle and the Emarsys token and id caches.  Each
 * entry has the meaning, arguments and results of the store function it
 * stands for (include/store.h), with ctx first; the engine's env is a
 * thin layer over the store (app/delivery/env.h), a test's is a fake.
 * Clients call nothing else that outlives a call.
 */
struct dest_env {
	void *ctx;

	/* Wall clock in milliseconds (store_now_ms): for what is stored
	 * (ledger and token times, retry_at_ms) or read from a remote. */
	int64_t (*now_ms)(void *ctx);
	/* Monotonic clock in milliseconds (mono.h): for every deadline and
	 * wait (deadline_ms, wait_until_ms, hold_until_ms, rate_reset_ms). */
	int64_t (*mono_ms)(void *ctx);

	/* The Yotpo award ledger: store_ledger_claim, _set, _sending,
	 * _miss and _release; GC_EEXISTS when owner lost the key. */
	enum gc_err (*ledger_claim)(void *ctx, const char *brand,
	                            const char *token, const char *action,
	                            const char *event_id, const char *email,
	                            int64_t now_ms, const struct lease *l,
	                            enum ledger_claim *res,
	                            struct ledger_view *view);
	enum gc_err (*ledger_set)(void *ctx, const char *brand,
	                          const char *token, const char *action,
	                          const char *owner, const char *state,
	                          int64_t sent_at_ms);
	enum gc_err (*ledger_sending)(void *ctx, const char *brand,
	                              const char *token, const char *action,
	                              const char *owner, const char *event_id,
	                              const char *email, int64_t now_ms);
	enum gc_err (*ledger_miss)(void *ctx, const char *brand,
	                           const char *token, const char *action,
	                           const char *owner, int64_t now_ms,
	                           int *misses);
	enum gc_err (*ledger_release)(void *ctx, const char *brand,
	                              const char *token, const char *action,
	                              const char *owner);

	/*
	 * ledger_claim, and throttle_slot for brand, at once
	 * (store_ledger_claim_paced: one round trip on PostgreSQL).  NULL:
	 * the job claims, then takes its slot.
	 */
	enum gc_err (*ledger_claim_paced)(
	    void *ctx, const char *brand, const char *token, const char *action,
	    const char *event_id, const char *email, int64_t now_ms,
	    const struct lease *l, enum ledger_claim *res,
	    struct ledger_view *view, int max_rps, int64_t horizon_ms,
	    int64_t *slot_ms, int *reserved);

	/* The next call slot of brand (store_throttle_slot). */
	enum gc_err (*throttle_slot)(void *ctx, const char *brand, int max_rps,
	                             int64_t now_ms, int64_t horizon_ms,
	                             int64_t *slot_ms, int *reserved);

	/*
	 * The Emarsys access token of brand and client id, in clear (the
	 * env seals what it stores): token_get copies it into token (size
	 * n; cleanse it after use) with its expiry, GC_ENOTFOUND when none
	 * is cached or it does not open or fit; token_put caches one
	 * (replacing any); token_forget drops the cached one of brand and
	 * client id if it is still token.
	 */
	enum gc_err (*token_get)(void *ctx, const char *brand,
	                         const char *client_id, char *token, size_t n,
	                         int64_t *expires_ms);
	enum gc_err (*token_put)(void *ctx, const char *brand,
	                         const char *client_id, const char *token,
	                         int64_t expires_ms);
	enum gc_err (*token_forget)(void *ctx, const char *brand,
	                            const char *client_id, const char *token);
	/*
	 * The lease to fetch that token (store_em_token_lease, _unlease),
	 * so one delivery at a time asks the token endpoint; under the
	 * name "ids:<client id>", to resolve the field and event ids.
	 * GC_OK when owner took it until until_ms, GC_EEXISTS when another
	 * holds it (until *held_until_ms).  NULL: no leases, every job
	 * fetches and resolves.
	 */
	enum gc_err (*token_lease)(void *ctx, const char *brand,
	                           const char *client_id, const char *owner,
	                           int64_t now_ms, int64_t until_ms,
	                           int64_t *held_until_ms);
	enum gc_err (*token_unlease)(void *ctx, const char *brand,
	                             const char *client_id, const char *owner);

	/*
	 * Emarsys field and event ids by name (store_em_ids_get, _id_put,
	 * _id_forget): ids_get fills the out of each of ids[] cached for
	 * scope, in one look-up, and leaves the others as they were.
	 */
	enum gc_err (*ids_get)(void *ctx, const char *scope, struct em_id *ids,
	                       size_t n);
	enum gc_err (*id_put)(void *ctx, const char *scope, const char *kind,
	                      const char *name, const char *id);
	enum gc_err (*id_forget)(void *ctx, const char *scope,
	                         const char *kind);
	/*
	 * token_get and ids_get at once (store_em_cached_get: one round
	 * trip on PostgreSQL): the token's result, ids[] filled as ids_get
	 * fills them.  NULL: the job calls the two in turn.
	 */
	enum gc_err (*cached_get)(void *ctx, const char *brand,
	                          const char *client_id, char *token, size_t n,
	                          int64_t *expires_ms, const char *scope,
	                          struct em_id *ids, size_t nids);
};

/* One delivery (event x destination) being worked on. */
struct job {
	const struct dest_ops *ops;
	enum m_dest dest;
	const struct app_config *cfg;
	const struct dest_env *env; /* borrowed from the engine */
	const char *event_id;
	const struct gc_event *ev;
	const struct brand *brand;
	const json_t *payload;
	int64_t deadline_ms; /* monotonic: finish (or give up) by then */
	long max_wait_ms;    /* longest wait in place (0: up to the deadline) */
	const struct lease *lease; /* this run's lease (owner for the store) */
	/* How far earlier runs got (the client's word, "" when nowhere);
	 * the client updates it, and it is stored with the result. */
	char progress[32];

	/* The request to send (JOB_REQUEST); body owned by the client. */
	struct http_req req;
	const char *step;      /* step name recorded with the attempt */
	int64_t wait_until_ms; /* JOB_WAIT: resume then (monotonic) */

	/* Filled by the client from each response, for the attempt row. */
	char reply_code[24];
	char excerpt[320];

	/* Final result (JOB_DONE). */
	enum dest_outcome outcome;
	char reason[300];
	char warning[200];
	int64_t retry_at_ms;   /* DEST_RETRY: not before (0 = schedule);
	                        * wall clock: it is stored */
	int deferred;          /* DEST_RETRY that is no failure: no run used */
	int64_t hold_until_ms; /* a 429: hold the whole account until then
	                        * (monotonic) */
	/* What the last reply said of the account's rate limit (0/-1: not
	 * said): calls per minute, calls left, when the window resets
	 * (monotonic). */
	int rate_limit;
	int rate_remaining;
	int64_t rate_reset_ms;

	void *state; /* client-private */
};

struct dest_ops {
	const char *name;
	/*
	 * Why this event needs nothing from this destination (writes a
	 * reason into buf and returns 1), or 0 when there is work.  The
	 * engine has already checked that the brand configures and enables
	 * the destination.
	 */
	int (*skip)(const struct gc_event *ev, const struct brand *b, char *buf,
	            size_t n);
	/* Prepare; may set j->outcome and return JOB_DONE at once. */
	enum job_next (*start)(struct job *j);
	/* What next: fill j->req (JOB_REQUEST), j->wait_until_ms or stop. */
	enum job_next (*next)(struct job *j);
	/* The response to j->req (any result, including transport errors). */
	void (*response)(struct job *j, const struct http_resp *r);
	/* Free j->state. */
	void (*finish)(struct job *j);

	/*
	 * Batching, in the dispatcher (NULL: never batched).  After next()
	 * returned JOB_REQUEST: 1 when j->req may be merged with other jobs'
	 * requests of the same key (written to key), with *member who it is
	 * for (one member once per batch; borrowed from j), *item the part
	 * it adds (new reference) and *limit the most bytes a merged body
	 * may have; 0 when it goes alone.
	 */
	int (*batch_item)(struct job *j, char *key, size_t keysz,
	                  const char **member, json_t **item, size_t *limit);
	/*
	 * The merged request of jobs (all of one key; items in the same
	 * order) into req, its body in body.  GC_OK or an error (then each
	 * job is sent alone).
	 */
	enum gc_err (*batch_request)(struct job *first, json_t *items,
	                             struct buf *body, struct http_req *req);
	/*
	 * Each job's share of the merged reply r, in each[i] (initialised;
	 * the caller frees them).  0 when the reply cannot be attributed to
	 * the jobs: each is then sent alone (with the batch's reply code in
	 * its reply_code, for the attempt).
	 */
	int (*batch_split)(struct job **jobs, int n, const struct http_resp *r,
	                   struct http_resp *each);
};

extern const struct dest_ops emarsys_ops;
extern const struct dest_ops yotpo_ops;

/* Set the final result of j (printf-style reason); returns JOB_DONE. */
enum job_next job_done(struct job *j, enum dest_outcome o, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Give the delivery back without a failure (throttled, another run holds
 * the award, the account is held): it runs again at at_ms (wall clock:
 * it is stored) without using up a run of the retry schedule.  Returns
 * JOB_DONE.
 */
enum job_next job_defer(struct job *j, int64_t at_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Whether j may wait in place until until_ms (monotonic) (1), or should
 * hand the delivery back instead (0): waits end before the deadline, and
 * in the dispatcher are short, so a throttled brand holds no slot.
 */
int job_can_wait(const struct job *j, int64_t until_ms);
/* The latest (monotonic) time job_can_wait allows now. */
int64_t job_wait_horizon(const struct job *j);
/*
 * The monotonic time of wall-clock time wall_ms (a stored time, a
 * remote's reset), converted now: what a wait or hold until then is set
 * to, so that a later step of the wall clock does not move it.
 */
int64_t job_mono_at(const struct job *j, int64_t wall_ms);
/* The reverse: the wall-clock time of mono_ms, for what is stored. */
int64_t job_wall_at(const struct job *j, int64_t mono_ms);

/* Copy a short, escaped excerpt of a response body into j->excerpt. */
void job_excerpt(struct job *j, const struct http_resp *r);

#endif
