/*
 * Route handlers.  Each fills req's response; none touches libfcgi.
 */
#ifndef GC_HANDLERS_H
#define GC_HANDLERS_H

#include "request.h"

/* router.c: match req against the route table and run its handler. */
void router_dispatch(struct request *req);
/* Route labels, indexed by route_index, for metrics. */
const char *const *router_labels(int *n);

/* health.c */
void health_get(struct request *req);
/* metrics.c (handler) */
void metrics_get(struct request *req);

/* events.c */
void events_post(struct request *req);

/* admin.c: authentication happens in the router before these run. */
void admin_brands_list(struct request *req);
void admin_brand_get(struct request *req);
void admin_brand_put(struct request *req);
void admin_brand_delete(struct request *req);
void admin_brand_check(struct request *req);
void admin_brand_redeliver(struct request *req);
void admin_events_list(struct request *req);
void admin_event_get(struct request *req);
void admin_event_redeliver(struct request *req);

/*
 * admin.c: read the body, verify the signature headers and record the
 * signature in the shared replay cache (each is good once).  Returns 0 and
 * sets req->admin_key when the request may go on; else the 401 problem is
 * already in req.
 */
int admin_authenticate(struct request *req);

#endif
