/* MEAS: the one reader and writer of measurement files (format in
 * calibrate.h). */
#include "calibrate/calibrate.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/image.h"

#define MEAS_MAX_BYTES (64u << 20)

int cal_meas_alloc(cal_meas *m, int count, int ndet, d2_err *e)
{
    memset(m, 0, sizeof *m);
    m->count = count;
    m->ndet = ndet;
    size_t c = count > 0 ? (size_t)count : 1;
    m->test_index = d2_calloc(c, sizeof *m->test_index, "measurement rows", e);
    m->image = m->test_index ? d2_calloc(c, sizeof *m->image, "measurement rows", e) : NULL;
    m->line = m->image ? d2_calloc(c, sizeof *m->line, "measurement rows", e) : NULL;
    m->read = m->line ? d2_calloc(c * (size_t)ndet, sizeof *m->read, "readings", e) : NULL;
    if (!m->read) {
        cal_meas_free(m);
        return D2_EIO;
    }
    return 0;
}

void cal_meas_free(cal_meas *m)
{
    if (!m) return;
    free(m->test_index);
    free(m->image);
    free(m->line);
    free(m->read);
    memset(m, 0, sizeof *m);
}

/* Room for one more row. */
static int grow(cal_meas *m, size_t *cap, d2_err *e)
{
    if ((size_t)m->count < *cap) return 0;
    size_t nc = *cap ? 2 * *cap : 256;
    int *ti = realloc(m->test_index, nc * sizeof *ti);
    if (ti) m->test_index = ti;
    char(*im)[CAL_PATH] = ti ? realloc(m->image, nc * sizeof *im) : NULL;
    if (im) m->image = im;
    int *ln = im ? realloc(m->line, nc * sizeof *ln) : NULL;
    if (ln) m->line = ln;
    double *rd = ln ? realloc(m->read, nc * (size_t)m->ndet * sizeof *rd) : NULL;
    if (!rd) return d2_fail(e, D2_EIO, "out of memory for %zu measurement rows", nc);
    m->read = rd;
    *cap = nc;
    return 0;
}

typedef struct rd_ctx {
    const char *path;
    char dir[CAL_PATH];
    int test_count;
} rd_ctx;

/* "test:N" or "image:PATH" of row r, at line/column for messages. */
static int parse_input(const rd_ctx *c, const char *s, int line, int col, cal_meas *m, int r,
                       d2_err *e)
{
    m->test_index[r] = -1;
    m->image[r][0] = 0;
    if (!strncmp(s, "test:", 5)) {
        char *end;
        errno = 0;
        long v = strtol(s + 5, &end, 10);
        if (end == s + 5 || *end || errno || v < 0 || v >= c->test_count)
            return d2_fail(e, D2_EINPUT,
                           "%s: line %d, column %d: input \"%s\": the test set has images 0 to %d",
                           c->path, line, col, s, c->test_count - 1);
        m->test_index[r] = (int)v;
        return 0;
    }
    if (!strncmp(s, "image:", 6) && s[6]) {
        const char *p = s + 6;
        int n = p[0] == '/' ? snprintf(m->image[r], CAL_PATH, "%s", p)
                            : snprintf(m->image[r], CAL_PATH, "%s/%s", c->dir, p);
        if (n >= CAL_PATH)
            return d2_fail(e, D2_EINPUT, "%s: line %d, column %d: image path too long", c->path,
                           line, col);
        d2_err e2 = {0};
        if (d2_check_input(m->image[r], &e2))
            return d2_fail(e, D2_EINPUT, "%s: line %d, column %d: input \"%s\": %s", c->path,
                           line, col, s, e2.msg);
        return 0;
    }
    return d2_fail(e, D2_EINPUT,
                   "%s: line %d, column %d: unknown input \"%s\" (test:INDEX or image:PATH)",
                   c->path, line, col, s);
}

static int check_reading(const rd_ctx *c, double v, int ok, const char *txt, int line, int col,
                         d2_err *e)
{
    if (!ok || !isfinite(v))
        return d2_fail(e, D2_EINPUT, "%s: line %d, column %d: reading \"%s\" is not a finite "
                       "number", c->path, line, col, txt);
    if (v < 0)
        return d2_fail(e, D2_EINPUT, "%s: line %d, column %d: reading %g is negative (energies "
                       "are >= 0; subtract no dark level before writing MEAS)", c->path, line,
                       col, v);
    return 0;
}

/* "#d2fab-meas neurons=N layers=L detectors=D" */
static int parse_magic(const rd_ctx *c, const char *s, cal_meas *m, d2_err *e)
{
    int n = 0, l = 0, d = 0;
    if (sscanf(s, "#d2fab-meas neurons=%d layers=%d detectors=%d", &n, &l, &d) != 3)
        return d2_fail(e, D2_EINPUT, "%s: line 1, column 1: expected \"#d2fab-meas neurons=N "
                       "layers=L detectors=D\"", c->path);
    if (d != m->ndet)
        return d2_fail(e, D2_EINPUT, "%s: line 1: readings of %d detectors, the model has %d: "
                       "a measurement of other optics", c->path, d, m->ndet);
    m->neurons = n;
    m->layers = l;
    return 0;
}

/* Splits s at commas in place; returns the field count (up to max). */
static int split_csv(char *s, char **f, int max)
{
    int k = 0;
    for (;;) {
        while (*s == ' ' || *s == '\t') s++;
        if (k < max) f[k] = s;
        k++;
        char *comma = strchr(s, ',');
        char *end = comma ? comma : s + strlen(s);
        char *t = end;
        while (t > s && isspace((unsigned char)t[-1])) t--;
        *t = 0;
        if (!comma) break;
        s = comma + 1;
    }
    return k;
}

static int read_csv_row(const rd_ctx *c, char *s, int line, cal_meas *m, int *header, d2_err *e)
{
    char *f[D2_MAX_DET + 2];
    int nf = split_csv(s, f, D2_MAX_DET + 2);
    if (nf != m->ndet + 1)
        return d2_fail(e, D2_EINPUT, "%s: line %d: %d columns, expected %d (input and %d "
                       "readings)", c->path, line, nf, m->ndet + 1, m->ndet);
    if (!*header) {
        if (strcmp(f[0], "input"))
            return d2_fail(e, D2_EINPUT, "%s: line %d, column 1: expected the header \"input,d1,"
                           "...\", found \"%s\"", c->path, line, f[0]);
        *header = 1;
        return 0;
    }
    int r = m->count;
    if (parse_input(c, f[0], line, 1, m, r, e)) return e->code;
    for (int k = 0; k < m->ndet; k++) {
        char *end;
        double v = strtod(f[k + 1], &end);
        int ok = end != f[k + 1] && *end == 0;
        if (check_reading(c, v, ok, f[k + 1], line, k + 2, e))
            return e->code;
        m->read[(size_t)r * m->ndet + k] = v;
    }
    m->line[r] = line;
    m->count++;
    return 0;
}

static int read_json_row(const rd_ctx *c, const char *s, int line, cal_meas *m, d2_err *e)
{
    cJSON *o = cJSON_Parse(s);
    int rc = 0;
    if (!cJSON_IsObject(o)) {
        rc = d2_fail(e, D2_EINPUT, "%s: line %d, column 1: not a JSON object", c->path, line);
        goto done;
    }
    for (cJSON *it = o->child; it; it = it->next)
        if (strcmp(it->string, "input") && strcmp(it->string, "readings")) {
            rc = d2_fail(e, D2_EINPUT, "%s: line %d: unknown key \"%s\" (input, readings)",
                         c->path, line, it->string);
            goto done;
        }
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(o, "input");
    const cJSON *rd = cJSON_GetObjectItemCaseSensitive(o, "readings");
    if (!cJSON_IsString(in)) {
        rc = d2_fail(e, D2_EINPUT, "%s: line %d, column 1: \"input\" must be a string", c->path,
                     line);
        goto done;
    }
    if (!cJSON_IsArray(rd) || cJSON_GetArraySize(rd) != m->ndet) {
        rc = d2_fail(e, D2_EINPUT, "%s: line %d: \"readings\" must be an array of %d numbers "
                     "(found %d)", c->path, line, m->ndet, cJSON_IsArray(rd) ?
                     cJSON_GetArraySize(rd) : 0);
        goto done;
    }
    int r = m->count;
    if ((rc = parse_input(c, in->valuestring, line, 1, m, r, e))) goto done;
    for (int k = 0; k < m->ndet; k++) {
        const cJSON *v = cJSON_GetArrayItem(rd, k);
        /* cJSON reads NaN and Infinity as no number; "column" is the reading's index. */
        if ((rc = check_reading(c, cJSON_IsNumber(v) ? v->valuedouble : NAN, cJSON_IsNumber(v),
                                cJSON_IsNumber(v) ? "number" : "non-number", line, k + 2, e)))
            goto done;
        m->read[(size_t)r * m->ndet + k] = v->valuedouble;
    }
    m->line[r] = line;
    m->count++;
done:
    cJSON_Delete(o);
    return rc;
}

int cal_meas_read(const char *path, int ndet, int neurons, int layers, int test_count,
                  cal_meas *m, d2_err *e)
{
    memset(m, 0, sizeof *m);
    m->ndet = ndet;
    rd_ctx c = {path, ".", test_count};
    const char *slash = strrchr(path, '/');
    if (slash) snprintf(c.dir, sizeof c.dir, "%.*s", (int)(slash - path), path);
    if (slash == path) snprintf(c.dir, sizeof c.dir, "/");
    char *buf = NULL;
    size_t len = 0;
    if (d2_read_file(path, MEAS_MAX_BYTES, &buf, &len, e)) return e->code;
    size_t cap = 0;
    int line = 0, header = 0, json = -1, rc = 0;
    for (char *s = buf; s && *s;) {
        char *nl = strchr(s, '\n');
        if (nl) *nl = 0;
        line++;
        size_t l = strlen(s);
        if (l && s[l - 1] == '\r') s[--l] = 0;
        char *t = s;
        while (isspace((unsigned char)*t)) t++;
        if (line == 1 && !strncmp(t, "#d2fab-meas", 11)) {
            if ((rc = parse_magic(&c, t, m, e))) goto fail;
        } else if (*t && *t != '#') {
            if (json < 0) json = *t == '{';
            if ((rc = grow(m, &cap, e))) goto fail;
            rc = json ? read_json_row(&c, t, line, m, e) : read_csv_row(&c, t, line, m, &header, e);
            if (rc) goto fail;
        }
        s = nl ? nl + 1 : NULL;
    }
    if (m->neurons && (m->neurons != neurons || m->layers != layers)) {
        rc = d2_fail(e, D2_EINPUT, "%s: line 1: measured on %d x %d neurons and %d layers, the "
                     "model has %d x %d and %d: a measurement of other optics", path, m->neurons,
                     m->neurons, m->layers, neurons, neurons, layers);
        goto fail;
    }
    if (m->count == 0) {
        rc = d2_fail(e, D2_EINPUT, "%s: line %d: no measurement rows", path, line);
        goto fail;
    }
    free(buf);
    return 0;
fail:
    free(buf);
    cal_meas_free(m);
    return rc;
}

int cal_meas_write(const char *path, const cal_meas *m, d2_err *e)
{
    d2_out *o = d2_out_open(path, e);
    if (!o) return e->code;
    FILE *f = d2_out_fp(o);
    fprintf(f, "#d2fab-meas neurons=%d layers=%d detectors=%d\ninput", m->neurons, m->layers,
            m->ndet);
    for (int k = 0; k < m->ndet; k++) fprintf(f, ",d%d", k + 1);
    fputc('\n', f);
    for (int r = 0; r < m->count; r++) {
        if (m->test_index[r] >= 0)
            fprintf(f, "test:%d", m->test_index[r]);
        else
            fprintf(f, "image:%s", m->image[r]);
        for (int k = 0; k < m->ndet; k++) fprintf(f, ",%.9g", m->read[(size_t)r * m->ndet + k]);
        fputc('\n', f);
    }
    return d2_out_commit(o, e);
}

int cal_inputs(const d2_model *m, const cal_meas *meas, const d2_dataset *ds, float **inputs,
               d2_err *e)
{
    size_t nn = (size_t)m->g.n * m->g.n;
    float *in = d2_malloc((size_t)meas->count * nn * sizeof *in, "input planes", e);
    if (!in) return D2_EIO;
    for (int r = 0; r < meas->count; r++) {
        float *dst = in + (size_t)r * nn;
        int ti = meas->test_index[r];
        if (ti >= 0) {
            if (!ds || ti >= ds->count) {
                free(in);
                return d2_fail(e, D2_EINPUT, "line %d: test image %d is not in the data set",
                               meas->line[r], ti);
            }
            input_from_u8(&m->g, ds->images + (size_t)ti * ds->rows * ds->cols, ds->rows,
                          ds->cols, dst);
            continue;
        }
        int w, h;
        float *px = NULL;
        if (img_read_gray(meas->image[r], &w, &h, &px, e)) {
            free(in);
            return d2_err_prefix(e, "line %d", meas->line[r]);
        }
        input_from_image(&m->g, px, h, w, dst);
        free(px);
    }
    *inputs = in;
    return 0;
}
