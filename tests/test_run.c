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

#include <assimp/cimport.h>
#include <assimp/postprocess.h>
#include <assimp/scene.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/idx.h"
#include "core/npy.h"
#include "core/image.h"
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
    char cmd[8 * PATH_MAX];
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
    /* Bare phase maps take the illumination they were designed for. */
    int irc = parse_cfg("{\"phases\": {\"files\": [\"m2/model.json\"], \"pitch_mm\": 0.4, "
                        "\"frequency_thz\": 0.4, \"illumination\": {\"type\": \"gaussian\", "
                        "\"waist_mm\": 9}}}", &c, &e);
    if (irc) printf("  %s\n", e.msg);
    CHECK(irc == 0 && c.phase_illum == D2_ILLUM_GAUSSIAN && c.phase_illum_waist_mm == 9);
    CHECK_ERR(parse_cfg("{\"phases\": {\"files\": [\"m2/model.json\"], \"pitch_mm\": 0.4, "
                        "\"frequency_thz\": 0.4, \"illumination\": {\"type\": \"point\"}}}",
                        &c, &e), e, D2_EINPUT, "phases.illumination.distance_mm");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"source_power_mw\": 0}", &c, &e), e, D2_EINPUT,
              "source_power_mw");
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"tolerance\": {\"sensitivity\": \"some\"}}", &c, &e),
              e, D2_EINPUT, "\"kinds\"");
    CHECK_ERR(parse_cfg("[1]", &c, &e), e, D2_EINPUT, "expected a JSON object");
    /* The print time: the layer model or the slicer, which reads stl, 3mf or obj. */
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"print_time\": \"fast\"}", &c, &e), e,
              D2_EINPUT, "print_time");
    CHECK(strstr(e.msg, "layers") && strstr(e.msg, "slicer"));
    CHECK_ERR(parse_cfg("{\"model\": \"m2\", \"print_time\": \"slicer\", \"mesh\": "
                        "{\"format\": \"ply\"}}", &c, &e), e, D2_EINPUT, "\"mesh\": {\"format\"");
    CHECK(strstr(e.msg, "\"print_time\": \"slicer\"") && strstr(e.msg, "\"ply\""));
    irc = parse_cfg("{\"model\": \"m2\", \"print_time\": \"slicer\", \"mesh\": "
                    "{\"format\": \"3mf\"}}", &c, &e);
    CHECK(irc == 0 && c.print_time_slicer == 1);
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

/* ---- the page in a browser ------------------------------------------------ */

/* 1 when a headless Chromium is on PATH. */
static int have_chromium(void)
{
    return system("command -v chromium > /dev/null 2>&1") == 0;
}

/* Opens a copy of the page html_path with a script that, after the load,
 * counts the images and those that did not decode (naturalWidth 0) in
 * headless Chromium (--dump-dom). Returns 0 and sets *nimg and *broken, or
 * -1 when the browser gave no answer. */
static int browser_images(const char *html_path, int *nimg, int *broken)
{
    static const char script[] =
        "<script>window.addEventListener('load',function(){var n=0,b=0;"
        "for(var i of document.images){n++;if(!(i.complete&&i.naturalWidth>0))b++;}"
        "document.body.setAttribute('data-imgcheck','images '+n+' broken '+b+' end');});"
        "</script></body>";
    char *html = NULL, copy[PATH_MAX + 32], dom[PATH_MAX + 32], cmd[4 * PATH_MAX];
    d2_err e = {0};
    if (d2_read_file(html_path, 1 << 28, &html, NULL, &e)) return -1;
    char *end = strstr(html, "</body>");
    snprintf(copy, sizeof copy, "%s.check.html", html_path);
    snprintf(dom, sizeof dom, "%s.dom.txt", html_path);
    FILE *f = fopen(copy, "w");
    if (!f || !end) {
        if (f) fclose(f);
        free(html);
        return -1;
    }
    fwrite(html, 1, (size_t)(end - html), f);
    fputs(script, f);
    fputs(end + 7, f);
    fclose(f);
    free(html);
    snprintf(cmd, sizeof cmd, "timeout 60 chromium --headless --no-sandbox --disable-gpu "
             "--virtual-time-budget=10000 --dump-dom 'file://%s' > '%s' 2>/dev/null", copy, dom);
    if (system(cmd) != 0) return -1;
    char *out = NULL;
    if (d2_read_file(dom, 1 << 28, &out, NULL, &e)) return -1;
    const char *p = strstr(out, "data-imgcheck=\"images ");
    int ok = p && sscanf(p, "data-imgcheck=\"images %d broken %d end", nimg, broken) == 2;
    free(out);
    unlink(copy);
    unlink(dom);
    return ok ? 0 : -1;
}

/* A screenshot of the page, 1200 px wide: its width, or 0. */
static int browser_screenshot(const char *html_path, const char *png)
{
    char cmd[4 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "timeout 60 chromium --headless --no-sandbox --disable-gpu "
             "--hide-scrollbars --window-size=1200,9000 --screenshot='%s' 'file://%s' "
             "> /dev/null 2>&1", png, html_path);
    if (system(cmd) != 0) return 0;
    int w = 0, h = 0;
    float *px = NULL;
    d2_err e = {0};
    if (img_read_gray(png, &w, &h, &px, &e)) return 0;
    /* Not blank: some pixel differs from the first. */
    int varied = 0;
    for (long i = 1; i < (long)w * h && !varied; i++) varied = px[i] != px[0];
    free(px);
    return varied ? w : 0;
}

/* PNG bit depth from the IHDR chunk, or 0. */
static int png_bit_depth(const char *path, int *width)
{
    unsigned char b[26];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    if (n < 26 || memcmp(b + 12, "IHDR", 4)) return 0;
    *width = b[16] << 24 | b[17] << 16 | b[18] << 8 | b[19];
    return b[24];
}

TEST(the_page_check_finds_a_broken_image)
{
    if (!have_chromium()) {
        printf("  skipped: chromium is not installed (scripts/install-deps installs it)\n");
        return;
    }
    const char *page = t_path("broken.html");
    /* One good 1 x 1 PNG and one that does not decode. */
    t_write_text(page, "<!DOCTYPE html><html><body><img src=\"data:image/png;base64,"
                 "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6k"
                 "gAAAABJRU5ErkJggg==\"><img src=\"data:image/png;base64,AAAA\"></body></html>");
    int n = -1, broken = -1;
    CHECK(browser_images(page, &n, &broken) == 0);
    CHECK(n == 2 && broken == 1);
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
        if (k && !strcmp(k, "layer")) {
            /* the run compared every layer's pillar tops with the export */
            const cJSON *tc = cJSON_GetObjectItemCaseSensitive(p, "pillar_tops_check");
            CHECK(json_num(tc, "pixels_over", NULL, NULL) == 0);
            CHECK(json_num(tc, "pixels", NULL, NULL) == 64 * 64);
            CHECK(json_num(tc, "max_mm", NULL, NULL) < json_num(tc, "tolerance_mm", NULL, NULL));
        }
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

    /* What the study simulated: the one perturbation with its limit and
     * distribution, and what it costs alone (the run's per-kind table). */
    const cJSON *pt = cJSON_GetObjectItem(tj, "perturbations");
    CHECK(cJSON_GetArraySize(pt) == 1);
    const cJSON *p0 = cJSON_GetArrayItem(pt, 0);
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(p0, "perturbation")) ?: "",
                  "lateral"));
    CHECK(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(p0, "limit")) ?: "", "0.1 mm"));
    CHECK(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(p0, "distribution")) ?: "",
                 "uniform in [-D, +D]"));
    const cJSON *alone = cJSON_GetObjectItem(p0, "alone_change_points");
    CHECK(cJSON_IsNumber(alone));
    const cJSON *dom = cJSON_GetObjectItem(tj, "dominant");
    if (cJSON_IsNumber(alone) && alone->valuedouble < 0)
        CHECK(!strcmp(cJSON_GetStringValue(dom) ?: "", "lateral"));
    else
        CHECK(cJSON_IsNull(dom));
    snprintf(path, sizeof path, "%s/report.html", pkg);
    CHECK(file_has(path, "What the study simulated"));
    CHECK(file_has(path, "lateral shift of each layer (x and y)"));
    snprintf(path, sizeof path, "%s/tolerance/report.json", pkg);
    CHECK(cfg_load(path, &tr, &e) == 0);
    const cJSON *sens = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(tr, "models"),
                                                               0), "sensitivity");
    CHECK(cJSON_GetArraySize(sens) == 1);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(sens, 0), "layer")));
    cJSON_Delete(tr);

    /* The power budget: 1 mW by default, times the printed efficiency. */
    const cJSON *pb = cJSON_GetObjectItem(rep, "power_budget");
    CHECK(json_num(rep, "power_budget", "source_power_mw", NULL) == 1);
    /* as printed: the thick-plate model's efficiency, the one the report scores */
    CHECK_NEAR(json_num(rep, "power_budget", "detector_efficiency_printed", NULL), ek.efficiency,
               1e-6 * ek.efficiency);
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(pb, "printed_optics")) ?: "", "thick"));
    CHECK_NEAR(json_num(rep, "power_budget", "detectors_total_w", NULL), 1e-3 * ek.efficiency,
               1e-6 * 1e-3 * ek.efficiency);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(pb, "low")) == (ek.efficiency < 0.01));
    snprintf(path, sizeof path, "%s/report.html", pkg);
    CHECK(file_has(path, "<h2>Power budget</h2>"));
    CHECK(file_has(path, "detector NEP needed"));

    /* Every preview is an 8-bit figure with room for axes and a colour bar;
     * one plate is shown in 3-D. */
    int relief = 0, npv = 0;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(rep, "previews")) {
        const char *f = cJSON_GetStringValue(cJSON_GetObjectItem(p, "file"));
        const char *g = cJSON_GetStringValue(cJSON_GetObjectItem(p, "group"));
        int w = 0;
        snprintf(path, sizeof path, "%s/%s", pkg, f ? f : "?");
        CHECK(png_bit_depth(path, &w) == 8);
        if (g && strcmp(g, "mask")) CHECK(w >= 500);
        relief += g && !strcmp(g, "relief");
        npv++;
    }
    CHECK(relief == 1);

    /* The page in a browser: every image decodes; a screenshot is not blank. */
    snprintf(path, sizeof path, "%s/report.html", pkg);
    if (have_chromium()) {
        int n = -1, broken = -1;
        CHECK(browser_images(path, &n, &broken) == 0);
        CHECK(n == npv && broken == 0);
        const char *shot = getenv("D2FAB_REPORT_SCREENSHOT");
        CHECK(browser_screenshot(path, shot ? shot : t_path("report.png")) == 1200);
    } else {
        printf("  browser check skipped: chromium is not installed (scripts/install-deps)\n");
    }
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


/* Every file in dir ending in ext (".json"), sorted names without it. */
static int list_profiles(const char *dir, char names[][64], int max)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    if (!d) return 0;
    while ((de = readdir(d)) && n < max) {
        size_t l = strlen(de->d_name);
        if (l < 6 || l > 60 || strcmp(de->d_name + l - 5, ".json")) continue;
        snprintf(names[n], 64, "%.*s", (int)(l - 5), de->d_name);
        n++;
    }
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0 && strcmp(names[k - 1], names[k]) > 0; k--) {
            char t[64];
            memcpy(t, names[k], 64);
            memcpy(names[k], names[k - 1], 64);
            memcpy(names[k - 1], t, 64);
        }
    return n;
}

/* Assimp's importer with its structure validation reads the STL and finds
 * as many faces as admesh's facet count. */
static int assimp_reads(const char *stl)
{
    const struct aiScene *sc = aiImportFile(stl, aiProcess_ValidateDataStructure);
    int ok = sc && sc->mNumMeshes > 0;
    for (unsigned k = 0; ok && k < sc->mNumMeshes; k++) ok = sc->mMeshes[k]->mNumFaces > 0;
    if (!ok) printf("  assimp cannot read %s: %s\n", stl, aiGetErrorString());
    aiReleaseImport(sc);
    return ok;
}

/* admesh: no disconnected facets or backwards edges, one part. */
static int admesh_accepts(const char *stl)
{
    char cmd[4 * PATH_MAX], log[PATH_MAX];
    snprintf(log, sizeof log, "%s", t_path("admesh.log"));
    snprintf(cmd, sizeof cmd, "admesh '%s' > '%s' 2>&1", stl, log);
    int ok = system(cmd) == 0 && file_has(log, "Total disconnected facets        :     0") &&
             file_has(log, "Backwards edges       :     0") &&
             file_has(log, "Number of parts       :     1");
    if (!ok) printf("  admesh rejects %s\n", stl);
    return ok;
}

/* Every shipped printer with every shipped material goes through d2fab run
 * at a pitch the printer can hold (2 x XY resolution and the minimum
 * feature, rounded up to 0.1 mm, at least 0.4 mm) with its default frame:
 * random 32 x 32 phase maps, 3 layers, no masks or study. Every part passes
 * admesh and Assimp; prusa-slicer --info reads all of them in one call and
 * finds each manifold. */
TEST(every_shipped_printer_and_material_runs_and_its_parts_validate)
{
    char prdir[PATH_MAX + 16], madir[PATH_MAX + 32], printers[16][64], materials[16][64];
    snprintf(prdir, sizeof prdir, "%s/printers", root);
    snprintf(madir, sizeof madir, "%s/printers/materials", root);
    int np = list_profiles(prdir, printers, 16), nm = list_profiles(madir, materials, 16);
    CHECK(np >= 6 && nm >= 5);
    d2_err e = {0};
    uint64_t s = 12345;
    float ph[32 * 32];
    size_t shape[2] = {32, 32};
    for (int k = 1; k <= 3; k++) {
        for (int i = 0; i < 32 * 32; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            ph[i] = (float)(2 * M_PI * (double)(s >> 11) / 9007199254740992.0);
        }
        char f[32];
        snprintf(f, sizeof f, "rand%d.npy", k);
        CHECK(npy_write(t_path(f), NPY_F32, 2, shape, ph, &e) == 0);
    }
    size_t cap = 1 << 16, len = 0;
    char *slicer = malloc(cap);
    int nparts = 0, nruns = 0;
    len += snprintf(slicer, cap, "prusa-slicer --info");
    for (int a = 0; a < np; a++) {
        char path[2 * PATH_MAX + 320];
        snprintf(path, sizeof path, "%s/%s.json", prdir, printers[a]);
        cJSON *pj = NULL;
        printer_profile pr;
        CHECK(cfg_load(path, &pj, &e) == 0 && printer_from_json(pj, path, "", &pr, &e) == 0);
        cJSON_Delete(pj);
        double pitch = fmax(0.4, ceil(fmax(2 * pr.xy_resolution_mm, pr.min_feature_mm) * 10 -
                                      1e-9) / 10);
        for (int b = 0; b < nm; b++) {
            char name[160], cfg[1200], args[4 * PATH_MAX], pkg[PATH_MAX], log[PATH_MAX + 8];
            snprintf(name, sizeof name, "pair-%.60s-%.60s", printers[a], materials[b]);
            snprintf(pkg, sizeof pkg, "%s", t_path(name));
            snprintf(log, sizeof log, "%s.log", pkg);
            snprintf(cfg, sizeof cfg,
                     "{\"phases\": {\"files\": [\"rand1.npy\", \"rand2.npy\", \"rand3.npy\"], "
                     "\"pitch_mm\": %g, \"frequency_thz\": 0.4, \"gaps_mm\": [20]}, "
                     "\"printer\": \"%.60s\", \"material\": \"%.60s\", \"test_limit\": 10}",
                     pitch, printers[a], materials[b]);
            char cfgp[PATH_MAX + 8];
            snprintf(cfgp, sizeof cfgp, "%s.json", pkg);
            write_config(cfgp, cfg);
            snprintf(args, sizeof args, "run '%s' --out '%s' --data '%s' -q", cfgp, pkg,
                     dataset_default_dir());
            int rc = d2fab(args, log);
            if (rc) {
                printf("  %s x %s at %g mm:\n", printers[a], materials[b], pitch);
                print_file(log);
            }
            CHECK(rc == 0);
            nruns += rc == 0;
            char parts[PATH_MAX + 16];
            snprintf(parts, sizeof parts, "%s/parts", pkg);
            DIR *d = opendir(parts);
            struct dirent *de;
            int here = 0;
            while (d && (de = readdir(d))) {
                if (!strstr(de->d_name, ".stl")) continue;
                snprintf(path, sizeof path, "%s/%s", parts, de->d_name);
                CHECK(admesh_accepts(path));
                CHECK(assimp_reads(path));
                if (len + strlen(path) + 8 < cap)
                    len += snprintf(slicer + len, cap - len, " '%s'", path);
                else
                    CHECK(0);
                here++;
            }
            if (d) closedir(d);
            CHECK(here >= 5); /* 3 layers, input plate, detector */
            nparts += here;
        }
    }
    char log[PATH_MAX];
    snprintf(log, sizeof log, "%s", t_path("slicer.log"));
    snprintf(slicer + len, cap - len, " > '%s' 2>&1", log);
    CHECK(system(slicer) == 0);
    free(slicer);
    char *out = NULL;
    int yes = 0;
    CHECK(d2_read_file(log, 1 << 26, &out, NULL, &e) == 0);
    for (const char *q = out; q && (q = strstr(q, "manifold = yes")); q++) yes++;
    CHECK(out && !strstr(out, "manifold = no"));
    free(out);
    CHECK(yes == nparts);
    printf("  %d printer x material runs, %d parts, %d manifold in prusa-slicer\n", nruns, nparts,
           yes);
}
/* "print_time": "slicer": a missing slicer or a PolyJet printer stops the run
 * before any work; with prusa-slicer installed every layer part gets its
 * estimate beside the layer model, and the slicer counts the same layers. */
TEST(print_time_slicer_puts_prusaslicer_beside_the_layer_model)
{
    d2_err e = {0};
    uint64_t s = 777;
    float ph[32 * 32];
    size_t shape[2] = {32, 32};
    for (int i = 0; i < 32 * 32; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        ph[i] = (float)(2 * M_PI * (double)(s >> 11) / 9007199254740992.0);
    }
    CHECK(npy_write(t_path("slice1.npy"), NPY_F32, 2, shape, ph, &e) == 0);
    const char *cfgp = t_path("slice.json"), *pkg = t_path("pkg-slice"), *log = t_path("slice.log");
    char args[4 * PATH_MAX], path[PATH_MAX + 64], cfg[512];
    const char *fmt = "{\"phases\": {\"files\": [\"slice1.npy\"], \"pitch_mm\": 0.4, "
                      "\"frequency_thz\": 0.4, \"gaps_mm\": [10]}, \"printer\": \"%s\", "
                      "\"material\": \"resin\", \"test_limit\": 10, \"thick_limit\": 5, "
                      "\"print_time\": \"slicer\"}";
    snprintf(args, sizeof args, "run '%s' --out '%s' --data '%s'", cfgp, pkg,
             dataset_default_dir());
    snprintf(path, sizeof path, "%s/report.json", pkg);
    /* PolyJet: PrusaSlicer cannot slice for it */
    snprintf(cfg, sizeof cfg, fmt, "objet-connex500");
    write_config(cfgp, cfg);
    CHECK(d2fab(args, log) == 2);
    CHECK(file_has(log, "mesh stage") && file_has(log, "polyjet") &&
          file_has(log, "\"print_time\": \"layers\"") && !file_has(log, "[1/6] model"));
    /* no slicer: named, before the first stage */
    snprintf(cfg, sizeof cfg, fmt, "anycubic-photon-mono-x");
    write_config(cfgp, cfg);
    setenv("D2FAB_SLICER", "no-such-slicer-d2fab", 1);
    CHECK(d2fab(args, log) == 2);
    unsetenv("D2FAB_SLICER");
    CHECK(file_has(log, "no-such-slicer-d2fab") && file_has(log, "D2FAB_SLICER") &&
          !file_has(log, "[1/6] model"));
    CHECK(!t_exists(path));
    if (system("prusa-slicer --help > /dev/null 2>&1") != 0) {
        printf("  skipped the sliced run: prusa-slicer is not installed\n");
        return;
    }
    int rc = d2fab(args, log);
    if (rc) print_file(log);
    CHECK(rc == 0);
    cJSON *rep = NULL;
    CHECK(cfg_load(path, &rep, &e) == 0);
    const cJSON *p, *layer = NULL;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(rep, "parts"))
        if (!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(p, "name")), "layer1")) layer = p;
    const cJSON *sl = cJSON_GetObjectItemCaseSensitive(layer, "print_time_slicer");
    double t = cJSON_GetNumberValue(cJSON_GetObjectItem(sl, "time_h"));
    double lay = cJSON_GetNumberValue(cJSON_GetObjectItem(sl, "layers"));
    double ours = cJSON_GetNumberValue(cJSON_GetObjectItem(layer, "print_layers"));
    double model = cJSON_GetNumberValue(cJSON_GetObjectItem(layer, "print_time_h"));
    CHECK(sl && t > 0 && lay > 100 && lay == ours && model > 0);
    CHECK(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(sl, "method")), "--export-sla"));
    printf("  layer1: PrusaSlicer %.3f h for %.0f layers, layer model %.3f h\n", t, lay, model);
    cJSON_Delete(rep);
    snprintf(path, sizeof path, "%s/PRINTING.txt", pkg);
    CHECK(file_has(path, "PrusaSlicer: ") && file_has(path, "PrusaSlicer lines"));
    snprintf(path, sizeof path, "%s/report.html", pkg);
    CHECK(file_has(path, "<th>PrusaSlicer</th>") && file_has(path, "PrusaSlicer column"));
    CHECK(file_has(log, "PrusaSlicer: the longest layer part"));
}

/* Bare phase maps scored on the lab's own test set: an IDX pair or a PNG
 * folder named in "phases", used by every stage and written into export.json. */
TEST(phase_maps_run_on_the_labs_own_test_set)
{
    d2_err e = {0};
    uint64_t s = 4242;
    float ph[32 * 32];
    size_t shape[2] = {32, 32};
    for (int i = 0; i < 32 * 32; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        ph[i] = (float)(2 * M_PI * (double)(s >> 11) / 9007199254740992.0);
    }
    CHECK(npy_write(t_path("own1.npy"), NPY_F32, 2, shape, ph, &e) == 0);
    enum { N = 20 };
    uint8_t px[N * 16 * 16], lb[N];
    for (int i = 0; i < N; i++) {
        lb[i] = (uint8_t)(i % 10);
        for (int k = 0; k < 256; k++) px[i * 256 + k] = (uint8_t)((k * 7 + i * 13) % 256);
    }
    CHECK(d2_mkdir_p(t_path("own"), &e) == 0);
    CHECK(idx_write_images(t_path("own/test-images"), px, N, 16, 16, &e) == 0);
    CHECK(idx_write_labels(t_path("own/test-labels"), lb, N, &e) == 0);
    const char *cfgp = t_path("own.json"), *pkg = t_path("pkg-own"), *log = t_path("own.log");
    write_config(cfgp, "{\"phases\": {\"files\": [\"own1.npy\"], \"pitch_mm\": 0.4, "
                       "\"frequency_thz\": 0.4, \"gaps_mm\": [10], \"dataset\": \"idx\", "
                       "\"test_images\": \"own/test-images\", \"test_labels\": "
                       "\"own/test-labels\"}, \"printer\": \"formlabs-form4\", \"material\": "
                       "\"resin\", \"test_limit\": 0, \"thick_limit\": 5, \"tolerance\": "
                       "{\"trials\": 2, \"sensitivity\": \"off\"}}");
    char args[4 * PATH_MAX], path[PATH_MAX + 64];
    /* no --data: the shipped sets are not needed */
    snprintf(args, sizeof args, "run '%s' --out '%s' --data '%s'", cfgp, pkg, t_path("no-data"));
    int rc = d2fab(args, log);
    if (rc) print_file(log);
    CHECK(rc == 0);
    CHECK(file_has(log, "on 20 idx test images"));
    snprintf(path, sizeof path, "%s/export/export.json", pkg);
    cJSON *ex = NULL;
    CHECK(cfg_load(path, &ex, &e) == 0);
    const cJSON *inp = cJSON_GetObjectItem(cJSON_GetObjectItem(ex, "model"), "input");
    const char *ti = cJSON_GetStringValue(cJSON_GetObjectItem(inp, "test_images"));
    const char *ds = cJSON_GetStringValue(cJSON_GetObjectItem(inp, "dataset"));
    CHECK(ds && !strcmp(ds, "idx"));
    CHECK(ti && ti[0] == '/' && strstr(ti, "own/test-images"));
    cJSON_Delete(ex);
    /* the tolerance stage read the same 20 images back through export.json */
    snprintf(path, sizeof path, "%s/report.json", pkg);
    CHECK(file_has(path, "\"test_images\":\t20"));

    /* what is wrong is named */
    run_config c;
    CHECK_ERR(parse_cfg("{\"phases\": {\"files\": [\"own1.npy\"], \"pitch_mm\": 0.4, "
                        "\"frequency_thz\": 0.4, \"dataset\": \"folder\"}}", &c, &e), e,
              D2_EINPUT, "missing key \"phases.test\"");
    CHECK_ERR(parse_cfg("{\"phases\": {\"files\": [\"own1.npy\"], \"pitch_mm\": 0.4, "
                        "\"frequency_thz\": 0.4, \"dataset\": \"idx\", \"test_images\": "
                        "\"own/test-images\"}}", &c, &e), e, D2_EINPUT,
              "missing key \"phases.test_labels\"");
    CHECK_ERR(parse_cfg("{\"phases\": {\"files\": [\"own1.npy\"], \"pitch_mm\": 0.4, "
                        "\"frequency_thz\": 0.4, \"dataset\": \"folder\", \"test\": \"own\", "
                        "\"test_images\": \"own/test-images\"}}", &c, &e), e, D2_EINPUT,
              "\"phases.test_images\" is not used");
    CHECK_ERR(parse_cfg("{\"phases\": {\"files\": [\"own1.npy\"], \"pitch_mm\": 0.4, "
                        "\"frequency_thz\": 0.4, \"dataset\": \"folder\", \"test\": "
                        "\"nowhere\"}}", &c, &e), e, D2_EINPUT, "does not exist");
    CHECK_ERR(parse_cfg("{\"phases\": {\"files\": [\"own1.npy\"], \"pitch_mm\": 0.4, "
                        "\"frequency_thz\": 0.4, \"dataset\": \"folder\", \"test\": "
                        "\"own/test-images\"}}", &c, &e), e, D2_EINPUT, "is not a folder");
    CHECK_ERR(parse_cfg("{\"phases\": {\"files\": [\"own1.npy\"], \"pitch_mm\": 0.4, "
                        "\"frequency_thz\": 0.4, \"dataset\": \"folder\", \"test\": "
                        "\"../x\"}}", &c, &e), e, D2_EINPUT, "phases.test");
    CHECK_ERR(parse_cfg("{\"phases\": {\"files\": [\"own1.npy\"], \"pitch_mm\": 0.4, "
                        "\"frequency_thz\": 0.4, \"test\": \"own\"}}", &c, &e), e, D2_EINPUT,
              "is not used with \"phases.dataset\": \"mnist\"");
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
    RUN(the_page_check_finds_a_broken_image);
    RUN(run_makes_a_package_whose_report_matches_eval_and_whose_parts_validate);
    RUN(every_shipped_printer_and_material_runs_and_its_parts_validate);
    RUN(print_time_slicer_puts_prusaslicer_beside_the_layer_model);
    RUN(phase_maps_run_on_the_labs_own_test_set);
    RUN(a_failing_stage_is_named_and_leaves_no_report_behind);
    RUN(run_refuses_an_output_folder_that_is_not_a_package);
    RUN(rerun_replaces_the_earlier_package_and_phase_maps_run_like_a_model);
    return t_finish();
}
