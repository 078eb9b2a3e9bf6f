/* Geometry, configs and model directories. */
#include "optics/optics.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/image.h"
#include "core/npy.h"


void geom_default(d2_geom *g)
{
    memset(g, 0, sizeof *g);
    g->wavelength_mm = opt_wavelength_mm(0.4);
    g->pitch_mm = 0.4;
    g->n = 200;
    g->layers = 5;
    /* Every gap a config may use, so "layers": 8 without "gaps_mm" gets 30 mm
     * gaps rather than zeros. */
    for (int k = 0; k <= D2_MAX_LAYERS; k++) g->gap_mm[k] = 30.0;
    g->pad = 2;
    g->aperture_mm = 44.8;
    geom_layout_343(g, 6.4, 16.0, 16.0);
    g->coupled = 0;
    g->index = 1.7227;
    g->kappa = 0.031;
    g->base_mm = 0.5;
}

void train_opts_default(d2_train_opts *t)
{
    *t = (d2_train_opts){.dataset = "mnist", .loss = LOSS_SOFTMAX, .temperature = 0.1,
                         .lr = 0.01, .lr_decay = 0.7, .batch = 32, .epochs = 10, .seed = 1};
}

double geom_memory_bytes(double n, int layers, int pad, int threads)
{
    double p = pad * n, nn = n * n, L = layers;
    /* net_new: L + 1 transfer functions (p x p complex), L transmissions, and
     * per thread a p x p buffer and L + 2 n x n fields; the trainer: per
     * thread L gradients and an input plane, then phases, Adam m and v and
     * the undisplaced transmissions; the MNIST images (55 MB). */
    return 8.0 * (L + 1) * p * p + 8.0 * L * nn +
           threads * (8.0 * (p * p + (L + 2) * nn) + 8.0 * L * nn + 4.0 * nn) +
           (4.0 * 3 + 8.0) * L * nn + 55e6;
}

int geom_check_memory(const d2_geom *g, int threads, d2_err *e)
{
    double need = geom_memory_bytes(g->n, g->layers, g->pad, threads) + thick_memory_bytes(g, threads, 1);
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    double have = pages > 0 && size > 0 ? (double)pages * (double)size : INFINITY;
    if (need > have)
        return d2_fail(e, D2_EIO,
                       "%d layers of %d x %d neurons with %d threads need about %.1f GB of "
                       "memory; this machine has %.1f GB (use fewer --threads or a smaller "
                       "network)",
                       g->layers, g->n, g->n, threads, need / 1e9, have / 1e9);
    return 0;
}

int geom_same_optics(const d2_geom *from, const d2_geom *cfg, char *why, size_t cap)
{
    why[0] = 0;
    if (from->n != cfg->n || from->layers != cfg->layers)
        snprintf(why, cap, "%d layers of %d x %d, the config %d of %d x %d", from->layers,
                 from->n, from->n, cfg->layers, cfg->n, cfg->n);
    else if (fabs(from->pitch_mm - cfg->pitch_mm) > 1e-9 * cfg->pitch_mm)
        snprintf(why, cap, "pitch %g mm, the config's geometry.pitch_mm %g", from->pitch_mm,
                 cfg->pitch_mm);
    else if (fabs(from->wavelength_mm - cfg->wavelength_mm) > 1e-9 * cfg->wavelength_mm)
        snprintf(why, cap, "wavelength %g mm, the config's %g mm", from->wavelength_mm,
                 cfg->wavelength_mm);
    for (int k = 0; !why[0] && k <= cfg->layers; k++)
        if (fabs(from->gap_mm[k] - cfg->gap_mm[k]) > 1e-9 * cfg->gap_mm[k])
            snprintf(why, cap, "gap %d is %g mm, the config's geometry.gaps_mm[%d] %g", k,
                     from->gap_mm[k], k, cfg->gap_mm[k]);
    return !why[0];
}

int geom_validate(const d2_geom *g, const char *file, d2_err *e)
{
    int irc;
    if (!(g->wavelength_mm > 0) || !isfinite(g->wavelength_mm))
        return d2_fail(e, D2_EINPUT, "%s: key \"geometry.wavelength_mm\" = %g: must be > 0", file,
                       g->wavelength_mm);
    if (!(g->pitch_mm > 0) || !isfinite(g->pitch_mm))
        return d2_fail(e, D2_EINPUT, "%s: key \"geometry.pitch_mm\" = %g: must be > 0", file,
                       g->pitch_mm);
    if (g->n < 4 || g->n > D2_MAX_N)
        return d2_fail(e, D2_EINPUT, "%s: key \"geometry.neurons\" = %d: must be in [4, %d]", file,
                       g->n, D2_MAX_N);
    if (g->layers < 1 || g->layers > D2_MAX_LAYERS)
        return d2_fail(e, D2_EINPUT, "%s: key \"geometry.layers\" = %d: must be in [1, %d]", file,
                       g->layers, D2_MAX_LAYERS);
    if (g->pad < 2 || g->pad > 4)
        return d2_fail(e, D2_EINPUT, "%s: key \"geometry.pad_factor\" = %d: must be in [2, 4]",
                       file, g->pad);
    /* A network that 4 worker threads could not train in 16 GB is refused
     * on any machine; train and eval check their thread count against this
     * machine's memory too. */
    double bytes = geom_memory_bytes(g->n, g->layers, g->pad, 4);
    if (bytes > D2_MEMORY_LIMIT)
        return d2_fail(e, D2_EINPUT,
                       "%s: key \"geometry.neurons\" = %d: the network would need about %.1f GB "
                       "of memory (limit %.0f GB)",
                       file, g->n, bytes / 1e9, D2_MEMORY_LIMIT / 1e9);
    double extent = g->n * g->pitch_mm;
    for (int k = 0; k <= g->layers; k++) {
        if (!(g->gap_mm[k] > 0) || !isfinite(g->gap_mm[k]))
            return d2_fail(e, D2_EINPUT, "%s: key \"geometry.gaps_mm\"[%d] = %g: must be > 0", file,
                           k, g->gap_mm[k]);
        /* A pixel of side dx diffracts into a cone of half-angle asin(lambda / 2dx);
         * if that cone does not reach the neighbouring pixel over the gap, the
         * layers are not connected and the network cannot learn. */
        double s = g->wavelength_mm / (2.0 * g->pitch_mm);
        double spread = s >= 1 ? INFINITY : g->gap_mm[k] * s / sqrt(1 - s * s);
        if (spread < g->pitch_mm)
            return d2_fail(e, D2_EINPUT,
                           "%s: key \"geometry.pitch_mm\" = %g: a pixel's diffraction cone "
                           "(half-angle %.2f deg at wavelength %g mm) spreads only %.3g mm over "
                           "gap %d (%g mm), less than one pixel: no light reaches the neighbouring "
                           "neurons of the next layer (use a finer pitch or longer gaps)",
                           file, g->pitch_mm, asin(s) * 180 / M_PI, g->wavelength_mm, spread, k,
                           g->gap_mm[k]);
    }
    if (!(g->aperture_mm > 0) || g->aperture_mm > extent + 1e-9)
        return d2_fail(e, D2_EINPUT,
                       "%s: key \"input.aperture_mm\" = %g: must be > 0 and fit the %g mm plane "
                       "(%d x %g mm)",
                       file, g->aperture_mm, extent, g->n, g->pitch_mm);
    if (g->ndet < 2 || g->ndet > D2_MAX_DET)
        return d2_fail(e, D2_EINPUT, "%s: key \"detector.centers_mm\": %d detectors, need 2..%d",
                       file, g->ndet, D2_MAX_DET);
    if (g->scheme == D2_DETECT_DIFF && (g->ndet % 2 || g->ndet < 4))
        return d2_fail(e, D2_EINPUT, "%s: key \"detector.centers_mm\": %d detectors; the "
                       "differential scheme needs an even number, at least 4", file, g->ndet);
    if (!(g->det_size_mm >= g->pitch_mm))
        return d2_fail(e, D2_EINPUT,
                       "%s: key \"detector.size_mm\" = %g: must be at least one pixel (%g mm)",
                       file, g->det_size_mm, g->pitch_mm);
    double half = 0.5 * extent;
    for (int k = 0; k < g->ndet; k++) {
        double x = g->det_x_mm[k], y = g->det_y_mm[k], h = 0.5 * g->det_size_mm;
        if (fabs(x) + h > half + 1e-9 || fabs(y) + h > half + 1e-9)
            return d2_fail(e, D2_EINPUT,
                           "%s: key \"detector.centers_mm\"[%d] = [%g, %g] with size %g mm does "
                           "not fit the %g x %g mm detector plane (|x|, |y| + size/2 <= %g)",
                           file, k, x, y, g->det_size_mm, extent, extent, half);
        for (int j = 0; j < k; j++)
            if (fabs(x - g->det_x_mm[j]) < g->det_size_mm &&
                fabs(y - g->det_y_mm[j]) < g->det_size_mm)
                return d2_fail(e, D2_EINPUT,
                               "%s: key \"detector.centers_mm\": detectors %d and %d overlap "
                               "(centres [%g, %g] and [%g, %g], size %g mm)",
                               file, j, k, g->det_x_mm[j], g->det_y_mm[j], x, y, g->det_size_mm);
    }
    if (g->coupled) {
        if (!(g->index > 1))
            return d2_fail(e, D2_EINPUT, "%s: key \"material.index\" = %g: must be > 1", file,
                           g->index);
        if (!(g->kappa >= 0))
            return d2_fail(e, D2_EINPUT, "%s: key \"material.kappa\" = %g: must be >= 0", file,
                           g->kappa);
    }
    if ((irc = illum_check(g, file, e))) return irc;
    return 0;
}

static const char *const k_top[] = {"format", "version", "software", "geometry", "input",
                                    "detector", "material", "training", "layers", "history",
                                    "initialised_from", "test_accuracy", "train_seconds",
                                    "notes", "optics", NULL};
static const char *const k_geom[] = {"frequency_thz", "wavelength_mm", "pitch_mm", "neurons",
                                     "layers", "gaps_mm", "pad_factor", NULL};
static const char *const k_input[] = {"aperture_mm", "dataset", "train", "test", "train_images",
                                     "train_labels", "test_images", "test_labels",
                                     "illumination", NULL};
static const char *const k_mat[] = {"coupled", "index", "kappa", "base_mm", "max_relief_mm", NULL};
static const char *const k_train[] = {"loss", "temperature", "learning_rate", "lr_decay",
                                      "batch", "epochs", "seed", "train_limit", "test_limit",
                                      "jitter_xy_mm", "jitter_z_mm", "jitter_rotation_deg",
                                      "quantize_levels", "quantize_z_step_mm",
                                      "efficiency_weight", NULL};
static const char *const datasets[] = {"mnist", "fashion", "folder", "idx", NULL};
static const char *const losses[] = {"softmax", "mse", NULL};

/* config_read's sections, each from its object (NULL: absent, defaults kept). */
static int read_geometry(const char *path, const cJSON *geo, d2_geom *g, d2_err *e)
{
    cfg_ctx cg = {path, "geometry"};
    double f = 0, lam = 0, v;
    long iv;
    int rc;
    if ((rc = cfg_check_keys(&cg, geo, k_geom, e))) return rc;
    if ((rc = cfg_num(&cg, geo, "frequency_thz", 0, 0, 1e-3, 1e3, &f, e))) return rc;
    if ((rc = cfg_num(&cg, geo, "wavelength_mm", 0, 0, 1e-3, 1e3, &lam, e))) return rc;
    if (f > 0 && lam > 0 && fabs(opt_wavelength_mm(f) - lam) > 1e-3 * lam)
        return d2_fail(e, D2_EINPUT,
                       "%s: keys \"geometry.frequency_thz\" = %g and \"geometry.wavelength_mm\" = "
                       "%g disagree (c / f = %g mm): give one of them",
                       path, f, lam, opt_wavelength_mm(f));
    if (f > 0) g->wavelength_mm = opt_wavelength_mm(f);
    if (lam > 0) g->wavelength_mm = lam;
    if ((rc = cfg_num(&cg, geo, "pitch_mm", 0, g->pitch_mm, 1e-4, 100, &g->pitch_mm, e))) return rc;
    if ((rc = cfg_int(&cg, geo, "layers", 0, g->layers, 1, D2_MAX_LAYERS, &iv, e))) return rc;
    g->layers = (int)iv;
    if ((rc = cfg_int(&cg, geo, "pad_factor", 0, 2, 2, 4, &iv, e))) return rc;
    g->pad = (int)iv;
    /* A plane far too large gets the memory it would need in the message. */
    const cJSON *nv = geo ? cJSON_GetObjectItemCaseSensitive(geo, "neurons") : NULL;
    if (cJSON_IsNumber(nv) && nv->valuedouble > D2_MAX_N && isfinite(nv->valuedouble))
        return d2_fail(e, D2_EINPUT,
                       "%s: key \"geometry.neurons\" = %.15g: must be an integer in [4, %d]; "
                       "%.15g x %.15g neurons in %d layers would need about %.3g GB of memory",
                       path, nv->valuedouble, D2_MAX_N, nv->valuedouble, nv->valuedouble,
                       g->layers, geom_memory_bytes(nv->valuedouble, g->layers, g->pad, 1) / 1e9);
    if ((rc = cfg_int(&cg, geo, "neurons", 0, g->n, 4, D2_MAX_N, &iv, e))) return rc;
    g->n = (int)iv;
    if (geo && cJSON_GetObjectItemCaseSensitive(geo, "gaps_mm")) {
        const cJSON *ga = cJSON_GetObjectItemCaseSensitive(geo, "gaps_mm");
        if (cJSON_IsNumber(ga)) {
            if ((rc = cfg_num(&cg, geo, "gaps_mm", 1, 0, 1e-3, 1e5, &v, e))) return rc;
            for (int k = 0; k <= g->layers; k++) g->gap_mm[k] = v;
        } else {
            int cnt = 0;
            if ((rc = cfg_num_array(&cg, geo, "gaps_mm", g->layers + 1, g->layers + 1, 1e-3, 1e5,
                                    g->gap_mm, &cnt, e)))
                return rc;
        }
    }
    return 0;
}

/* A data-set path from the config: relative to the config file's folder,
 * made absolute so that model.json names the same files wherever it is read. */
static int data_path(const char *path, const char *key, const char *val, char *out, size_t cap,
                     d2_err *e)
{
    char dir[D2_DATA_PATH] = "", cwd[D2_DATA_PATH], tmp[2 * D2_DATA_PATH];
    const char *slash = strrchr(path, '/');
    if (val[0] != '/' && slash) snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (val[0] != '/' && dir[0] != '/') {
        if (!getcwd(cwd, sizeof cwd))
            return d2_fail(e, D2_EIO, "%s: key \"input.%s\": cannot read the working folder",
                           path, key);
        if (d2_path_join(tmp, sizeof tmp, cwd, dir, e)) return D2_EINPUT;
        if (strlen(tmp) >= sizeof dir)
            return d2_fail(e, D2_EINPUT, "%s: key \"input.%s\": the config's folder path is "
                           "too long", path, key);
        memcpy(dir, tmp, strlen(tmp) + 1);
    }
    if (d2_path_join(tmp, sizeof tmp, dir, val, e) || strlen(tmp) >= cap)
        return d2_fail(e, D2_EINPUT, "%s: key \"input.%s\": path \"%s\" is too long (at most %zu "
                       "characters once resolved)", path, key, val, cap - 1);
    snprintf(out, cap, "%s", tmp);
    return 0;
}

/* The lab's own data: "folder" needs a test folder, "idx" a test image and
 * label file; the training split is optional here (phase maps trained
 * elsewhere bring only a test set; training asks for it when it opens it);
 * the shipped sets take none of these keys. */
static int read_data_paths(const char *path, const cJSON *inp, d2_train_opts *t, d2_err *e)
{
    static const char *const keys[] = {"train", "test", "train_images", "train_labels",
                                       "test_images", "test_labels"};
    char *dst[] = {t->data.train, t->data.test, t->data.train, t->data.train_labels,
                   t->data.test, t->data.test_labels};
    int folder = !strcmp(t->dataset, "folder"), idx = !strcmp(t->dataset, "idx");
    memset(&t->data, 0, sizeof t->data);
    for (int k = 0; k < 6; k++) {
        const cJSON *v = inp ? cJSON_GetObjectItemCaseSensitive(inp, keys[k]) : NULL;
        int wanted = k < 2 ? folder : idx, test = k == 1 || k >= 4;
        if (!v && (!wanted || !test)) continue;
        if (!v)
            return d2_fail(e, D2_EINPUT, "%s: missing key \"input.%s\": \"dataset\": \"%s\" needs "
                           "%s (paths relative to the config file)", path, keys[k], t->dataset,
                           folder ? "a \"test\" folder (and \"train\" to train) with "
                                    "sub-folders 0 to 9 of PNG images"
                                  : "\"test_images\" and \"test_labels\" IDX files (and "
                                    "\"train_images\", \"train_labels\" to train)");
        if (!wanted)
            return d2_fail(e, D2_EINPUT, "%s: key \"input.%s\" is not used with \"dataset\": \"%s\""
                           "; \"train\"/\"test\" go with \"folder\", \"train_images\"/... with "
                           "\"idx\"", path, keys[k], t->dataset);
        if (!cJSON_IsString(v) || !v->valuestring[0])
            return d2_fail(e, D2_EINPUT, "%s: key \"input.%s\": expected a path (a string)", path,
                           keys[k]);
        int rc = data_path(path, keys[k], v->valuestring, dst[k], D2_DATA_PATH, e);
        if (rc) return rc;
    }
    if (idx && !t->data.train[0] != !t->data.train_labels[0])
        return d2_fail(e, D2_EINPUT, "%s: \"input.train_images\" and \"input.train_labels\" "
                       "go together: give both IDX files of the training split, or neither",
                       path);
    return 0;
}

static int read_input(const char *path, const cJSON *inp, d2_geom *g, d2_train_opts *t, d2_err *e)
{
    cfg_ctx ci = {path, "input"};
    int rc;
    if ((rc = cfg_check_keys(&ci, inp, k_input, e))) return rc;
    if ((rc = cfg_num(&ci, inp, "aperture_mm", 0, g->aperture_mm, 1e-3, 1e5, &g->aperture_mm, e)))
        return rc;
    int ds = 0;
    if ((rc = cfg_enum(&ci, inp, "dataset", 0, 0, datasets, &ds, e))) return rc;
    snprintf(t->dataset, sizeof t->dataset, "%s", datasets[ds]);
    if ((rc = illum_read(path, "input", inp, g, e))) return rc;
    return read_data_paths(path, inp, t, e);
}

static int read_material(const char *path, const cJSON *mat, d2_geom *g, d2_err *e)
{
    cfg_ctx cm = {path, "material"};
    int rc;
    if ((rc = cfg_check_keys(&cm, mat, k_mat, e))) return rc;
    if ((rc = cfg_bool(&cm, mat, "coupled", 0, 0, &g->coupled, e))) return rc;
    if ((rc = cfg_num(&cm, mat, "index", 0, g->index, 1.0 + 1e-6, 10, &g->index, e))) return rc;
    if ((rc = cfg_num(&cm, mat, "kappa", 0, g->kappa, 0, 10, &g->kappa, e))) return rc;
    if ((rc = cfg_num(&cm, mat, "base_mm", 0, g->base_mm, 0, 100, &g->base_mm, e))) return rc;
    if ((rc = cfg_num(&cm, mat, "max_relief_mm", 0, 0, 0, 100, &g->max_relief_mm, e))) return rc;
    return 0;
}

static int read_training(const char *path, const cJSON *tr, d2_train_opts *t, d2_err *e)
{
    cfg_ctx ct = {path, "training"};
    long iv;
    int rc;
    if ((rc = cfg_check_keys(&ct, tr, k_train, e))) return rc;
    int loss = 0;
    if ((rc = cfg_enum(&ct, tr, "loss", 0, 0, losses, &loss, e))) return rc;
    t->loss = (d2_loss)loss;
    if ((rc = cfg_num(&ct, tr, "temperature", 0, t->temperature, 1e-4, 100, &t->temperature, e)))
        return rc;
    if ((rc = cfg_num(&ct, tr, "learning_rate", 0, t->lr, 1e-7, 10, &t->lr, e))) return rc;
    if ((rc = cfg_num(&ct, tr, "lr_decay", 0, t->lr_decay, 0.01, 1, &t->lr_decay, e))) return rc;
    if ((rc = cfg_int(&ct, tr, "batch", 0, t->batch, 1, 4096, &iv, e))) return rc;
    t->batch = (int)iv;
    if ((rc = cfg_int(&ct, tr, "epochs", 0, t->epochs, 0, 10000, &iv, e))) return rc;
    t->epochs = (int)iv;
    if ((rc = cfg_int(&ct, tr, "seed", 0, (long)t->seed, 0, 0x7fffffffL, &iv, e))) return rc;
    t->seed = (unsigned long)iv;
    if ((rc = cfg_int(&ct, tr, "train_limit", 0, 0, 0, 10000000, &iv, e))) return rc;
    t->train_limit = (int)iv;
    if ((rc = cfg_int(&ct, tr, "test_limit", 0, 0, 0, 10000000, &iv, e))) return rc;
    t->test_limit = (int)iv;
    if ((rc = cfg_num(&ct, tr, "jitter_xy_mm", 0, 0, 0, 100, &t->jitter_xy_mm, e))) return rc;
    if ((rc = cfg_num(&ct, tr, "jitter_z_mm", 0, 0, 0, 1000, &t->jitter_z_mm, e))) return rc;
    if ((rc = cfg_num(&ct, tr, "jitter_rotation_deg", 0, 0, 0, 180, &t->jitter_rot_deg, e)))
        return rc;
    if ((rc = cfg_int(&ct, tr, "quantize_levels", 0, 0, 0, 65536, &iv, e))) return rc;
    if (iv == 1)
        return d2_fail(e, D2_EINPUT,
                       "%s: key \"training.quantize_levels\" = 1: must be 0 (off) or >= 2", path);
    t->quant_levels = (int)iv;
    if ((rc = cfg_num(&ct, tr, "quantize_z_step_mm", 0, 0, 0, 10, &t->quant_z_step_mm, e)))
        return rc;
    if ((rc = cfg_num(&ct, tr, "efficiency_weight", 0, 0, 0, 1000, &t->efficiency_weight, e)))
        return rc;
    if (t->quant_levels && t->quant_z_step_mm > 0)
        return d2_fail(e, D2_EINPUT,
                       "%s: keys \"training.quantize_levels\" and \"training.quantize_z_step_mm\": "
                       "give one of them",
                       path);
    return 0;
}

int config_read(const char *path, const cJSON *root, d2_geom *g, d2_train_opts *t, d2_err *e)
{
    geom_default(g);
    train_opts_default(t);
    cfg_ctx top = {path, ""};
    int rc;
    if ((rc = cfg_check_keys(&top, root, k_top, e))) return rc;
    const cJSON *geo, *inp, *det, *mat, *tr;
    if ((rc = cfg_object(&top, root, "geometry", &geo, e))) return rc;
    if ((rc = cfg_object(&top, root, "input", &inp, e))) return rc;
    if ((rc = cfg_object(&top, root, "detector", &det, e))) return rc;
    if ((rc = cfg_object(&top, root, "material", &mat, e))) return rc;
    if ((rc = cfg_object(&top, root, "training", &tr, e))) return rc;

    if ((rc = read_geometry(path, geo, g, e)) || (rc = read_input(path, inp, g, t, e)) ||
        (rc = detector_read(path, det, g, e)) || (rc = read_material(path, mat, g, e)) ||
        (rc = optics_read(path, root, g, e)) || (rc = read_training(path, tr, t, e)))
        return rc;
    return geom_validate(g, path, e);
}

static cJSON *num_array(const double *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

cJSON *config_to_json(const d2_geom *g, const d2_train_opts *t)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *geo = cJSON_AddObjectToObject(root, "geometry");
    cJSON_AddNumberToObject(geo, "frequency_thz", opt_frequency_thz(g->wavelength_mm));
    cJSON_AddNumberToObject(geo, "wavelength_mm", g->wavelength_mm);
    cJSON_AddNumberToObject(geo, "pitch_mm", g->pitch_mm);
    cJSON_AddNumberToObject(geo, "neurons", g->n);
    cJSON_AddNumberToObject(geo, "layers", g->layers);
    cJSON_AddItemToObject(geo, "gaps_mm", num_array(g->gap_mm, g->layers + 1));
    cJSON_AddNumberToObject(geo, "pad_factor", g->pad);
    cJSON *inp = cJSON_AddObjectToObject(root, "input");
    cJSON_AddNumberToObject(inp, "aperture_mm", g->aperture_mm);
    illum_to_json(g, inp);
    cJSON_AddStringToObject(inp, "dataset", t->dataset);
    /* the lab's own data: the paths there are (no training split for maps
     * trained elsewhere) */
    int folder = !strcmp(t->dataset, "folder"), idx = !strcmp(t->dataset, "idx");
    const char *dk[] = {"train", "test", "train_images", "train_labels", "test_images",
                        "test_labels"};
    const char *dv[] = {t->data.train, t->data.test, t->data.train, t->data.train_labels,
                        t->data.test, t->data.test_labels};
    for (int k = 0; k < 6; k++)
        if ((k < 2 ? folder : idx) && dv[k][0]) cJSON_AddStringToObject(inp, dk[k], dv[k]);
    cJSON_AddItemToObject(root, "detector", detector_to_json(g));
    cJSON *mat = cJSON_AddObjectToObject(root, "material");
    cJSON_AddBoolToObject(mat, "coupled", g->coupled);
    cfg_add_numbers(mat, (const cfg_num_item[]){{"index", g->index}, {"kappa", g->kappa},
                    {"base_mm", g->base_mm}, {"max_relief_mm", g->max_relief_mm}}, 4);
    cJSON_AddItemToObject(root, "optics", optics_to_json(g));
    cJSON *tr = cJSON_AddObjectToObject(root, "training");
    cJSON_AddStringToObject(tr, "loss", t->loss == LOSS_MSE ? "mse" : "softmax");
    const cfg_num_item tn[] = {
        {"temperature", t->temperature}, {"learning_rate", t->lr}, {"lr_decay", t->lr_decay},
        {"batch", t->batch}, {"epochs", t->epochs}, {"seed", (double)t->seed},
        {"train_limit", t->train_limit}, {"test_limit", t->test_limit},
        {"jitter_xy_mm", t->jitter_xy_mm}, {"jitter_z_mm", t->jitter_z_mm},
        {"jitter_rotation_deg", t->jitter_rot_deg}, {"quantize_levels", t->quant_levels},
        {"quantize_z_step_mm", t->quant_z_step_mm},
        {"efficiency_weight", t->efficiency_weight}};
    cfg_add_numbers(tr, tn, (int)(sizeof tn / sizeof tn[0]));
    return root;
}

double train_phase_step(const d2_geom *g, const d2_train_opts *t)
{
    if (t->quant_levels > 0) return 2 * M_PI / t->quant_levels;
    if (t->quant_z_step_mm > 0)
        return opt_phase_of_thickness(t->quant_z_step_mm, g->wavelength_mm, g->index);
    return 0;
}

double geom_max_phase(const d2_geom *g)
{
    if (!(g->max_relief_mm > 0)) return 2 * M_PI;
    double ph = opt_phase_of_thickness(g->max_relief_mm, g->wavelength_mm, g->index);
    return ph < 2 * M_PI ? ph : 2 * M_PI;
}

int model_alloc(d2_model *m, d2_err *e)
{
    size_t nn = (size_t)m->g.n * m->g.n;
    for (int l = 0; l < m->g.layers; l++) {
        m->phase[l] = d2_calloc(nn, sizeof(float), "phase map", e);
        if (!m->phase[l]) return D2_EIO;
    }
    m->test_accuracy = -1;
    return 0;
}

void model_free(d2_model *m)
{
    if (!m) return;
    for (int l = 0; l < D2_MAX_LAYERS; l++) {
        free(m->phase[l]);
        free(m->amp[l]);
        free(m->height[l]);
    }
    cJSON_Delete(m->history);
    cJSON_Delete(m->init);
    memset(m, 0, sizeof *m);
}

int model_load(const char *dir, d2_model *m, d2_err *e)
{
    char path[4096], lp[4096];
    cJSON *root = NULL;
    int rc;
    memset(m, 0, sizeof *m);
    if ((rc = d2_path_join(path, sizeof path, dir, "model.json", e))) return rc;
    if ((rc = cfg_load(path, &root, e))) return rc;
    if ((rc = config_read(path, root, &m->g, &m->t, e))) goto fail;
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) != m->g.layers) {
        rc = d2_fail(e, D2_EINPUT, "%s: key \"layers\": must list %d .npy files (geometry.layers)",
                     path, m->g.layers);
        goto fail;
    }
    for (int l = 0; l < m->g.layers; l++) {
        const cJSON *it = cJSON_GetArrayItem(layers, l);
        if (!cJSON_IsString(it)) {
            rc = d2_fail(e, D2_EINPUT, "%s: key \"layers\"[%d]: must be a file name", path, l);
            goto fail;
        }
        char what[64];
        snprintf(what, sizeof what, "layers[%d]", l);
        if ((rc = d2_path_inside(dir, it->valuestring, what, e))) goto fail;
        if ((rc = d2_path_join(lp, sizeof lp, dir, it->valuestring, e))) goto fail;
        int rows, cols;
        if ((rc = npy_read_map(lp, &m->phase[l], &rows, &cols, e))) goto fail;
        if (rows != m->g.n || cols != m->g.n) {
            rc = d2_fail(e, D2_EINPUT, "%s: shape (%d, %d), expected (%d, %d) from %s", lp, rows,
                         cols, m->g.n, m->g.n, path);
            goto fail;
        }
    }
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "history");
    if (cJSON_IsArray(h)) m->history = cJSON_Duplicate(h, 1);
    const cJSON *ini = cJSON_GetObjectItemCaseSensitive(root, "initialised_from");
    if (cJSON_IsObject(ini)) m->init = cJSON_Duplicate(ini, 1);
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(root, "test_accuracy");
    m->test_accuracy = cJSON_IsNumber(acc) ? acc->valuedouble : -1;
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(root, "train_seconds");
    m->train_seconds = cJSON_IsNumber(ts) ? ts->valuedouble : 0;
    cJSON_Delete(root);
    return 0;
fail:
    cJSON_Delete(root);
    model_free(m);
    return rc;
}

/* layerK.npy / layerK.png beyond the model's layer count: a previous,
 * deeper model's, removed so two models never share a folder. */
static int stale_layer_file(const char *name, void *ctx)
{
    int layers = *(const int *)ctx;
    if (strncmp(name, "layer", 5) || name[5] < '1' || name[5] > '9') return 0;
    char *end;
    long k = strtol(name + 5, &end, 10);
    return (!strcmp(end, ".npy") || !strcmp(end, ".png")) && k > layers;
}

int model_save(const char *dir, const d2_model *m, d2_err *e)
{
    int rc, n = m->g.n;
    size_t nn = (size_t)n * n, shape[2] = {(size_t)n, (size_t)n};
    char path[4096], name[64];
    if ((rc = d2_mkdir_p(dir, e))) return rc;
    float *w = d2_malloc(nn * sizeof *w, "phase map", e);
    if (!w) return D2_EIO;
    cJSON *root = config_to_json(&m->g, &m->t);
    cJSON *layers = cJSON_CreateArray();
    for (int l = 0; l < m->g.layers; l++) {
        for (size_t i = 0; i < nn; i++) {
            float v = fmodf(m->phase[l][i], (float)(2 * M_PI));
            if (v < 0) v += (float)(2 * M_PI);
            if (v >= (float)(2 * M_PI)) v = 0;
            w[i] = v;
        }
        snprintf(name, sizeof name, "layer%d.npy", l + 1);
        if ((rc = d2_path_join(path, sizeof path, dir, name, e))) goto done;
        if ((rc = npy_write(path, NPY_F32, 2, shape, w, e))) goto done;
        cJSON_AddItemToArray(layers, cJSON_CreateString(name));
        snprintf(name, sizeof name, "layer%d.png", l + 1);
        if ((rc = d2_path_join(path, sizeof path, dir, name, e))) goto done;
        int scale = n < 256 ? 2 : 1;
        if ((rc = img_write_colormap(path, n, n, w, 0, (float)(2 * M_PI), CMAP_TWILIGHT, scale,
                                     e)))
            goto done;
    }
    int nl = m->g.layers;
    if ((rc = d2_dir_clear(dir, 0, stale_layer_file, &nl, "previous model's layer", e)))
        goto done;
    cJSON_AddItemToObject(root, "layers", layers);
    cJSON_AddItemToObject(root, "history",
                          m->history ? cJSON_Duplicate(m->history, 1) : cJSON_CreateArray());
    if (m->init) cJSON_AddItemToObject(root, "initialised_from", cJSON_Duplicate(m->init, 1));
    if (m->test_accuracy >= 0) cJSON_AddNumberToObject(root, "test_accuracy", m->test_accuracy);
    cJSON_AddNumberToObject(root, "train_seconds", m->train_seconds);
    cJSON_AddStringToObject(root, "software", "d2fab " D2FAB_VERSION);
    cJSON_AddStringToObject(root, "format", "d2fab-model");
    cJSON_AddNumberToObject(root, "version", 1);
    if ((rc = d2_path_join(path, sizeof path, dir, "model.json", e))) goto done;
    rc = cfg_write(path, root, e);
done:
    cJSON_Delete(root);
    free(w);
    return rc;
}

/* One resampler for float (0..1) and 8-bit (0..255) images: exactly one of
 * fimg and uimg is set. */
static void resample_input(const d2_geom *g, const float *fimg, const unsigned char *uimg,
                           int rows, int cols, float *out)
{
    int n = g->n;
    /* The image fills a square of side aperture_mm; the longer side sets the
     * scale. Plane pixel centre (x, y) maps to image coordinates (u, v) in
     * pixel-centre units, sampled bilinearly; outside the image: opaque. */
    double side = rows > cols ? rows : cols;
    double s = side / g->aperture_mm; /* image pixels per mm */
    /* The column terms depend on j only: computed once (the arithmetic per
     * pixel is unchanged, so the result is bit for bit the same). */
    float lut[256];
    for (int k = 0; k < 256; k++) lut[k] = k / 255.0f;
    int u0s[D2_MAX_N];
    double fus[D2_MAX_N];
    if (n > D2_MAX_N) n = D2_MAX_N; /* geometries are checked to n <= D2_MAX_N */
    for (int j = 0; j < n; j++) {
        double x = (j - 0.5 * (n - 1)) * g->pitch_mm;
        double u = x * s + 0.5 * cols - 0.5;
        u0s[j] = u > -1 && u < cols ? (int)floor(u) : INT_MIN;
        fus[j] = u0s[j] == INT_MIN ? 0 : u - u0s[j];
    }
    for (int i = 0; i < n; i++) {
        double y = (i - 0.5 * (n - 1)) * g->pitch_mm;
        double v = y * s + 0.5 * rows - 0.5;
        float *orow = out + (size_t)i * n;
        if (!(v > -1 && v < rows)) {
            memset(orow, 0, (size_t)n * sizeof *orow);
            continue;
        }
        int v0 = (int)floor(v);
        double fv = v - v0;
        for (int j = 0; j < n; j++) {
            int u0 = u0s[j];
            double fu = fus[j];
            float val = 0;
            if (u0 != INT_MIN) {
                double acc = 0;
                for (int dv = 0; dv < 2; dv++)
                    for (int du = 0; du < 2; du++) {
                        int uu = u0 + du, vv = v0 + dv;
                        if (uu < 0 || vv < 0 || uu >= cols || vv >= rows) continue;
                        double wgt = (du ? fu : 1 - fu) * (dv ? fv : 1 - fv);
                        size_t k = (size_t)vv * cols + uu;
                        acc += wgt * (fimg ? fimg[k] : lut[uimg[k]]);
                    }
                val = (float)acc;
            }
            orow[j] = val;
        }
    }
}

void input_from_image(const d2_geom *g, const float *img, int rows, int cols, float *out)
{
    resample_input(g, img, NULL, rows, cols, out);
}

void input_from_u8(const d2_geom *g, const unsigned char *img, int rows, int cols, float *out)
{
    resample_input(g, NULL, img, rows, cols, out);
}

int config_load(const char *path, d2_geom *g, d2_train_opts *t, d2_err *e)
{
    cJSON *root = NULL;
    int rc = cfg_load(path, &root, e);
    if (!rc) rc = config_read(path, root, g, t, e);
    cJSON_Delete(root);
    return rc;
}
