/* Tests of d2fab run: the config, and the whole pipeline end to end on a
 * small network trained here (64 x 64, 3 layers, 1500 images). */
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/idx.h"
#include "export/export.h"
#include "run/run.h"
#include "run/run_int.h"
#include "testlib.h"
#include "train/train.h"

static char root[PATH_MAX];   /* the repository: d2fab, samples/, printers/ */
static char model_dir[PATH_MAX];
static int have_model;

/* The repository root: two folders above build/tests/test_run, else ".". */
static void find_root(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    snprintf(root, sizeof root, ".");
    if (n <= 0) return;
    exe[n] = 0;
    for (int up = 0; up < 3; up++) {
        char *s = strrchr(exe, '/');
        if (!s) return;
        *s = 0;
    }
    char probe[PATH_MAX + 32];
    snprintf(probe, sizeof probe, "%s/samples/quick.json", exe);
    if (t_exists(probe)) snprintf(root, sizeof root, "%s", exe);
}

/* Runs d2fab with args; stdout and stderr go to log. Returns the exit status. */
static int d2fab(const char *args, const char *log)
{
    char cmd[4 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "'%s/d2fab' %s > '%s' 2>&1", root, args, log);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int file_has(const char *path, const char *needle)
{
    char *buf = NULL;
    d2_err e = {0};
    if (d2_read_file(path, 1 << 26, &buf, NULL, &e)) return 0;
    int yes = strstr(buf, needle) != NULL;
    free(buf);
    return yes;
}

static void print_file(const char *path)
{
    char *buf = NULL;
    d2_err e = {0};
    if (!d2_read_file(path, 1 << 20, &buf, NULL, &e)) printf("  --- %s:\n%s", path, buf);
    free(buf);
}

/* Trains the small model the pipeline tests share (once). */
static int quick_model(void)
{
    if (have_model) return 1;
    d2_err e = {0};
    d2_model m = {0};
    cJSON *rootj = NULL;
    char cfg[PATH_MAX + 32];
    snprintf(cfg, sizeof cfg, "%s/samples/quick.json", root);
    if (cfg_load(cfg, &rootj, &e) || config_read(cfg, rootj, &m.g, &m.t, &e)) {
        printf("  %s\n", e.msg);
        cJSON_Delete(rootj);
        return 0;
    }
    cJSON_Delete(rootj);
    m.t.epochs = 1;
    m.t.train_limit = 1500;
    m.t.test_limit = 200;
    snprintf(model_dir, sizeof model_dir, "%s", t_path("model"));
    train_run_opts ro = {dataset_default_dir(), 0, 0, NULL};
    int rc = model_alloc(&m, &e);
    if (!rc) rc = train_model(&m, model_dir, &ro, &e);
    if (rc) printf("  training the test model: %s\n", e.msg);
    model_free(&m);
    have_model = !rc;
    return have_model;
}

static int write_config(const char *path, const char *text)
{
    t_write_text(path, text);
    return 0;
}

/* ------------------------------------------------------------------------ */

TEST(base64_matches_the_rfc_4648_vectors)
{
    static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *b = run_base64((const unsigned char *)in[i], strlen(in[i]));
        CHECK(b && !strcmp(b, out[i]));
        free(b);
    }
}

static int parse_cfg(const char *text, run_config *c, d2_err *e)
{
    cJSON *j = NULL;
    int rc = cfg_parse("t.json", text, &j, e);
    if (!rc) rc = run_config_from_json("t.json", t_tmpdir(), j, c, e);
    cJSON_Delete(j);
    return rc;
}

TEST(config_paths_are_relative_to_the_config_folder_and_defaults_fill_the_rest)
{
    d2_err e = {0};
    run_config c;
    char dir[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/m1", t_tmpdir());
    CHECK(d2_mkdir_p(dir, &e) == 0);
    snprintf(dir, sizeof dir, "%s/m1/model.json", t_tmpdir());
    t_write_text(dir, "{}");
    CHECK(parse_cfg("{\"model\": \"m1\"}", &c, &e) == 0);
    snprintf(dir, sizeof dir, "%s/m1", t_tmpdir());
    CHECK(!strcmp(c.model_dir, dir));
    CHECK(!strcmp(c.printer, "objet-connex500") && !strcmp(c.material, "verobp"));
    CHECK(!strcmp(c.mesh_format, "stl") && c.test_limit == 1000 && !c.tolerance);
    CHECK(c.mask_ndigits == 0 && c.mask_nindices == 0 && isnan(c.base_mm));
    CHECK(parse_cfg("{\"model\": \"m1\", \"masks\": {\"digits\": [0, 6], \"count\": 2}, "
                    "\"tolerance\": {\"trials\": 5, \"lateral_mm\": 0.05}, \"export\": "
                    "{\"phase_offset\": 0.5, \"levels\": 8}, \"mesh\": {\"format\": \"3mf\"}}",
                    &c, &e) == 0);
    CHECK(c.mask_ndigits == 2 && c.mask_digits[1] == 6 && c.mask_count == 2);
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(c.tolerance, "trials")) == 5);
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(c.tolerance, "lateral_mm")) == 0.05);
    CHECK(c.offset_mode == EXP_OFFSET_FIXED && c.offset_rad == 0.5 && c.levels == 8);
    CHECK(!strcmp(c.mesh_format, "3mf"));
    run_config_free(&c);
    CHECK(!c.tolerance);
    run_config_free(NULL);
}

TEST(config_errors_name_the_key_the_value_and_what_is_allowed)
{
    d2_err e = {0};
    run_config c;
    char dir[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/m2", t_tmpdir());
    CHECK(d2_mkdir_p(dir, &e) == 0);
    snprintf(dir, sizeof dir, "%s/m2/model.json", t_tmpdir());
    t_write_text(dir, "{}");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"printr\": \"x\"}", &c, &e), e, D2_EINPUT,
              "did you mean \"printer\"");
    CHECK_ERR(parse_cfg("{\"printer\": \"x\"}", &c, &e), e, D2_EINPUT, "not neither");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"phases\": {}}", &c, &e), e, D2_EINPUT,
              "not both");
    CHECK_ERR(parse_cfg("{\"model\": \"nowhere\"}", &c, &e), e, D2_EINPUT, "does not exist");
    CHECK_ERR(parse_cfg("{\"model\": \".\"}", &c, &e), e, D2_EINPUT, "holds no model.json");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"masks\": {\"digits\": [10]}}", &c, &e), e,
              D2_EINPUT, "masks.digits[0]");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"masks\": {}}", &c, &e), e, D2_EINPUT,
              "test_indices");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"masks\": {\"digits\": [1.5]}}", &c, &e), e,
              D2_EINPUT, "whole number");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"tolerance\": 5}", &c, &e), e, D2_EINPUT,
              "tolerance");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"tolerance\": {\"trialz\": 3}}", &c, &e), e,
              D2_EINPUT, "section \"tolerance\": t.json: unknown key \"trialz\"");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"mesh\": {\"format\": \"iges\"}}", &c, &e), e,
              D2_EINPUT, "mesh.format");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"export\": {\"levels\": 1}}", &c, &e), e,
              D2_EINPUT, "export.levels");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"export\": {\"phase_offset\": \"x\"}}", &c, &e),
              e, D2_EINPUT, "export.phase_offset");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"export\": {\"index\": 1}}", &c, &e), e,
              D2_EINPUT, "export.index");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"frequency_thz\": -1}", &c, &e), e, D2_EINPUT,
              "frequency_thz");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"printer\": \"p/none.json\"}", &c, &e), e,
              D2_EINPUT, "none.json does not exist");
    CHECK_ERR(parse_cfg("{\"phases\": {\"files\": [\"m2/model.json\"], \"pitch_mm\": 0.4}}", &c,
                        &e), e, D2_EINPUT, "phases.frequency_thz");
    CHECK_ERR(parse_cfg("{\"phases\": {\"files\": [\"m2/model.json\"], \"pitch_mm\": 0.4, "
                        "\"frequency_thz\": 0.4, \"gaps_mm\": [1, 2, 3]}}", &c, &e), e,
              D2_EINPUT, "give 1 (every gap) or 2");
    CHECK_ERR(parse_cfg("{\"phases\": {\"files\": [\"m2\"], \"pitch_mm\": 0.4, "
                        "\"frequency_thz\": 0.4}}", &c, &e), e, D2_EINPUT, "is a folder");
    CHECK_ERR(parse_cfg("[1]", &c, &e), e, D2_EINPUT, "expected a JSON object");
}

TEST(shipped_sample_config_is_valid)
{
    /* Read against a folder holding a stand-in model, so the check does not
     * depend on the trained sample being present. */
    d2_err e = {0};
    cJSON *j = NULL;
    run_config c;
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/samples/run.json", root);
    CHECK(cfg_load(path, &j, &e) == 0);
    const char *model = cJSON_GetStringValue(cJSON_GetObjectItem(j, "model"));
    CHECK(model && !strcmp(model, "mnist-model"));
    snprintf(path, sizeof path, "%s/mnist-model", t_tmpdir());
    CHECK(d2_mkdir_p(path, &e) == 0);
    snprintf(path, sizeof path, "%s/mnist-model/model.json", t_tmpdir());
    t_write_text(path, "{}");
    int rc = run_config_from_json("samples/run.json", t_tmpdir(), j, &c, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    /* make demo runs in a few minutes on 2 cores: a small study. */
    double trials = cJSON_GetNumberValue(cJSON_GetObjectItem(c.tolerance, "trials"));
    double limit = cJSON_GetNumberValue(cJSON_GetObjectItem(c.tolerance, "limit"));
    CHECK(trials > 0 && trials <= 50 && limit > 0 && limit <= 1000);
    CHECK(c.test_limit > 0 && c.test_limit <= 2000);
    CHECK(c.mask_ndigits > 0);
    run_config_free(&c);
    cJSON_Delete(j);
}

/* Every src= and href= of report.html is a data: URI or a file of the
 * package; none points outside (no URL, no absolute path, no ".."). Returns
 * the number of relative references checked. */
static int check_html_refs(const char *pkg)
{
    char path[PATH_MAX + 32], *html = NULL;
    d2_err e = {0};
    snprintf(path, sizeof path, "%s/report.html", pkg);
    if (d2_read_file(path, 1 << 28, &html, NULL, &e)) {
        printf("  %s\n", e.msg);
        CHECK(0);
        return 0;
    }
    int files = 0, data = 0;
    static const char *const attrs[] = {" src=\"", " href=\""};
    for (int a = 0; a < 2; a++) {
        for (const char *p = html; (p = strstr(p, attrs[a])); ) {
            p += strlen(attrs[a]);
            const char *q = strchr(p, '"');
            CHECK(q != NULL);
            if (!q) break;
            char ref[PATH_MAX];
            snprintf(ref, sizeof ref, "%.*s", (int)(q - p), p);
            p = q;
            if (!strncmp(ref, "data:image/png;base64,", 22)) {
                data++;
                continue;
            }
            int outside = strstr(ref, "://") || ref[0] == '/' || strstr(ref, "..") ||
                          !strncmp(ref, "data:", 5);
            char full[2 * PATH_MAX];
            snprintf(full, sizeof full, "%s/%s", pkg, ref);
            if (outside || !t_exists(full)) {
                printf("  report.html refers to \"%s\", %s\n", ref,
                       outside ? "outside the package" : "which does not exist");
                CHECK(0);
            }
            files++;
        }
    }
    CHECK(!strstr(html, "://")); /* no URL anywhere: links, styles, namespaces */
    CHECK(data >= 3); /* phase, height and detector pictures are embedded */
    free(html);
    return files;
}

static double json_num(const cJSON *j, const char *a, const char *b, const char *c)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, a);
    if (b) x = cJSON_GetObjectItemCaseSensitive(x, b);
    if (c) x = cJSON_GetObjectItemCaseSensitive(x, c);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

static const char *stage_status(const cJSON *rep, const char *name)
{
    const cJSON *st;
    cJSON_ArrayForEach(st, cJSON_GetObjectItemCaseSensitive(rep, "stages"))
        if (!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(st, "name")), name))
            return cJSON_GetStringValue(cJSON_GetObjectItem(st, "status"));
    return "";
}

/* admesh: 0 disconnected facets, 0 backwards edges, 1 part; prusa-slicer:
 * manifold = yes. */
static int validators_accept(const char *stl)
{
    char cmd[3 * PATH_MAX], log[PATH_MAX];
    snprintf(log, sizeof log, "%s", t_path("validator.log"));
    snprintf(cmd, sizeof cmd, "admesh '%s' > '%s' 2>&1", stl, log);
    if (system(cmd) != 0) return 0;
    int ok = file_has(log, "Total disconnected facets        :     0") &&
             file_has(log, "Backwards edges       :     0") &&
             file_has(log, "Number of parts       :     1");
    snprintf(cmd, sizeof cmd, "prusa-slicer --info '%s' > '%s' 2>&1", stl, log);
    if (system(cmd) != 0) return 0;
    ok = ok && file_has(log, "manifold = yes");
    if (!ok) printf("  %s fails the mesh validators\n", stl);
    return ok;
}

TEST(run_makes_a_package_whose_report_matches_eval_and_whose_parts_validate)
{
    if (!quick_model()) {
        CHECK(0);
        return;
    }
    const char *pkg = t_path("pkg"), *log = t_path("run.log"), *cfgp = t_path("run.json");
    char cfg[4 * PATH_MAX], args[4 * PATH_MAX];
    snprintf(cfg, sizeof cfg,
             "{\"model\": \"model\", \"printer\": \"objet-connex500\", \"material\": \"verobp\","
             " \"frequency_thz\": 0.4, \"test_limit\": 300, \"thick_limit\": 100,"
             " \"masks\": {\"digits\": [0, 8], \"count\": 1},"
             " \"tolerance\": {\"trials\": 3, \"limit\": 100, \"lateral_mm\": 0.1,"
             " \"inverse\": false}}");
    write_config(cfgp, cfg);
    snprintf(args, sizeof args, "run '%s' --out '%s' --data '%s'", cfgp, pkg,
             dataset_default_dir());
    int rc = d2fab(args, log);
    if (rc) print_file(log);
    CHECK(rc == 0);
    CHECK(file_has(log, "[1/6] model:") && file_has(log, "[2/6] export:") &&
          file_has(log, "[6/6] report:"));
    CHECK(file_has(log, "print package: "));

    /* The report's accuracy is eval's on the same inputs: the model, and the
     * export loaded back as what will be printed: thick plates in the
     * assembly as built on thick_limit images, thin phase screens beside it. */
    d2_err e = {0};
    cJSON *rep = NULL;
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/report.json", pkg);
    CHECK(cfg_load(path, &rep, &e) == 0);
    d2_model m;
    eval_result ev, ex;
    CHECK(model_load(model_dir, &m, &e) == 0);
    CHECK(eval_model(&m, dataset_default_dir(), 300, 0, NULL, NULL, &ev, &e) == 0);
    model_free(&m);
    snprintf(path, sizeof path, "%s/export", pkg);
    CHECK(export_load_as_model(path, &m, &e) == 0);
    CHECK(eval_model(&m, dataset_default_dir(), 300, 0, NULL, NULL, &ex, &e) == 0);
    model_free(&m);
    CHECK(ev.count == 300 && ex.count == 300);
    CHECK(json_num(rep, "accuracy", "design", "accuracy") == ev.accuracy);
    CHECK(json_num(rep, "accuracy", "design", "correct") == ev.correct);
    CHECK(json_num(rep, "accuracy", "as_printed_thin", "accuracy") == ex.accuracy);
    CHECK(json_num(rep, "accuracy", "as_printed_thin", "test_images") == 300);
    eval_result ek;
    CHECK(export_load_as_model(path, &m, &e) == 0);
    CHECK(model_make_thick(&m, 0, &e) == 0);
    CHECK(eval_model(&m, dataset_default_dir(), 100, 0, NULL, NULL, &ek, &e) == 0);
    model_free(&m);
    CHECK(json_num(rep, "accuracy", "as_printed", "accuracy") == ek.accuracy);
    CHECK(json_num(rep, "accuracy", "as_printed", "test_images") == 100);
    const cJSON *po = cJSON_GetObjectItem(cJSON_GetObjectItem(rep, "accuracy"), "as_printed_optics");
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(po, "model")) ?: "", "thick"));
    /* The efficiencies tell the two apart (the printed plates absorb). */
    CHECK_NEAR(json_num(rep, "accuracy", "design", "detector_efficiency"), ev.efficiency,
               1e-6 * ev.efficiency);
    CHECK_NEAR(json_num(rep, "accuracy", "as_printed_thin", "detector_efficiency"), ex.efficiency,
               1e-6 * ex.efficiency);
    CHECK_NEAR(json_num(rep, "accuracy", "as_printed", "detector_efficiency"), ek.efficiency,
               1e-6 * ek.efficiency);
    CHECK(ex.efficiency < 0.9 * ev.efficiency);
    printf("  accuracy design %.1f%%, as printed %.1f%%\n", 100 * ev.accuracy,
           100 * ex.accuracy);
    CHECK(!strcmp(stage_status(rep, "model"), "done"));
    CHECK(!strcmp(stage_status(rep, "export"), "done"));
    CHECK(!strcmp(stage_status(rep, "report"), "done"));

    /* report.html: one page, nothing outside the package. */
    int refs = check_html_refs(pkg);
    CHECK(refs >= 3); /* PRINTING.txt, report.json, export/export.json at least */
    snprintf(path, sizeof path, "%s/PRINTING.txt", pkg);
    CHECK(file_has(path, "Layer height  0.016 mm"));
    CHECK(file_has(path, "on 100 test images, thick-plate model of the assembly as built"));
    for (int k = 1; k <= 3; k++) {
        snprintf(path, sizeof path, "%s/previews/layer%d_phase.png", pkg, k);
        CHECK(t_exists(path));
        snprintf(path, sizeof path, "%s/previews/layer%d_height.png", pkg, k);
        CHECK(t_exists(path));
    }

    /* Every part passes the mesh validators: 3 layers, the detector and the
     * 2 masks (digits 0 and 8), which take the open input plate's place. */
    CHECK(!strcmp(stage_status(rep, "mesh"), "done"));
    CHECK(!strcmp(stage_status(rep, "masks"), "done"));
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(rep, "parts"), *p;
    int nm = 0;
    CHECK(cJSON_GetArraySize(parts) == 6);
    cJSON_ArrayForEach(p, parts) {
        const char *f = cJSON_GetStringValue(cJSON_GetObjectItem(p, "file"));
        const char *k = cJSON_GetStringValue(cJSON_GetObjectItem(p, "kind"));
        nm += k && !strcmp(k, "mask");
        snprintf(path, sizeof path, "%s/%s", pkg, f ? f : "?");
        CHECK(validators_accept(path));
    }
    CHECK(nm == 2);
    const cJSON *ma = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(rep, "accuracy"), "masks");
    CHECK(cJSON_IsObject(ma));

    /* assembly.json sits beside the report; its file names resolve there. */
    snprintf(path, sizeof path, "%s/assembly.json", pkg);
    cJSON *as = NULL;
    CHECK(cfg_load(path, &as, &e) == 0);
    int nf = 0;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(as, "parts")) {
        const char *f = cJSON_GetStringValue(cJSON_GetObjectItem(p, "file"));
        snprintf(path, sizeof path, "%s/%s", pkg, f ? f : "?");
        CHECK(t_exists(path));
        nf++;
    }
    const cJSON *imf = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(as, "input_masks"), "files");
    cJSON_ArrayForEach(p, imf) {
        snprintf(path, sizeof path, "%s/%s", pkg, cJSON_GetStringValue(p));
        CHECK(t_exists(path));
        nf++;
    }
    CHECK(nf == cJSON_GetArraySize(parts));
    const char *af = cJSON_GetStringValue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(as, "assembly"), "file"));
    snprintf(path, sizeof path, "%s/%s", pkg, af ? af : "?");
    CHECK(af && t_exists(path));
    /* The stack as built has the spacing the thick model scored: datum gaps
     * less each plate's thickness are the air gaps the tolerance study used. */
    const cJSON *sp = cJSON_GetObjectItem(as, "spacing");
    const cJSON *dg = cJSON_GetObjectItem(sp, "datum_gaps_mm"), *ag = cJSON_GetObjectItem(sp, "air_gaps_mm");
    const cJSON *pl = cJSON_GetObjectItem(sp, "plate_thickness_mm");
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(sp, "optics")) ?: "", "thick"));
    CHECK(cJSON_GetArraySize(dg) == 4 && cJSON_GetArraySize(ag) == 4 && cJSON_GetArraySize(pl) == 3);
    cJSON *tr = NULL;
    snprintf(path, sizeof path, "%s/tolerance/report.json", pkg);
    CHECK(cfg_load(path, &tr, &e) == 0);
    const cJSON *tg = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(tr, "models"), 0), "optics"),
        "gaps_mm");
    CHECK(cJSON_GetArraySize(tg) == 4);
    for (int k = 0; k < 4 && cJSON_GetArraySize(tg) == 4 && cJSON_GetArraySize(dg) == 4; k++) {
        double d = cJSON_GetArrayItem(dg, k)->valuedouble, a = cJSON_GetArrayItem(ag, k)->valuedouble;
        double t = k ? cJSON_GetArrayItem(pl, k - 1)->valuedouble : 0;
        CHECK_NEAR(a, d - t, 1e-9);
        CHECK(t == 0 || t > 0.1);
        CHECK_NEAR(cJSON_GetArrayItem(tg, k)->valuedouble, a, 1e-9);
    }
    cJSON_Delete(tr);
    cJSON_Delete(as);

    /* The tolerance study's nominal accuracy is eval's on the first 100
     * images of the stack as printed (thick plates, the default for an
     * export, said in the report); the yield plot is in the page. */
    CHECK(!strcmp(stage_status(rep, "tolerance"), "done"));
    eval_result e100;
    snprintf(path, sizeof path, "%s/export", pkg);
    CHECK(export_load_as_model(path, &m, &e) == 0);
    CHECK(model_make_thick(&m, 0, &e) == 0);
    CHECK(eval_model(&m, dataset_default_dir(), 100, 0, NULL, NULL, &e100, &e) == 0);
    model_free(&m);
    CHECK(json_num(rep, "accuracy", "tolerance", "nominal_accuracy") == e100.accuracy);
    CHECK(json_num(rep, "accuracy", "tolerance", "trials") == 3);
    /* The yield's spec is said in words: no spec was set, so nominal - 1 point. */
    const cJSON *tj = cJSON_GetObjectItem(cJSON_GetObjectItem(rep, "accuracy"), "tolerance");
    CHECK(!strncmp(cJSON_GetStringValue(cJSON_GetObjectItem(tj, "optics")) ?: "", "thick", 5));
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(tj, "spec_rule")) ?: "",
                  "nominal - 1 point"));
    CHECK_NEAR(json_num(rep, "accuracy", "tolerance", "spec_accuracy"), e100.accuracy - 0.01,
               1e-12);
    snprintf(path, sizeof path, "%s/report.html", pkg);
    CHECK(file_has(path, "reach the spec, "));
    CHECK(file_has(path, "(the nominal accuracy less 1 point)"));
    snprintf(path, sizeof path, "%s/tolerance/yield.png", pkg);
    CHECK(t_exists(path));
    cJSON_Delete(rep);
}

/* Names in dir starting with '.' other than . and .. (temporaries). */
static int hidden_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    if (!d) return 0;
    while ((de = readdir(d)))
        if (de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(d);
    return n;
}

TEST(a_failing_stage_is_named_and_leaves_no_report_behind)
{
    if (!quick_model()) {
        CHECK(0);
        return;
    }
    const char *pkg = t_path("pkg-fail"), *log = t_path("fail.log"), *cfgp = t_path("fail.json");
    char args[4 * PATH_MAX], path[PATH_MAX + 64];
    write_config(cfgp, "{\"model\": \"model\", \"test_limit\": 100}");
    snprintf(args, sizeof args, "run '%s' --out '%s' --data '%s'", cfgp, pkg,
             dataset_default_dir());
    CHECK(d2fab(args, log) == 0);
    snprintf(path, sizeof path, "%s/report.json", pkg);
    CHECK(t_exists(path));
    /* The same package again without the test images: the model stage
     * fails, and the earlier report is gone with it. */
    snprintf(args, sizeof args, "run '%s' --out '%s' --data '%s'", cfgp, pkg, t_path("no-data"));
    CHECK(d2fab(args, log) == 2);
    CHECK(file_has(log, "model stage:") && file_has(log, "fetch-data"));
    CHECK(!t_exists(path));
    snprintf(path, sizeof path, "%s/report.html", pkg);
    CHECK(!t_exists(path));
    snprintf(path, sizeof path, "%s/previews", pkg);
    CHECK(hidden_files(pkg) == 0 && hidden_files(path) == 0);
    /* An unknown printer stops the run at the export stage, naming both. */
    write_config(cfgp, "{\"model\": \"model\", \"test_limit\": 100, \"printer\": \"nope\"}");
    snprintf(args, sizeof args, "run '%s' --out '%s' --data '%s'", cfgp, pkg,
             dataset_default_dir());
    CHECK(d2fab(args, log) == 2);
    CHECK(file_has(log, "export stage:") && file_has(log, "nope") &&
          file_has(log, "objet-connex500"));
}

TEST(run_refuses_an_output_folder_that_is_not_a_package)
{
    if (!quick_model()) {
        CHECK(0);
        return;
    }
    const char *dir = t_path("busy"), *log = t_path("busy.log"), *cfgp = t_path("busy.json");
    char args[4 * PATH_MAX], path[PATH_MAX + 64];
    d2_err e = {0};
    CHECK(d2_mkdir_p(dir, &e) == 0);
    snprintf(path, sizeof path, "%s/thesis.tex", dir);
    t_write_text(path, "mine");
    write_config(cfgp, "{\"model\": \"model\", \"test_limit\": 100}");
    snprintf(args, sizeof args, "run '%s' --out '%s' --data '%s'", cfgp, dir,
             dataset_default_dir());
    CHECK(d2fab(args, log) == 1);
    CHECK(file_has(log, "thesis.tex") && file_has(log, "not part of a print package"));
    snprintf(path, sizeof path, "%s/export", dir);
    CHECK(!t_exists(path));
    /* A bad config fails before anything is written, with exit status 2. */
    write_config(cfgp, "{\"model\": \"model\", \"test_limt\": 100}");
    snprintf(args, sizeof args, "run '%s' --out '%s'", cfgp, t_path("never"));
    CHECK(d2fab(args, log) == 2);
    CHECK(file_has(log, "test_limit") && !t_exists(t_path("never")));
    CHECK(d2fab("run", log) == 1 && file_has(log, "--out DIR is required"));
}

TEST(rerun_replaces_the_earlier_package_and_phase_maps_run_like_a_model)
{
    if (!quick_model()) {
        CHECK(0);
        return;
    }
    /* Bare phase maps (as from PyTorch) with the quick geometry. */
    const char *pkg = t_path("pkg-phase"), *log = t_path("phase.log"), *cfgp = t_path("phase.json");
    char cfg[4 * PATH_MAX], args[4 * PATH_MAX], path[PATH_MAX + 64];
    snprintf(cfg, sizeof cfg,
             "{\"phases\": {\"files\": [\"model/layer1.npy\", \"model/layer2.npy\", "
             "\"model/layer3.npy\"], \"pitch_mm\": 0.4, \"frequency_thz\": 0.4, "
             "\"gaps_mm\": [20]}, \"test_limit\": 200}");
    write_config(cfgp, cfg);
    snprintf(args, sizeof args, "run '%s' --out '%s' --data '%s'", cfgp, pkg,
             dataset_default_dir());
    int rc = d2fab(args, log);
    if (rc) print_file(log);
    CHECK(rc == 0);
    /* The accuracy is eval's for the model the maps make. */
    const char *files[3];
    char fb[3][PATH_MAX + 32];
    for (int k = 0; k < 3; k++) {
        snprintf(fb[k], sizeof fb[k], "%s/layer%d.npy", model_dir, k + 1);
        files[k] = fb[k];
    }
    double gap = 20;
    exp_phase_input in = {files, 3, 0.4, opt_wavelength_mm(0.4), &gap, 1, 0, 0, 0};
    d2_model m;
    d2_err e = {0};
    eval_result ev;
    CHECK(exp_model_from_phases(&in, &m, &e) == 0);
    CHECK(eval_model(&m, dataset_default_dir(), 200, 0, NULL, NULL, &ev, &e) == 0);
    model_free(&m);
    cJSON *rep = NULL;
    snprintf(path, sizeof path, "%s/report.json", pkg);
    CHECK(cfg_load(path, &rep, &e) == 0);
    CHECK(json_num(rep, "accuracy", "design", "accuracy") == ev.accuracy);
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(rep, "model"),
                                                            "kind")), "phase"));
    cJSON_Delete(rep);

    /* Files an earlier run left in the package's folders are replaced. */
    snprintf(path, sizeof path, "%s/previews/layer9_phase.png", pkg);
    t_write_text(path, "stale");
    CHECK(d2_mkdir_p(t_path("pkg-phase/parts"), &e) == 0);
    t_write_text(t_path("pkg-phase/parts/layer9.stl"), "stale");
    CHECK(d2fab(args, log) == 0);
    CHECK(!t_exists(path) && !t_exists(t_path("pkg-phase/parts/layer9.stl")));
}

int main(void)
{
    find_root();
    if (!getenv("D2FAB_PRINTERS")) {
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s/printers", root);
        setenv("D2FAB_PRINTERS", p, 1);
    }
    RUN(base64_matches_the_rfc_4648_vectors);
    RUN(config_paths_are_relative_to_the_config_folder_and_defaults_fill_the_rest);
    RUN(config_errors_name_the_key_the_value_and_what_is_allowed);
    RUN(shipped_sample_config_is_valid);
    RUN(run_makes_a_package_whose_report_matches_eval_and_whose_parts_validate);
    RUN(a_failing_stage_is_named_and_leaves_no_report_behind);
    RUN(run_refuses_an_output_folder_that_is_not_a_package);
    RUN(rerun_replaces_the_earlier_package_and_phase_maps_run_like_a_model);
    return t_finish();
}
