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
#include "mono.h"
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
	int64_t now = mono_ms();

	if (eng->cfg->delivery_sync_budget_ms <= 0)
		return 0;
	for (int d = 0; d < M_DEST__MAX; d++)
		if (want[d] && limits_circuit(b->slug, (enum m_dest)d, now) ==
		                   CIRCUIT_OPEN)
			return 0;
	return limits_sync_enter(eng->cfg->delivery_sync_workers);
}

/* What intake makes of an event for each destination, worked out once. */
struct plan {
	struct delivery_init di[M_DEST__MAX];
	char reasons[M_DEST__MAX][300];
	int want[M_DEST__MAX];
	int any; /* some destination has work */
};

static void
intake_plan(const struct gc_event *ev, const struct brand *b, struct plan *p)
{
	p->any = 0;
	for (int d = 0; d < M_DEST__MAX; d++) {
		int skip = plan_skip((enum m_dest)d, ev, b, p->reasons[d],
		                     sizeof(p->reasons[d]));
		p->di[d].destination = m_dest_names[d];
		p->di[d].status = skip ? "skipped" : "pending";
		p->di[d].reason = skip ? p->reasons[d] : NULL;
		p->want[d] = !skip;
		p->any |= !skip;
	}
}

/*
 * Record the event; pending deliveries leased to l (until 0: unleased,
 * and handed to every host's dispatcher).
 */
static enum gc_err
engine_record(struct engine *eng, const char *webhook_id,
              const struct gc_event *ev, const struct plan *p,
              const struct lease *l)
{
	json_t *body;
	char *text;
	enum gc_err err;

	if ((body = event_to_json(ev)) == NULL ||
	    (text = jsonutil_compact(body)) == NULL) {
		json_decref(body);
		return GC_ENOMEM;
	}
	json_decref(body);
	err = store_event_insert(eng->st, webhook_id, ev->brand_slug,
	                         ev_kind_names[ev->kind], text, p->di,
	                         M_DEST__MAX, l, p->any && l->until_ms == 0);
	free(text);
	if (err == GC_OK) {
		metrics_event(ev->kind, M_EV_ACCEPTED);
		for (int d = 0; d < M_DEST__MAX; d++)
			if (!p->want[d])
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
	struct plan p;
	struct lease l;
	enum gc_err err;
	char why[256];
	int sync, ok;

	*outcome = NULL;
	intake_plan(ev, b, &p);
	sync = p.any && engine_sync_ok(eng, b, p.want);
	memset(&l, 0, sizeof(l));
	if (sync)
		engine_lease(eng, &l, eng->cfg->delivery_sync_budget_ms);
	err = engine_record(eng, webhook_id, ev, &p, &l);
	/* Deliver nothing from a record that may not last (store.h). */
	if (err == GC_OK && store_kept(eng->st, why, sizeof(why)) != GC_OK)
		err = GC_ESTORE;
	if (err == GC_OK && sync)
		engine_sync(eng, webhook_id, ev, b, p.want, &l);
	if (sync)
		limits_sync_leave();
	if (err == GC_EEXISTS)
		return engine_outcome(eng, webhook_id, 1, outcome, status);
	if (err != GC_OK)
		return err;
	/* Not delivered here: the answer is what was just recorded. */
	if (!sync && (*outcome = store_event_outcome_new(
	                  webhook_id, p.di, M_DEST__MAX, &ok)) != NULL)
		*status = ok ? 200 : 202;
	else if (engine_outcome(eng, webhook_id, 0, outcome, status) != GC_OK) {
		/* Recorded: gcrelay owns it now, whatever happens next. */
		*outcome = json_pack("{s:s, s:s}", "id", webhook_id, "status",
		                     "accepted");
		*status = 202;
	}
	/* The answer shows it pending; now this host's dispatcher may
	 * take it (the others were woken as it was recorded). */
	if (!sync && p.any)
		limits_wake();
	return *outcome != NULL ? GC_OK : GC_ENOMEM;
}
