#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

#define CFG_MAX_BYTES (16u << 20)

/* cJSON allocates through json_malloc, so that an allocation that fails
 * anywhere while a document is built (a cJSON_Add* that returns NULL and
 * leaves a key out) is seen where the document is written: each thread counts
 * its failed allocations, and cfg_json_complete refuses to write after one. */
static _Thread_local unsigned long json_failures;
static _Thread_local long json_fail_in; /* tests: fail the allocation after this many */

static void *json_malloc(size_t n)
{
    void *p = NULL;
    if (json_fail_in > 0 && --json_fail_in == 0) {
        json_failures++;
        return NULL;
    }
    if (!(p = malloc(n))) json_failures++;
    return p;
}

__attribute__((constructor)) static void json_hooks(void)
{
    cJSON_Hooks h = {json_malloc, free};
    cJSON_InitHooks(&h);
}

int cfg_json_complete(const char *what, d2_err *e)
{
    if (!json_failures) return 0;
    json_failures = 0;
    return d2_fail(e, D2_EIO, "%s: out of memory while building it; nothing written", what);
}

void cfg_json_fail_after(long k)
{
    json_fail_in = k;
}

int cfg_parse(const char *name, const char *text, cJSON **root, d2_err *e)
{
    *root = NULL;
    const char *end = NULL;
    /* Use the end pointer of this call, not cJSON's global error pointer,
     * which another thread may overwrite. */
    cJSON *r = cJSON_ParseWithOpts(text, &end, 1);
    if (!r) {
        json_failures = 0; /* a parse that ran out of memory fails here, not at a later write */
        if (!end) end = text;
        int line = 1, col = 1;
        for (const char *p = text; p < end && *p; p++) {
            if (*p == '\n') {
                line++;
                col = 1;
            } else if (((unsigned char)*p & 0xc0) != 0x80) { /* count UTF-8 characters */
                col++;
            }
        }
        char near[24];
        size_t k = 0;
        for (const char *p = end; *p && *p != '\n' && k < 16; p++)
            near[k++] = (unsigned char)*p < 0x20 ? ' ' : *p;
        near[k] = 0;
        if (*end == 0)
            return d2_fail(e, D2_EINPUT, "%s:%d:%d: JSON syntax error: unexpected end of file",
                           name, line, col);
        return d2_fail(e, D2_EINPUT, "%s:%d:%d: JSON syntax error near \"%s\"", name, line, col,
                       near);
    }
    *root = r;
    return 0;
}

int cfg_load(const char *path, cJSON **root, d2_err *e)
{
    char *buf;
    size_t n;
    *root = NULL;
    int rc = d2_read_file(path, CFG_MAX_BYTES, &buf, &n, e);
    if (rc) return rc;
    if (strlen(buf) != n) {
        rc = d2_fail(e, D2_EINPUT, "%s: contains a NUL byte at offset %zu; expected JSON text",
                     path, strlen(buf));
        free(buf);
        return rc;
    }
    rc = cfg_parse(path, buf, root, e);
    free(buf);
    return rc;
}

/* "geometry.pitch_mm" from the context path and a key. */
static void key_path(char *out, size_t cap, const cfg_ctx *c, const char *key)
{
    if (c->path && *c->path)
        snprintf(out, cap, "%s.%s", c->path, key);
    else
        snprintf(out, cap, "%s", key);
}

/* Shortest %g form that reads back as the same double. */
static void fmt_num(char *out, size_t cap, double v)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

/* The JSON value, shortened for a message. */
static void fmt_value(char *out, size_t cap, const cJSON *v)
{
    if (cJSON_IsNumber(v)) {
        fmt_num(out, cap, v->valuedouble);
        return;
    }
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        snprintf(out, cap, "?");
        return;
    }
    if (strlen(s) > 40)
        snprintf(out, cap, "%.37s...", s);
    else
        snprintf(out, cap, "%s", s);
    free(s);
}

static void fmt_range(char *out, size_t cap, double lo, double hi, int lo_open, int hi_open)
{
    char a[32], b[32];
    fmt_num(a, sizeof a, lo);
    fmt_num(b, sizeof b, hi);
    if (isinf(lo) && isinf(hi))
        snprintf(out, cap, "a finite number");
    else if (isinf(hi))
        snprintf(out, cap, "%s %s", lo_open ? ">" : ">=", a);
    else if (isinf(lo))
        snprintf(out, cap, "%s %s", hi_open ? "<" : "<=", b);
    else
        snprintf(out, cap, "in %c%s, %s%c", lo_open ? '(' : '[', a, b, hi_open ? ')' : ']');
}

static int levenshtein(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64];
    for (size_t j = 0; j <= lb; j++) d[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = d[0];
        d[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int t = d[j];
            int best = prev + (a[i - 1] != b[j - 1]);
            if (d[j] + 1 < best) best = d[j] + 1;
            if (d[j - 1] + 1 < best) best = d[j - 1] + 1;
            d[j] = best;
            prev = t;
        }
    }
    return d[lb];
}

int cfg_check_keys(const cfg_ctx *c, const cJSON *obj, const char *const *allowed, d2_err *e)
{
    char kp[256];
    if (!obj) return 0;
    if (!cJSON_IsObject(obj)) {
        char v[64];
        fmt_value(v, sizeof v, obj);
        if (c->path && *c->path)
            return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = %s: must be an object", c->file,
                           c->path, v);
        return d2_fail(e, D2_EINPUT, "%s: top level is %s; must be a JSON object", c->file, v);
    }
    for (const cJSON *it = obj->child; it; it = it->next) {
        const char *k = it->string ? it->string : "";
        for (const cJSON *prev = obj->child; prev != it; prev = prev->next)
            if (prev->string && strcmp(prev->string, k) == 0) {
                key_path(kp, sizeof kp, c, k);
                return d2_fail(e, D2_EINPUT, "%s: key \"%s\" appears twice", c->file, kp);
            }
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            if (strcmp(allowed[i], k) == 0) ok = 1;
        if (ok) continue;
        key_path(kp, sizeof kp, c, k);
        char list[700];
        size_t used = 0;
        const char *best = NULL;
        int best_d = 3;
        list[0] = 0;
        for (int i = 0; allowed[i]; i++) {
            int n = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", allowed[i]);
            if (n > 0) used += (size_t)n;
            if (used >= sizeof list) {
                used = sizeof list - 1;
                memcpy(list + sizeof list - 4, "...", 4);
            }
            int d = levenshtein(k, allowed[i]);
            if (d < best_d || (strncmp(k, allowed[i], strlen(k)) == 0 && *k && !best)) {
                best_d = d < best_d ? d : best_d;
                best = allowed[i];
            }
        }
        if (best)
            return d2_fail(e, D2_EINPUT, "%s: unknown key \"%s\" (allowed: %s); did you mean \"%s\"?",
                           c->file, kp, list, best);
        return d2_fail(e, D2_EINPUT, "%s: unknown key \"%s\" (allowed: %s)", c->file, kp, list);
    }
    return 0;
}

/* Looks key up in obj (case-sensitive). Returns NULL if obj is NULL. */
static const cJSON *get(const cJSON *obj, const char *key)
{
    return obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static int num_in(double v, double lo, double hi, int lo_open, int hi_open)
{
    if (!isfinite(v)) return 0;
    if (lo_open ? !(v > lo) : !(v >= lo)) return 0;
    if (hi_open ? !(v < hi) : !(v <= hi)) return 0;
    return 1;
}

int cfg_num_range(const cfg_ctx *c, const cJSON *obj, const char *key, int required, double def,
                  double lo, double hi, int flags, double *out, d2_err *e)
{
    char kp[256], v[64], r[96];
    int lo_open = !!(flags & CFG_LO_OPEN), hi_open = !!(flags & CFG_HI_OPEN);
    key_path(kp, sizeof kp, c, key);
    fmt_range(r, sizeof r, lo, hi, lo_open, hi_open);
    const cJSON *it = get(obj, key);
    if (!it) {
        if (required)
            return d2_fail(e, D2_EINPUT, "%s: missing key \"%s\" (a number %s)", c->file, kp, r);
        *out = def;
        return 0;
    }
    fmt_value(v, sizeof v, it);
    if (!cJSON_IsNumber(it))
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = %s: must be a number %s", c->file, kp, v,
                       r);
    double x = it->valuedouble;
    if (!isfinite(x))
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = %s: must be a finite number %s", c->file,
                       kp, v, r);
    if (!num_in(x, lo, hi, lo_open, hi_open))
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = %s: must be %s", c->file, kp, v, r);
    *out = x;
    return 0;
}

int cfg_num(const cfg_ctx *c, const cJSON *obj, const char *key, int required, double def,
            double lo, double hi, double *out, d2_err *e)
{
    return cfg_num_range(c, obj, key, required, def, lo, hi, 0, out, e);
}

int cfg_int(const cfg_ctx *c, const cJSON *obj, const char *key, int required, long def, long lo,
            long hi, long *out, d2_err *e)
{
    char kp[256], v[64], r[96];
    key_path(kp, sizeof kp, c, key);
    fmt_range(r, sizeof r, (double)lo, (double)hi, 0, 0);
    const cJSON *it = get(obj, key);
    if (!it) {
        if (required)
            return d2_fail(e, D2_EINPUT, "%s: missing key \"%s\" (an integer %s)", c->file, kp,
                           r);
        *out = def;
        return 0;
    }
    fmt_value(v, sizeof v, it);
    double x = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!cJSON_IsNumber(it) || !isfinite(x) || x != floor(x))
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = %s: must be an integer %s", c->file, kp, v,
                       r);
    /* Compare as doubles before converting, so a huge value cannot overflow. */
    if (x < (double)lo || x > (double)hi)
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = %s: must be an integer %s", c->file, kp, v,
                       r);
    *out = (long)x;
    return 0;
}

int cfg_bool(const cfg_ctx *c, const cJSON *obj, const char *key, int required, int def, int *out,
             d2_err *e)
{
    char kp[256], v[64];
    key_path(kp, sizeof kp, c, key);
    const cJSON *it = get(obj, key);
    if (!it) {
        if (required)
            return d2_fail(e, D2_EINPUT, "%s: missing key \"%s\" (true or false)", c->file, kp);
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(it)) {
        fmt_value(v, sizeof v, it);
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = %s: must be true or false", c->file, kp,
                       v);
    }
    *out = cJSON_IsTrue(it);
    return 0;
}

int cfg_str(const cfg_ctx *c, const cJSON *obj, const char *key, int required, const char *def,
            const char **out, d2_err *e)
{
    char kp[256], v[64];
    key_path(kp, sizeof kp, c, key);
    const cJSON *it = get(obj, key);
    if (!it) {
        if (required)
            return d2_fail(e, D2_EINPUT, "%s: missing key \"%s\" (a string)", c->file, kp);
        *out = def;
        return 0;
    }
    if (!cJSON_IsString(it) || !it->valuestring) {
        fmt_value(v, sizeof v, it);
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = %s: must be a string", c->file, kp, v);
    }
    *out = it->valuestring;
    return 0;
}

int cfg_enum(const cfg_ctx *c, const cJSON *obj, const char *key, int required, int def,
             const char *const *choices, int *out, d2_err *e)
{
    char kp[256], v[64], list[400];
    size_t used = 0;
    list[0] = 0;
    for (int i = 0; choices[i] && used < sizeof list; i++) {
        int n = snprintf(list + used, sizeof list - used, "%s\"%s\"", i ? ", " : "", choices[i]);
        if (n > 0) used += (size_t)n;
    }
    key_path(kp, sizeof kp, c, key);
    const cJSON *it = get(obj, key);
    if (!it) {
        if (required)
            return d2_fail(e, D2_EINPUT, "%s: missing key \"%s\" (one of %s)", c->file, kp, list);
        *out = def;
        return 0;
    }
    if (cJSON_IsString(it) && it->valuestring)
        for (int i = 0; choices[i]; i++)
            if (strcmp(choices[i], it->valuestring) == 0) {
                *out = i;
                return 0;
            }
    fmt_value(v, sizeof v, it);
    return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = %s: must be one of %s", c->file, kp, v, list);
}

int cfg_num_array(const cfg_ctx *c, const cJSON *obj, const char *key, int n_min, int n_max,
                  double lo, double hi, double *out, int *n, d2_err *e)
{
    char kp[256], v[64], r[96], cnt[48];
    key_path(kp, sizeof kp, c, key);
    fmt_range(r, sizeof r, lo, hi, 0, 0);
    if (n_min == n_max)
        snprintf(cnt, sizeof cnt, "%d", n_min);
    else
        snprintf(cnt, sizeof cnt, "%d to %d", n_min, n_max);
    const cJSON *it = get(obj, key);
    *n = 0;
    if (!it) {
        if (n_min > 0)
            return d2_fail(e, D2_EINPUT, "%s: missing key \"%s\" (an array of %s numbers %s)",
                           c->file, kp, cnt, r);
        return 0;
    }
    if (!cJSON_IsArray(it)) {
        fmt_value(v, sizeof v, it);
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = %s: must be an array of %s numbers %s",
                       c->file, kp, v, cnt, r);
    }
    int len = cJSON_GetArraySize(it);
    if (len < n_min || len > n_max)
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" has %d numbers; must have %s", c->file, kp,
                       len, cnt);
    int i = 0;
    for (const cJSON *x = it->child; x; x = x->next, i++) {
        if (!cJSON_IsNumber(x) || !num_in(x->valuedouble, lo, hi, 0, 0)) {
            fmt_value(v, sizeof v, x);
            return d2_fail(e, D2_EINPUT, "%s: key \"%s[%d]\" = %s: must be a number %s", c->file,
                           kp, i, v, r);
        }
        out[i] = x->valuedouble;
    }
    *n = len;
    return 0;
}

int cfg_object(const cfg_ctx *c, const cJSON *obj, const char *key, const cJSON **out, d2_err *e)
{
    const cJSON *it = get(obj, key);
    *out = NULL;
    if (!it) return 0;
    if (!cJSON_IsObject(it)) {
        char kp[256], v[64];
        key_path(kp, sizeof kp, c, key);
        fmt_value(v, sizeof v, it);
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = %s: must be an object", c->file, kp, v);
    }
    *out = it;
    return 0;
}

int cfg_write(const char *path, const cJSON *root, d2_err *e)
{
    int rc = cfg_json_complete(path, e);
    if (rc) return rc;
    char *s = cJSON_Print(root);
    if (!s) {
        json_failures = 0; /* reported here */
        return d2_fail(e, D2_EIO, "%s: cannot format JSON (out of memory?)", path);
    }
    size_t n = strlen(s);
    d2_out *o = d2_out_open(path, e);
    if (!o) {
        free(s);
        return e ? e->code : D2_EIO;
    }
    FILE *f = d2_out_fp(o);
    fwrite(s, 1, n, f);
    fputc('\n', f);
    free(s);
    return d2_out_commit(o, e);
}

int cfg_add_numbers(cJSON *obj, const cfg_num_item *items, int count)
{
    int ok = obj != NULL;
    for (int i = 0; ok && i < count; i++)
        ok = cJSON_AddNumberToObject(obj, items[i].key, items[i].value) != NULL;
    return ok ? 0 : -1;
}
