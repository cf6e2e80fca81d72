/*
 * Intake (engine.h, engine_submit): record an event, then deliver it here
 * within delivery.sync_budget_ms when a sync slot is free and no circuit
 * is open, or hand it to the dispatcher.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery_limits.h"
#include "engine_priv.h"
#include "jsonutil.h"
#include "log.h"
#include "store.h"

/* Drive er (the only erun of an intake worker) until it is finished. */
static void
engine_drive_one(struct engine *eng, const struct erun *er)
{
	for (;;) {
		const struct erun *a = eng->active;
		while (a != NULL && a != er)
			a = a->next;
		if (a == NULL)
			return;
		engine_step(eng, 1000);
	}
}

static enum gc_err
engine_outcome(struct engine *eng, const char *id, int duplicate,
               json_t **outcome, int *status)
{
	int ok = 0;
	enum gc_err err = store_event_outcome(eng->st, id, outcome, &ok);

	if (err != GC_OK)
		return err;
	if (duplicate)
		json_object_set_new(*outcome, "duplicate", json_true());
	*status = ok ? 200 : 202;
	return GC_OK;
}

/*
 * Whether intake may deliver now: a budget is set, no wanted destination
 * has an open circuit (a half-open one lets this call be the probe), and
 * a sync slot is free (taken on 1).
 */
static int
engine_sync_ok(struct engine *eng, const struct brand *b,
               const int want[M_DEST__MAX])
{
	int64_t now = store_now_ms();

	if (eng->cfg->delivery_sync_budget_ms <= 0)
		return 0;
	for (int d = 0; d < M_DEST__MAX; d++)
		if (want[d] && limits_circuit(b->slug, (enum m_dest)d, now) ==
		                   CIRCUIT_OPEN)
			return 0;
	return limits_sync_enter(eng->cfg->delivery_sync_workers);
}

/* Record the event; pending deliveries leased to l (until 0: unleased). */
static enum gc_err
engine_record(struct engine *eng, const char *webhook_id,
              const struct gc_event *ev, const struct brand *b,
              int want[M_DEST__MAX], const struct lease *l)
{
	struct delivery_init di[M_DEST__MAX];
	char reasons[M_DEST__MAX][300];
	json_t *body;
	char *text;
	enum gc_err err;

	for (int d = 0; d < M_DEST__MAX; d++) {
		int skip = plan_skip((enum m_dest)d, ev, b, reasons[d],
		                     sizeof(reasons[d]));
		di[d].destination = m_dest_names[d];
		di[d].status = skip ? "skipped" : "pending";
		di[d].reason = skip ? reasons[d] : NULL;
		want[d] = !skip;
	}
	if ((body = event_to_json(ev)) == NULL ||
	    (text = jsonutil_compact(body)) == NULL) {
		json_decref(body);
		return GC_ENOMEM;
	}
	json_decref(body);
	err = store_event_insert(eng->st, webhook_id, ev->brand_slug,
	                         ev_kind_names[ev->kind], text, di, M_DEST__MAX,
	                         l);
	free(text);
	if (err == GC_OK) {
		metrics_event(ev->kind, M_EV_ACCEPTED);
		for (int d = 0; d < M_DEST__MAX; d++)
			if (!want[d])
				metrics_delivery((enum m_dest)d, M_OUT_SKIPPED);
	} else if (err == GC_EEXISTS)
		metrics_event(ev->kind, M_EV_DUPLICATE);
	return err;
}

/* Deliver a recorded event here and now, within the sync budget. */
static void
engine_sync(struct engine *eng, const char *id, const struct gc_event *ev,
            const struct brand *b, const int want[M_DEST__MAX],
            const struct lease *l)
{
	struct erun *er = calloc(1, sizeof(*er));

	if (er == NULL) {
		/* Recorded and leased: it runs when the lease expires. */
		log_errorx("out of memory; %s waits for its lease to expire",
		           id);
		return;
	}
	snprintf(er->id, sizeof(er->id), "%s", id);
	er->ev = ev;
	er->b = b;
	er->lease = *l;
	er->sync = 1;
	erun_plan(eng, er, want, eng->cfg->delivery_sync_budget_ms);
	engine_drive_one(eng, er);
}

/* See engine.h. */
enum gc_err
engine_submit(struct engine *eng, const char *webhook_id,
              const struct gc_event *ev, const struct brand *b,
              json_t **outcome, int *status)
{
	int want[M_DEST__MAX] = {0}, sync, any = 0;
	struct lease l;
	enum gc_err err;

	*outcome = NULL;
	for (int d = 0; d < M_DEST__MAX; d++) {
		char why[300];
		want[d] = !plan_skip((enum m_dest)d, ev, b, why, sizeof(why));
		any |= want[d];
	}
	sync = any && engine_sync_ok(eng, b, want);
	memset(&l, 0, sizeof(l));
	if (sync)
		engine_lease(eng, &l, eng->cfg->delivery_sync_budget_ms);
	err = engine_record(eng, webhook_id, ev, b, want, &l);
	if (err == GC_OK && sync)
		engine_sync(eng, webhook_id, ev, b, want, &l);
	if (sync)
		limits_sync_leave();
	if (err == GC_EEXISTS)
		return engine_outcome(eng, webhook_id, 1, outcome, status);
	if (err != GC_OK)
		return err;
	if (engine_outcome(eng, webhook_id, 0, outcome, status) != GC_OK) {
		/* Recorded: gcrelay owns it now, whatever happens next. */
		*outcome = json_pack("{s:s, s:s}", "id", webhook_id, "status",
		                     "accepted");
		*status = 202;
	}
	/* The answer shows it pending; now the dispatcher may take it. */
	if (!sync && any)
		limits_wake();
	return *outcome != NULL ? GC_OK : GC_ENOMEM;
}
