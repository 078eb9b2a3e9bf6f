/* One tolerance study from folders to report: what the command line and run
 * both call. */
#include "tolerance/tolerance.h"

#include <stdio.h>
#include <string.h>

#include "core/par.h"
#include "export/export.h"

/* The last component of a folder path, as the model's name in the report. */
static void folder_name(const char *dir, char *out, size_t cap)
{
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t a = len;
    while (a > 0 && dir[a - 1] != '/') a--;
    snprintf(out, cap, "%.*s", (int)(len - a), dir + a);
    if (!*out) snprintf(out, cap, "model");
}

/* Loads every model or export folder as a stack, named uniquely. */
static int load_stacks(const tol_study_opts *o, tol_study *st, d2_err *e)
{
    int rc;
    for (int i = 0; i < o->nmodels; i++) {
        const tol_study_model *sm = &o->models[i];
        d2_model m;
        char name[64];
        int is_export = 0;
        if (sm->name) snprintf(name, sizeof name, "%s", sm->name);
        else folder_name(sm->dir, name, sizeof name);
        for (int j = 0; j < i; j++)
            if (!strcmp(st->stacks[j].name, name)) {
                char base[64];
                memcpy(base, name, sizeof base);
                snprintf(name, sizeof name, "%.48s-%d", base, (i + 1) % 1000000);
            }
        if ((rc = export_model_load(sm->dir, &m, &is_export, e))) return rc;
        /* An export is scored as printed: thick plates unless told thin. */
        int optics = o->cfg->optics >= 0 ? o->cfg->optics
                     : is_export        ? D2_OPTICS_THICK
                                        : m.g.optics;
        if (optics == D2_OPTICS_THIN && m.g.optics == D2_OPTICS_THICK) {
            model_free(&m);
            return d2_fail(e, D2_EINPUT, "%s: optics \"thin\": this model was trained with thick "
                           "plates (air gaps); it has no thin equivalent", sm->dir);
        }
        if (optics == D2_OPTICS_THICK && (rc = model_make_thick(&m, 0, e))) {
            model_free(&m);
            return rc;
        }
        if ((rc = tol_stack_init(&st->stacks[i], &m, is_export ? sm->dir : NULL, name,
                                 sm->path ? sm->path : sm->dir, e)))
            return rc;
        st->nstacks = i + 1;
        if (strcmp(st->stacks[i].m.t.dataset, st->stacks[0].m.t.dataset) ||
            strcmp(st->stacks[i].m.t.data.test, st->stacks[0].m.t.data.test))
            return d2_fail(e, D2_EINPUT, "%s is trained on %s but %s on %s: models compared in "
                           "one report must use the same test set", sm->dir,
                           st->stacks[i].m.t.dataset, o->models[0].dir,
                           st->stacks[0].m.t.dataset);
    }
    return 0;
}

int tol_study_run(const tol_study_opts *o, tol_study *st, d2_err *e)
{
    const tol_config *cfg = o->cfg;
    d2_dataset ds = {0};
    d2_pool *pool = NULL;
    int rc;
    memset(st, 0, sizeof *st);
    if (o->nmodels < 1 || o->nmodels > TOL_MAX_MODELS)
        return d2_fail(e, D2_EUSAGE, "tolerance: %d models: give 1 to %d", o->nmodels,
                       TOL_MAX_MODELS);
    if ((rc = load_stacks(o, st, e))) goto done;
    /* Everything that can be refused is refused before the data set loads
     * and any inference runs: the settings each stack must take, and the run
     * size (with the 10000 MNIST test images unless the limit says fewer). */
    for (int i = 0; i < st->nstacks; i++) {
        tol_mag probe_mag;
        if ((rc = tol_bind(cfg, &st->stacks[i], &probe_mag, e))) goto done;
        tol_mag_free(&probe_mag);
    }
    const d2_geom *big = &st->stacks[0].m.g;
    for (int i = 1; i < st->nstacks; i++)
        if ((double)st->stacks[i].m.g.n * st->stacks[i].m.g.layers > (double)big->n * big->layers)
            big = &st->stacks[i].m.g;
    int nthreads = o->threads > 0 ? o->threads : d2_cpu_count();
    if ((rc = tol_check_limits(cfg, st->nstacks, cfg->limit > 0 ? cfg->limit : 10000, big,
                               nthreads, e)) ||
        (rc = dataset_open(o->data_dir, st->stacks[0].m.t.dataset, &st->stacks[0].m.t.data, 1,
                           &ds, e)))
        goto done;
    if (!(pool = d2_pool_new(o->threads, e))) {
        rc = e->code ? e->code : D2_EIO;
        goto done;
    }
    st->images = cfg->limit > 0 && cfg->limit < ds.count ? cfg->limit : ds.count;
    st->threads = d2_pool_threads(pool);
    if ((rc = tol_check_limits(cfg, st->nstacks, st->images, big, st->threads, e))) goto done;
    char ranks[48] = "";
    if (d2_par_size() > 1) snprintf(ranks, sizeof ranks, " a rank x %d MPI ranks", d2_par_size());
    if (o->announce)
        fprintf(o->announce,
                "tolerance: %d model(s), %d test images of %s, %d trials x %d scale(s), seed "
                "%llu, %d threads%s; at most %.3g inferences\n",
                st->nstacks, st->images, st->stacks[0].m.t.dataset, cfg->trials, cfg->nscales,
                (unsigned long long)cfg->seed, st->threads, ranks,
                st->nstacks * tol_plan_inferences(cfg, big->layers, st->images));
    if ((rc = tol_run(cfg, st->stacks, st->nstacks, &ds, pool, o->progress, &st->rep, e)) ||
        (d2_par_rank() == 0 && (rc = tol_write(&st->rep, o->out_dir, e))))
        goto done;
done:
    d2_pool_free(pool);
    dataset_free(&ds);
    if (rc) tol_study_free(st);
    return rc;
}

void tol_study_free(tol_study *st)
{
    if (!st) return;
    tol_report_free(&st->rep);
    for (int i = 0; i < st->nstacks; i++) tol_stack_free(&st->stacks[i]);
    memset(st, 0, sizeof *st);
}
