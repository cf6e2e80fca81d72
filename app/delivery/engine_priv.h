/*
 * The engine's internals, shared by engine.c and batch.c.
 */
#ifndef GC_ENGINE_PRIV_H
#define GC_ENGINE_PRIV_H

#include <stdint.h>

#include <jansson.h>

#include "dest.h"
#include "engine.h"
#include "store.h"

#define BATCH_LINGER_MS  20    /* a batch waits this long for members */
#define BATCH_HORIZON_MS 10000 /* and up to this long for its pacing slot */
#define MIN_REQUEST_MS   200   /* no request starts with less time left */

/* What a transfer's owner is: the first member of a run and a batch. */
struct wire {
	int batch;
};

struct erun;

/* An attempt kept until the run's result is stored with it. */
struct attempt_rec {
	struct attempt a; /* first: a record is its attempt */
	char step[32];
	char outcome[16];
	char reply_code[24];
	char excerpt[320];
};

/* One job and its place on the wire. */
struct run {
	struct wire w;
	struct job job;
	struct erun *er;
	int active;    /* still has work */
	int in_flight; /* a request is on the wire, or in a batch */
	int capped;    /* its timeout was cut to the deadline */
	int ready;     /* j->req is built: send it at j->wait_until_ms */
	int paced;     /* it holds its pacing slot */
	int solo;      /* never batch it again (a batch reply failed it) */
	int queued;    /* ready, waiting for a free transfer (dispatcher) */
	/* Times in runs and batches are monotonic (mono.h). */
	int64_t t0_ms;     /* when its request left */
	char account[200]; /* whose limits apply: "emarsys:<client id>" */
	/* This run's calls, stored with its result: each points at the
	 * attempt of a struct attempt_rec (its first member). */
	const struct attempt **atts;
	size_t natts, catts;
};

/* One event's deliveries in progress. */
struct erun {
	struct erun *next;
	char id[272];
	const struct gc_event *ev;
	const struct brand *b;
	struct gc_event ev_own; /* when the engine loaded them (reruns) */
	struct brand b_own;
	int owns;
	json_t *payload;
	struct lease lease;
	int64_t received_ms; /* 0: the run right after intake */
	int sync;         /* intake: what is left at the budget is deferred */
	json_t *progress; /* {destination: progress} of a claimed event */
	struct run runs[M_DEST__MAX];
	int n;
	int replan[M_DEST__MAX];
};

/* Requests of one key merged into one call (dispatcher). */
struct batch {
	struct wire w;
	struct batch *next;
	char key[256];
	struct run **runs;
	const char **members; /* no member twice in one batch */
	int n, cap;
	json_t *items;
	size_t bytes, limit;
	int64_t flush_at;
	int paced; /* holds its pacing slot (flush_at) */
	int sent;
	struct buf body;
	struct http_req req;
	int64_t t0_ms;
};

struct engine {
	const struct app_config *cfg;
	struct store *st;
	struct dest_env *env; /* owned: what jobs get as j->env */
	struct httpc *http;
	long long seq;         /* for lease owners */
	struct erun *active;   /* eruns with jobs left */
	int jobs;              /* jobs of the active eruns */
	int dispatcher;        /* this process is a dispatcher */
	struct batch *batches; /* open or on the wire */
	int queued;            /* runs waiting for a free transfer */
	int64_t holds_read_at; /* monotonic: other hosts' holds last read */
};

/* engine.c */
/* A fresh lease: unique owner, until budget_ms plus slack. */
void engine_lease(struct engine *eng, struct lease *l, long budget_ms);
/*
 * Whether destination d has work for this event: 0 when it does, else 1
 * with the skip reason in buf.
 */
int plan_skip(enum m_dest d, const struct gc_event *ev, const struct brand *b,
              char *buf, size_t n);
/*
 * Set up one job per wanted destination (each already leased to
 * er->lease) with a deadline budget_ms away, and add the erun to the
 * engine's active list.
 */
void erun_plan(struct engine *eng, struct erun *er, const int want[M_DEST__MAX],
               long budget_ms);

/* run.c */
/* Ask a job what it wants next and act on it. */
void run_advance(struct engine *eng, struct run *r);
/*
 * Note the attempt r made (or its share of a batch): logged and counted
 * now, stored with the run's result.
 */
void record_attempt(struct engine *eng, struct run *r,
                    const struct http_resp *resp);
void run_give_up(struct run *r, const char *why, int64_t defer_at);
int64_t run_blocked_until(struct engine *eng, const struct run *r, int64_t now);
/*
 * Reserve the pacing slot of r's account within horizon ms of now: 1 and
 * *slot when it may go, or 0 and when to ask again (limits_pace; in the
 * store when hosts share a PostgreSQL store).
 */
int run_pace_slot(struct engine *eng, const struct run *r, int64_t now,
                  int64_t horizon, int64_t *slot);
void run_response(struct engine *eng, struct run *r,
                  const struct http_resp *resp, int feed);
void run_feed_limits(struct engine *eng, struct run *r,
                     const struct http_resp *rp);

/* batch.c */
/* Put r's request into a batch: 1 when parked, 0 when it goes alone. */
int batch_park(struct engine *eng, struct run *r);
/* Send the batches that are due; returns ms until the next is (or max). */
long batch_flush(struct engine *eng, long max_ms);
/* A merged call's reply. */
void batch_response(struct engine *eng, struct batch *b,
                    const struct http_resp *resp);
/* Free every batch (the engine is going away). */
void batch_free_all(struct engine *eng);

#endif
