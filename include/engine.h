/*
 * The delivery engine: records accepted events with one delivery per
 * destination, runs the destinations in parallel within the time budget,
 * records every attempt, schedules retries, and re-runs due deliveries for
 * the retrier and for operators.
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

/* One per process, after fork.  NULL on failure. */
struct engine *engine_alloc(const struct app_config *cfg, struct store *st);
void engine_free(struct engine *eng);

/*
 * Record the event under webhook_id and deliver it.  On success *outcome
 * is the response document (new reference) and *status 200 or 202.  A
 * webhook id seen before returns its stored outcome with "duplicate":
 * true and sends nothing.  GC_ESTORE when the event could not be recorded
 * (nothing was sent).
 */
enum gc_err engine_submit(struct engine *eng, const char *webhook_id,
                          const struct gc_event *ev, const struct brand *b,
                          json_t **outcome, int *status);

/*
 * Run the deliveries of the one event that is due first (retrier).
 * Returns 1 when an event ran, 0 when nothing was due.
 */
int engine_run_due(struct engine *eng);

/*
 * Make the failed or dead deliveries of an event due now (operators).
 * GC_ENOTFOUND when there is no such event.
 */
enum gc_err engine_redeliver(struct engine *eng, const char *event_id,
                             int *count);

/* The http client of this process (preflight checks use it). */
struct httpc *engine_httpc(struct engine *eng);

#endif
