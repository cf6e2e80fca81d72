#include <string.h>
#include <stdlib.h>

#include "handlers.h"

enum route_auth { AUTH_NONE, AUTH_READ, AUTH_WRITE };

/* Where a route is served: the data socket serves every route. */
enum route_plane { PLANE_ANY, PLANE_DATA };

struct route {
	const char *method;
	const char *pattern; /* "*" matches one non-empty path segment */
	const char *label;
	enum route_auth auth;
	void (*fn)(struct request *);
	enum route_plane plane;
};

static const struct route routes[] = {
    {"GET", "/healthz", "healthz", AUTH_NONE, health_get, PLANE_ANY},
    {"GET", "/metrics", "metrics", AUTH_NONE, metrics_get, PLANE_ANY},
    {"POST", "/v1/events", "events", AUTH_NONE, events_post, PLANE_DATA},
    {"GET", "/admin/v1/brands", "admin_brands", AUTH_READ, admin_brands_list,
     PLANE_ANY},
    {"GET", "/admin/v1/brands/*", "admin_brand", AUTH_READ, admin_brand_get,
     PLANE_ANY},
    {"PUT", "/admin/v1/brands/*", "admin_brand", AUTH_WRITE, admin_brand_put,
     PLANE_ANY},
    {"DELETE", "/admin/v1/brands/*", "admin_brand", AUTH_WRITE,
     admin_brand_delete, PLANE_ANY},
    {"POST", "/admin/v1/brands/*/check", "admin_brand_check", AUTH_WRITE,
     admin_brand_check, PLANE_ANY},
    {"POST", "/admin/v1/brands/*/redeliver", "admin_brand_redeliver",
     AUTH_WRITE, admin_brand_redeliver, PLANE_ANY},
    {"GET", "/admin/v1/events", "admin_events", AUTH_READ, admin_events_list,
     PLANE_ANY},
    {"GET", "/admin/v1/events/*", "admin_event", AUTH_READ, admin_event_get,
     PLANE_ANY},
    {"POST", "/admin/v1/events/*/redeliver", "admin_event_redeliver",
     AUTH_WRITE, admin_event_redeliver, PLANE_ANY},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

static const char *labels[NROUTES + 1];

/* See handlers.h. */
const char *const *
router_labels(int *n)
{
	for (size_t i = 0; i < NROUTES; i++)
		labels[i] = routes[i].label;
	labels[NROUTES] = "unmatched";
	*n = (int)NROUTES + 1;
	return labels;
}

/*
 * Match path against pattern; each "*" captures one segment (copied into
 * caps, at most 2).  Returns 1 on a match.
 */
static int
route_match(const char *pattern, const char *path, char *caps[2])
{
	int ncap = 0;

	while (*pattern != '\0') {
		if (*pattern == '*') {
			size_t n = strcspn(path, "/");
			if (n == 0 || ncap == 2)
				return 0;
			if (caps != NULL &&
			    ((caps[ncap] = strndup(path, n)) == NULL ||
			     request_pct_decode(caps[ncap]) != 0))
				return 0;
			ncap++;
			path += n;
			pattern++;
			continue;
		}
		if (*pattern++ != *path++)
			return 0;
	}
	return *path == '\0';
}

static void
route_free_caps(struct request *req)
{
	for (int i = 0; i < 2; i++) {
		free(req->captures[i]);
		req->captures[i] = NULL;
	}
}

static void
route_not_allowed(struct request *req)
{
	char allow[64] = "";
	size_t used = 0;

	for (size_t i = 0; i < NROUTES; i++)
		if (route_match(routes[i].pattern, req->path, NULL) &&
		    !strstr(allow, routes[i].method))
			used += (size_t)snprintf(
			    allow + used, sizeof(allow) - used, "%s%s",
			    used ? ", " : "", routes[i].method);
	request_header(req, "Allow", allow);
	request_problemf(req, 405, "method_not_allowed",
	                 "%s is not allowed on %s (allowed: %s)", req->method,
	                 req->path, allow);
}

/* See handlers.h. */
void
router_dispatch(struct request *req)
{
	int path_seen = 0, is_admin = strncmp(req->path, "/admin/", 7) == 0;
	int data_only = 0;
	size_t i;

	if (is_admin && admin_authenticate(req) != 0)
		return;
	for (i = 0; i < NROUTES; i++) {
		if (!route_match(routes[i].pattern, req->path, NULL))
			continue;
		/* The control socket must stay free for health and admin. */
		if (req->control_plane && routes[i].plane == PLANE_DATA) {
			data_only = 1;
			continue;
		}
		path_seen = 1;
		if (strcmp(routes[i].method, req->method) == 0)
			break;
	}
	if (i == NROUTES) {
		if (path_seen)
			route_not_allowed(req);
		else if (data_only)
			request_problemf(
			    req, 404, "not_found",
			    "%s is not served on the control socket; "
			    "send it to the data socket",
			    req->path);
		else
			request_problemf(req, 404, "not_found",
			                 "no route for %s", req->path);
		return;
	}
	req->route = routes[i].label;
	req->route_index = (int)i;
	route_free_caps(req);
	if (!route_match(routes[i].pattern, req->path, req->captures)) {
		request_problem(req, 404, "not_found", "malformed path segment",
		                NULL);
		return;
	}
	if (routes[i].auth == AUTH_WRITE &&
	    (req->admin_key == NULL || req->admin_key->role != ROLE_WRITE)) {
		request_problemf(req, 403, "forbidden",
		                 "key \"%s\" has role \"%s\"; %s %s needs "
		                 "role \"write\"",
		                 req->admin_key ? req->admin_key->id : "",
		                 req->admin_key
		                     ? admin_role_names[req->admin_key->role]
		                     : "none",
		                 req->method, req->path);
		return;
	}
	routes[i].fn(req);
}
