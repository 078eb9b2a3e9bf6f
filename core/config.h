/* d2fab core: validated JSON configuration through cJSON.
 *
 * Every key is checked on load: a missing required key, a value of the wrong
 * type or out of range, and any unknown key are errors whose message names
 * the file, the key path (e.g. "geometry.pitch_mm"), the value and the allowed
 * range. Lengths are millimetres and frequencies THz, with the unit in the key
 * name. */
#ifndef D2_CONFIG_H
#define D2_CONFIG_H

#include <cjson/cJSON.h>
#include "err.h"

/* Parses path (at most 16 MiB) into *root (free with cJSON_Delete). Syntax
 * errors fail with D2_EINPUT as "FILE:LINE:COL: JSON syntax error near ...";
 * a NUL byte in the file is an error too. *root is NULL on failure. */
int cfg_load(const char *path, cJSON **root, d2_err *e);

/* Parses text in memory; name is used in messages. */
int cfg_parse(const char *name, const char *text, cJSON **root, d2_err *e);

/* Context for messages: file name and the path of the object being read. */
typedef struct cfg_ctx {
    const char *file; /* file name for messages */
    const char *path; /* key path of obj, "" at the top level */
} cfg_ctx;

/* Fails with D2_EINPUT if obj (an object) holds a key not in allowed
 * (NULL-terminated list): 'FILE: unknown key "geometry.pitch" (allowed:
 * frequency_thz, ...); did you mean "pitch_mm"?'. Also fails on a key that
 * appears twice and if obj is not an object. A NULL obj is accepted. */
int cfg_check_keys(const cfg_ctx *c, const cJSON *obj, const char *const *allowed, d2_err *e);

/* Reads number key of obj into *out. If the key is absent: with required != 0
 * fails, otherwise stores def. Range check lo <= v <= hi (use -INFINITY /
 * INFINITY for open ends; non-finite values always fail). */
int cfg_num(const cfg_ctx *c, const cJSON *obj, const char *key, int required, double def,
            double lo, double hi, double *out, d2_err *e);
/* Same with open interval ends: flags CFG_LO_OPEN requires v > lo, CFG_HI_OPEN
 * v < hi; the message shows the interval as "(0, 100]". */
enum { CFG_LO_OPEN = 1, CFG_HI_OPEN = 2 };
int cfg_num_range(const cfg_ctx *c, const cJSON *obj, const char *key, int required, double def,
                  double lo, double hi, int flags, double *out, d2_err *e);
/* Same for an integer (a JSON number with no fractional part). */
int cfg_int(const cfg_ctx *c, const cJSON *obj, const char *key, int required, long def,
            long lo, long hi, long *out, d2_err *e);
int cfg_bool(const cfg_ctx *c, const cJSON *obj, const char *key, int required, int def,
             int *out, d2_err *e);
/* *out points into obj (not copied); def may be NULL. */
int cfg_str(const cfg_ctx *c, const cJSON *obj, const char *key, int required, const char *def,
            const char **out, d2_err *e);
/* String that must be one of choices (NULL-terminated); *out is its index. */
int cfg_enum(const cfg_ctx *c, const cJSON *obj, const char *key, int required, int def,
             const char *const *choices, int *out, d2_err *e);
/* Array of numbers of length n_min..n_max, each in lo..hi, into out (room for
 * n_max); stores *n. An absent key gives *n = 0 if n_min is 0, else fails. */
int cfg_num_array(const cfg_ctx *c, const cJSON *obj, const char *key, int n_min, int n_max,
                  double lo, double hi, double *out, int *n, d2_err *e);

/* Returns the child object key of obj or NULL; fails if present and not an
 * object. */
int cfg_object(const cfg_ctx *c, const cJSON *obj, const char *key, const cJSON **out, d2_err *e);

/* Prints root (indented, with a final newline) and writes it atomically to
 * path. Fails with D2_EIO, also when cfg_json_complete does: a document that
 * lost a key to a failed allocation is never written. */
int cfg_write(const char *path, const cJSON *root, d2_err *e);

/* Every cJSON allocation goes through d2fab's hook, which counts the ones
 * that fail on this thread. Fails with D2_EIO ("WHAT: out of memory while
 * building it") when one failed since the last call, so a document built
 * with unchecked cJSON_Add* calls is refused rather than written with keys
 * missing; every writer of JSON (cfg_write and the JSON lines writers) calls
 * it before printing. */
int cfg_json_complete(const char *what, d2_err *e);

/* A key and its number, for cfg_add_numbers. */
typedef struct cfg_num_item {
    const char *key;
    double value;
} cfg_num_item;
/* Adds each key: number of items to obj, in order (a non-finite number
 * prints as null). 0, or -1 when out of memory (cfg_json_complete sees it
 * too). */
int cfg_add_numbers(cJSON *obj, const cfg_num_item *items, int count);
/* For tests: the k-th next cJSON allocation on this thread fails (0: none). */
void cfg_json_fail_after(long k);

#endif
