/* Printer and material profiles: loading with full validation, lookup by name
 * on a folder path, listing. */
#include "export/export.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"

const char *const printer_technologies[] = {"polyjet", "sla", "msla", "dlp", "fdm", "other", NULL};

/* The stem of a path: "dir/objet-connex500.json" -> "objet-connex500". */
static void file_stem(const char *path, char *out, size_t cap)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t len = strlen(b);
    if (len > 5 && !strcmp(b + len - 5, ".json")) len -= 5;
    if (len >= cap) len = cap - 1;
    memcpy(out, b, len);
    out[len] = 0;
}

static int copy_str(const cfg_ctx *c, const cJSON *root, const char *key, int required,
                    char *out, size_t cap, d2_err *e)
{
    const char *s = NULL;
    int rc = cfg_str(c, root, key, required, "", &s, e);
    if (rc) return rc;
    if (strlen(s) >= cap)
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\": \"%.40s...\" is too long (at most %zu characters)",
                       c->file, key, s, cap - 1);
    snprintf(out, cap, "%s", s);
    return 0;
}

/* "notes": optional string; "sources": optional array of strings. */
static int check_notes_sources(const cfg_ctx *c, const cJSON *root, d2_err *e)
{
    const char *s;
    int rc = cfg_str(c, root, "notes", 0, "", &s, e);
    if (rc) return rc;
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(root, "sources");
    if (!src) return 0;
    if (!cJSON_IsArray(src))
        return d2_fail(e, D2_EINPUT, "%s: key \"sources\": expected an array of strings", c->file);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, src) {
        if (!cJSON_IsString(it))
            return d2_fail(e, D2_EINPUT, "%s: key \"sources[%d]\": expected a string", c->file, i);
        i++;
    }
    return 0;
}

/* The profile's "name" must equal the file stem, so that the name the user
 * types and the name recorded in export.json agree. */
static int check_name(const char *path, const char *name, d2_err *e)
{
    char stem[PROFILE_PATH_MAX];
    file_stem(path, stem, sizeof stem);
    if (strcmp(stem, name))
        return d2_fail(e, D2_EINPUT, "%s: key \"name\": \"%s\" differs from the file name \"%s\" "
                       "(a profile is looked up by its file name)", path, name, stem);
    return 0;
}

int printer_from_json(const cJSON *obj, const char *file, const char *key, printer_profile *p,
                      d2_err *e)
{
    static const char *const keys[] = {"name", "display_name", "technology", "xy_resolution_mm",
                                       "z_step_mm", "build_volume_mm", "min_feature_mm",
                                       "pin_clearance_mm", "z_speed_mm_per_h", "layer_time_s",
                                       "notes",
                                       "sources", NULL};
    memset(p, 0, sizeof *p);
    cfg_ctx c = {file, key ? key : ""};
    int tech = 0, nb = 0, rc;
    if (!cJSON_IsObject(obj)) {
        if (key && key[0])
            return d2_fail(e, D2_EINPUT, "%s: key \"%s\": expected a printer profile object",
                           file, key);
        return d2_fail(e, D2_EINPUT, "%s: expected a JSON object (a printer profile)", file);
    }
    if ((rc = cfg_check_keys(&c, obj, keys, e)) ||
        (rc = copy_str(&c, obj, "name", 1, p->name, sizeof p->name, e)) ||
        (rc = copy_str(&c, obj, "display_name", 0, p->display_name, sizeof p->display_name, e)))
        goto fail;
    if (!p->display_name[0]) snprintf(p->display_name, sizeof p->display_name, "%s", p->name);
    if ((rc = cfg_enum(&c, obj, "technology", 1, 0, printer_technologies, &tech, e))) goto fail;
    snprintf(p->technology, sizeof p->technology, "%s", printer_technologies[tech]);
    if ((rc = cfg_num(&c, obj, "xy_resolution_mm", 1, 0, 0.001, 10, &p->xy_resolution_mm, e)) ||
        (rc = cfg_num(&c, obj, "z_step_mm", 1, 0, 0.001, 2, &p->z_step_mm, e)) ||
        (rc = cfg_num_array(&c, obj, "build_volume_mm", 3, 3, 1, 10000, p->build_mm, &nb, e)) ||
        (rc = cfg_num(&c, obj, "min_feature_mm", 1, 0, 0.001, 10, &p->min_feature_mm, e)) ||
        (rc = cfg_num(&c, obj, "pin_clearance_mm", 1, 0, 0, 5, &p->pin_clearance_mm, e)) ||
        (rc = cfg_num(&c, obj, "z_speed_mm_per_h", 0, 0, 0.01, 10000, &p->z_speed_mm_per_h, e)))
        goto fail;
    if ((rc = cfg_num(&c, obj, "layer_time_s", 0, 0, 0.01, 3600, &p->layer_time_s, e)))
        goto fail;
    if (!cJSON_GetObjectItemCaseSensitive(obj, "z_speed_mm_per_h")) p->z_speed_mm_per_h = 0;
    if (!cJSON_GetObjectItemCaseSensitive(obj, "layer_time_s")) p->layer_time_s = 0;
    if ((rc = check_notes_sources(&c, obj, e))) goto fail;
    return 0;
fail:
    memset(p, 0, sizeof *p);
    return rc;
}

int printer_load(const char *path, printer_profile *p, d2_err *e)
{
    memset(p, 0, sizeof *p);
    cJSON *root = NULL;
    int rc = cfg_load(path, &root, e);
    if (rc) return rc;
    if ((rc = printer_from_json(root, path, "", p, e)) || (rc = check_name(path, p->name, e)))
        goto fail;
    snprintf(p->path, sizeof p->path, "%s", path);
    p->json = root;
    return 0;
fail:
    cJSON_Delete(root);
    memset(p, 0, sizeof *p);
    return rc;
}

void printer_free(printer_profile *p)
{
    if (!p) return;
    cJSON_Delete(p->json);
    p->json = NULL;
}

int material_load(const char *path, material_profile *m, d2_err *e)
{
    static const char *const keys[] = {"name", "display_name", "points", "density_g_cm3",
                                       "notes", "sources", NULL};
    static const char *const pkeys[] = {"frequency_thz", "index", "kappa", NULL};
    memset(m, 0, sizeof *m);
    cJSON *root = NULL;
    int rc = cfg_load(path, &root, e);
    if (rc) return rc;
    cfg_ctx c = {path, ""};
    if (!cJSON_IsObject(root)) {
        rc = d2_fail(e, D2_EINPUT, "%s: expected a JSON object (a material profile)", path);
        goto fail;
    }
    if ((rc = cfg_check_keys(&c, root, keys, e))) goto fail;
    if ((rc = copy_str(&c, root, "name", 1, m->name, sizeof m->name, e))) goto fail;
    if ((rc = check_name(path, m->name, e))) goto fail;
    if ((rc = copy_str(&c, root, "display_name", 0, m->display_name, sizeof m->display_name, e)))
        goto fail;
    if (!m->display_name[0]) snprintf(m->display_name, sizeof m->display_name, "%s", m->name);
    if ((rc = cfg_num(&c, root, "density_g_cm3", 0, 0, 0.01, 30, &m->density_g_cm3, e))) goto fail;
    if (!cJSON_GetObjectItemCaseSensitive(root, "density_g_cm3")) m->density_g_cm3 = 0;
    if ((rc = check_notes_sources(&c, root, e))) goto fail;

    const cJSON *pts = cJSON_GetObjectItemCaseSensitive(root, "points");
    if (!pts) {
        rc = d2_fail(e, D2_EINPUT, "%s: missing key \"points\" (array of {frequency_thz, index, "
                     "kappa})", path);
        goto fail;
    }
    int np = cJSON_IsArray(pts) ? cJSON_GetArraySize(pts) : -1;
    if (np < 1 || np > MATERIAL_MAX_POINTS) {
        rc = d2_fail(e, D2_EINPUT, "%s: key \"points\": expected an array of 1 to %d objects "
                     "{frequency_thz, index, kappa}", path, MATERIAL_MAX_POINTS);
        goto fail;
    }
    for (int i = 0; i < np; i++) {
        char kp[32];
        snprintf(kp, sizeof kp, "points[%d]", i);
        cfg_ctx pc = {path, kp};
        const cJSON *it = cJSON_GetArrayItem(pts, i);
        material_point *q = &m->pt[i];
        if (!cJSON_IsObject(it)) {
            rc = d2_fail(e, D2_EINPUT, "%s: key \"%s\": expected an object {frequency_thz, index, "
                         "kappa}", path, kp);
            goto fail;
        }
        if ((rc = cfg_check_keys(&pc, it, pkeys, e)) ||
            (rc = cfg_num(&pc, it, "frequency_thz", 1, 0, 0.001, 100, &q->frequency_thz, e)) ||
            (rc = cfg_num(&pc, it, "kappa", 1, 0, 0, 10, &q->kappa, e)) ||
            (rc = cfg_num(&pc, it, "index", 1, 0, 1, 10, &q->index, e)))
            goto fail;
        if (q->index <= 1) {
            rc = d2_fail(e, D2_EINPUT, "%s: key \"%s.index\": %g: the refractive index must be "
                         "greater than 1 (a plate of n <= 1 gives no phase delay)", path, kp,
                         q->index);
            goto fail;
        }
        if (i > 0 && !(q->frequency_thz > m->pt[i - 1].frequency_thz)) {
            rc = d2_fail(e, D2_EINPUT, "%s: key \"%s.frequency_thz\": %g after %g: points must be "
                         "in strictly increasing frequency", path, kp, q->frequency_thz,
                         m->pt[i - 1].frequency_thz);
            goto fail;
        }
    }
    m->npoints = np;
    snprintf(m->path, sizeof m->path, "%s", path);
    m->json = root;
    return 0;
fail:
    cJSON_Delete(root);
    memset(m, 0, sizeof *m);
    return rc;
}

void material_free(material_profile *m)
{
    if (!m) return;
    cJSON_Delete(m->json);
    m->json = NULL;
}

int material_at(const material_profile *m, double f, double *index, double *kappa)
{
    const material_point *a = &m->pt[0], *b = &m->pt[m->npoints - 1];
    if (f <= a->frequency_thz || m->npoints == 1) {
        *index = a->index;
        *kappa = a->kappa;
        return fabs(f - a->frequency_thz) > 1e-3 * a->frequency_thz;
    }
    if (f >= b->frequency_thz) {
        *index = b->index;
        *kappa = b->kappa;
        return f - b->frequency_thz > 1e-3 * b->frequency_thz;
    }
    int i = 1;
    while (m->pt[i].frequency_thz < f) i++;
    const material_point *lo = &m->pt[i - 1], *hi = &m->pt[i];
    double t = (f - lo->frequency_thz) / (hi->frequency_thz - lo->frequency_thz);
    *index = lo->index + t * (hi->index - lo->index);
    *kappa = lo->kappa + t * (hi->kappa - lo->kappa);
    return 0;
}

static void add_dir(profile_path *pp, const char *dir)
{
    if (!dir || !dir[0] || pp->n >= PROFILE_MAX_DIRS) return;
    for (int i = 0; i < pp->n; i++)
        if (!strcmp(pp->dir[i], dir)) return;
    snprintf(pp->dir[pp->n++], PROFILE_PATH_MAX, "%s", dir);
}

void profile_path_init(profile_path *pp, const char *user_dir)
{
    memset(pp, 0, sizeof *pp);
    add_dir(pp, user_dir);
    add_dir(pp, getenv("D2FAB_PROFILES"));
    const char *sys = getenv("D2FAB_PRINTERS");
    add_dir(pp, sys && sys[0] ? sys : "printers");
    /* The printers folder shipped beside the binary, so that d2fab finds its
     * profiles when run from another working directory. */
    char exe[PROFILE_PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash && (size_t)(slash - exe) + sizeof "/printers" <= sizeof exe) {
            strcpy(slash, "/printers");
            add_dir(pp, exe);
        }
    }
}

static int name_ok(const char *name)
{
    if (!name[0] || name[0] == '.' || strlen(name) >= PROFILE_NAME_MAX) return 0;
    for (const char *s = name; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return 0;
    return 1;
}

static int is_path(const char *name)
{
    size_t len = strlen(name);
    return strchr(name, '/') || (len > 5 && !strcmp(name + len - 5, ".json"));
}

/* "DIR/NAME.json" or "DIR/materials/NAME.json". */
static int profile_file(const char *dir, int materials, const char *name, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s%s.json", dir, materials ? "materials/" : "", name);
    return n > 0 && (size_t)n < cap;
}

static int unknown_name(const profile_path *pp, int materials, const char *name, d2_err *e)
{
    const char *what = materials ? "material" : "printer";
    char **names = NULL;
    int count = 0;
    char list[640] = "", dirs[400] = "";
    size_t used = 0;
    if (profile_names(pp, materials, &names, &count, NULL) == 0) {
        for (int i = 0; i < count && used + 4 < sizeof list; i++) {
            int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
            if (w < 0 || (size_t)w >= sizeof list - used) {
                snprintf(list + sizeof list - 5, 5, "...");
                break;
            }
            used += (size_t)w;
        }
        profile_names_free(names, count);
    }
    used = 0;
    for (int i = 0; i < pp->n && used + 4 < sizeof dirs; i++) {
        int w = snprintf(dirs + used, sizeof dirs - used, "%s%s%s", i ? ", " : "", pp->dir[i],
                         materials ? "/materials" : "");
        if (w < 0 || (size_t)w >= sizeof dirs - used) break;
        used += (size_t)w;
    }
    return d2_fail(e, D2_EINPUT, "unknown %s '%s'; known %ss: %s (searched %s; add your own with "
                   "--profiles DIR or D2FAB_PROFILES)", what, name, what,
                   count ? list : "none found", dirs);
}

static int find_profile(const profile_path *pp, int materials, const char *name, void *out,
                        d2_err *e)
{
    const char *what = materials ? "material" : "printer";
    if (!name || !name[0]) return d2_fail(e, D2_EUSAGE, "no %s named (--%s NAME)", what, what);
    char path[PROFILE_PATH_MAX + 80];
    if (is_path(name)) {
        snprintf(path, sizeof path, "%s", name);
    } else {
        if (!name_ok(name))
            return d2_fail(e, D2_EINPUT, "%s name '%s': use letters, digits, '-', '_' and '.' "
                           "(or give a path to a .json file)", what, name);
        int found = 0;
        for (int i = 0; i < pp->n && !found; i++)
            if (profile_file(pp->dir[i], materials, name, path, sizeof path) &&
                access(path, F_OK) == 0)
                found = 1;
        if (!found) return unknown_name(pp, materials, name, e);
    }
    return materials ? material_load(path, out, e) : printer_load(path, out, e);
}

int printer_find(const profile_path *pp, const char *name, printer_profile *p, d2_err *e)
{
    return find_profile(pp, 0, name, p, e);
}

int material_find(const profile_path *pp, const char *name, material_profile *m, d2_err *e)
{
    return find_profile(pp, 1, name, m, e);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int profile_names(const profile_path *pp, int materials, char ***names, int *count, d2_err *e)
{
    char **v = NULL;
    int n = 0, cap = 0;
    *names = NULL;
    *count = 0;
    for (int i = 0; i < pp->n; i++) {
        char dir[PROFILE_PATH_MAX + 16];
        snprintf(dir, sizeof dir, "%s%s", pp->dir[i], materials ? "/materials" : "");
        DIR *d = opendir(dir);
        if (!d) continue; /* a folder on the path need not exist */
        struct dirent *de;
        while ((de = readdir(d))) {
            size_t len = strlen(de->d_name);
            if (len <= 5 || strcmp(de->d_name + len - 5, ".json")) continue;
            char stem[PROFILE_NAME_MAX + 8];
            if (len - 5 >= PROFILE_NAME_MAX) continue;
            memcpy(stem, de->d_name, len - 5);
            stem[len - 5] = 0;
            if (!name_ok(stem)) continue;
            int dup = 0;
            for (int k = 0; k < n && !dup; k++) dup = !strcmp(v[k], stem);
            if (dup) continue;
            if (n == cap) {
                int nc = cap ? 2 * cap : 16;
                char **nv = realloc(v, (size_t)nc * sizeof *nv);
                if (!nv) goto oom;
                v = nv;
                cap = nc;
            }
            if (!(v[n] = strdup(stem))) goto oom;
            n++;
            continue;
        oom:
            closedir(d);
            profile_names_free(v, n);
            return d2_fail(e, D2_EIO, "out of memory listing profiles in %s", dir);
        }
        closedir(d);
    }
    if (n) qsort(v, (size_t)n, sizeof *v, cmp_str);
    *names = v;
    *count = n;
    return 0;
}

void profile_names_free(char **names, int count)
{
    if (!names) return;
    for (int i = 0; i < count; i++) free(names[i]);
    free(names);
}

/* Rounds up to the next half millimetre, so derived sizes read cleanly. */
static double half_mm_up(double mm) { return ceil(mm * 2 - 1e-9) / 2; }

double printer_frame_label_band_mm(const printer_frame *f)
{
    /* a pitch-aligned font pixel is at most twice the asked one (mesh/plate.c) */
    return 7 * 2 * f->font_px_mm + 2 * fmax(f->min_feature_mm, f->font_px_mm);
}

double printer_frame_min_width_mm(const printer_frame *f, int holes, int labels)
{
    double mf = f->min_feature_mm, w = f->post_mm + 2 * mf;
    if (holes) w = fmax(w, f->pin_mm + 2 * f->clearance_mm + 2 * f->key_mm + 2 * mf);
    if (labels) w = fmax(w, printer_frame_label_band_mm(f));
    return w;
}

void printer_frame_default(printer_frame *f, double mf, double cl)
{
    /* The resin sizes (pin 2, key 1, post 5, band 10 mm) hold for features
     * up to 0.3 mm; coarser printers (FDM) get each size from the
     * feature: a pin of 4 strokes, a key of 2 clearances, a post that keeps
     * a shoulder of one stroke, and a band that holds posts, holes and a
     * 7-pixel label at twice the font pixel with margins. */
    double pin = fmax(2.0, 4 * mf), key = fmax(1.0, 2 * cl);
    *f = (printer_frame){.width_mm = 10.0, .thick_mm = 3.0, .pin_mm = pin,
                         .pin_len_mm = fmax(1.5, 3 * mf), .key_mm = key, .clearance_mm = cl,
                         .engrave_mm = fmax(0.4, mf), .font_px_mm = fmax(0.5, 2 * mf),
                         .min_feature_mm = mf};
    f->post_mm = fmax(5.0, half_mm_up(pin + 2 * key + 2 * mf));
    f->width_mm = fmax(10.0, half_mm_up(printer_frame_min_width_mm(f, 1, 1)));
}

double printer_print_time_h(const printer_profile *p, double height_mm, long *layers,
                            char *how, size_t how_size)
{
    long n = p->z_step_mm > 0 && height_mm > 0 ? (long)ceil(height_mm / p->z_step_mm - 1e-6) : 0;
    if (layers) *layers = n;
    double per_s = -1;
    const char *src = "";
    if (p->layer_time_s > 0) {
        per_s = p->layer_time_s;
        src = "printer profile layer_time_s";
    } else if (p->z_speed_mm_per_h > 0) {
        per_s = 3600 * p->z_step_mm / p->z_speed_mm_per_h;
        src = "Z step / the profile's vertical rate z_speed_mm_per_h, optimistic";
    }
    if (how && how_size) {
        if (per_s > 0)
            snprintf(how, how_size, "layer model: %ld layers x %.3g s (%s)", n, per_s, src);
        else
            snprintf(how, how_size, "not estimated: the printer profile gives neither "
                                    "layer_time_s nor z_speed_mm_per_h");
    }
    return per_s > 0 ? n * per_s / 3600 : -1;
}
