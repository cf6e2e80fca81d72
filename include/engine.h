/*
 * The delivery engine: records accepted events with one delivery per
 * destination, delivers them at intake within delivery.sync_budget_ms or
 * hands them to the dispatcher, which keeps many deliveries in flight on
 * one curl multi handle.  Every attempt is recorded; retries follow the
 * schedule; every account's limits and circuits are honoured.
 */
#ifndef GC_ENGINE_H
#define GC_ENGINE_H

#include <jansson.h>

#include "app_config.h"
#include "brand.h"
#include "event.h"
#include "gc_err.h"

struct store;
struct engine;

/*
 * One per process, after fork; dispatcher is 1 in the dispatcher (many
 * transfers at once, short in-place waits, woken by limits_wake).  NULL
 * on failure.
 */
struct engine *engine_alloc(const struct app_config *cfg, struct store *st,
                            int dispatcher);
void engine_free(struct engine *eng);

/*
 * Record the event under webhook_id and deliver it within
 * delivery.sync_budget_ms, or, when the budget, the busy workers or an
 * open circuit say no, leave it to the dispatcher (woken at once).  What
 * the budget cuts short is handed to the dispatcher too.  On success
 * *outcome is the response document (new reference) and *status 200 or
 * 202.  A
 * webhook id seen before returns its stored outcome with "duplicate":
 * true and sends nothing.  GC_ESTORE when the event could not be recorded
 * (nothing was sent).
 */
enum gc_err engine_submit(struct engine *eng, const char *webhook_id,
                          const struct gc_event *ev, const struct brand *b,
                          json_t **outcome, int *status);

/*
 * Dispatcher: claim due deliveries for up to max_jobs more jobs and start
 * them.  Returns how many events were claimed, -1 on a store error.
 */
int engine_claim(struct engine *eng, int max_jobs);

/*
 * Drive the jobs in hand: advance them, wait up to max_wait_ms for the
 * next response or wake-up, store what finished.  Returns 1 when woken
 * by limits_wake or (dispatcher) by another host's store_wake_others.
 */
int engine_step(struct engine *eng, long max_wait_ms);

/* Jobs in hand (each one delivery of one event). */
int engine_jobs(const struct engine *eng);

/*
 * Dispatcher: how many more jobs it may take now.  Up to
 * delivery.concurrency requests are on the wire at once; jobs waiting
 * for their account's pacing slot or in a batch hold no transfer, so it
 * keeps up to ENGINE_HAND_PER_TRANSFER times that many jobs in hand.
 */
#define ENGINE_HAND_PER_TRANSFER 8
int engine_room(const struct engine *eng);

/*
 * Make the failed, dead or waiting deliveries of an event due now for the
 * dispatcher (operators).  GC_ENOTFOUND when there is no such event.
 */
enum gc_err engine_redeliver(struct engine *eng, const char *event_id,
                             int *count);

/* The http client of this process (preflight checks use it). */
struct httpc *engine_httpc(struct engine *eng);

#endif
