/*
 * The Gocertify payload (DESIGN.md) and the verified-at field names.
 */
#ifndef GC_PAYLOAD_H
#define GC_PAYLOAD_H

#include <stddef.h>

#include <jansson.h>

#include "event.h"

#define PAYLOAD_SLUG_MAX 64

/*
 * The payload object, keys in the documented order, optional keys omitted
 * when absent.  New reference; NULL on allocation failure.
 */
json_t *payload_build(const struct gc_event *ev);

/*
 * Group slug of name: lower-case ASCII letters and digits kept, bytes
 * outside ASCII dropped, every run of other ASCII characters becomes one
 * "_", no leading or trailing "_".  Writes into out (PAYLOAD_SLUG_MAX
 * bytes).  GC_EINVAL when the slug is empty, GC_ETOOBIG when it does not
 * fit.
 */
enum gc_err payload_group_slug(const char *name, char out[PAYLOAD_SLUG_MAX]);

/*
 * The verified groups of an offer_claimed event: parent and child when
 * present, else the group type.  Fills names (borrowed from ev) and
 * returns how many (0..2).
 */
int payload_verified_groups(const struct gc_event *ev, const char *names[2]);

/*
 * "gocertify_<slug>_verified_at" for a group name into out (size n).
 * GC_EINVAL when the name slugs to nothing.
 */
enum gc_err payload_verified_field(const char *group, char *out, size_t n);

#endif
