/*
 * Internals shared by the store_*.c files.  Nothing outside the store
 * includes this header.
 */
#ifndef GC_STORE_PRIV_H
#define GC_STORE_PRIV_H

#include <sys/types.h>

#include <sqlite3.h>

#include "store.h"

struct store {
	sqlite3 *db;
	char *path;
	dev_t dev; /* identity of the file opened, for store_ping */
	ino_t ino;
};

/* Log the SQLite error for what; returns GC_ESTORE. */
enum gc_err store_fail(struct store *st, const char *what);
/* Prepared statement (caller finalizes) or NULL (logged). */
sqlite3_stmt *store_prepare(struct store *st, const char *sql);
enum gc_err store_exec(struct store *st, const char *sql);
/*
 * Step stmt once and finalize it (stmt may be NULL: a failed prepare).
 * Returns 1 on SQLITE_DONE or SQLITE_ROW, else logs what and returns 0.
 */
int store_step(struct store *st, sqlite3_stmt *stmt, const char *what);
/* Copy of a text column (caller frees), NULL when NULL. */
char *store_col_text(sqlite3_stmt *stmt, int col);
/* BEGIN IMMEDIATE / COMMIT / ROLLBACK (rollback only when open). */
enum gc_err store_begin(struct store *st);
enum gc_err store_commit(struct store *st);
void store_rollback(struct store *st);

#endif
