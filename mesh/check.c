/* d2fab mesh: topology checks (closed, manifold, oriented, parts) and
 * loading any mesh file through Assimp for them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <assimp/cimport.h>
#include <assimp/postprocess.h>
#include <assimp/scene.h>

#include "core/fileio.h"
#include "mesh/mesh_int.h"

/* ------------------------------------------------------------ union-find */

static uint32_t uf_find(uint32_t *p, uint32_t a)
{
    while (p[a] != a) {
        p[a] = p[p[a]];
        a = p[a];
    }
    return a;
}

static void uf_union(uint32_t *p, uint32_t a, uint32_t b)
{
    a = uf_find(p, a);
    b = uf_find(p, b);
    if (a != b) p[a < b ? b : a] = a < b ? a : b;
}

/* ------------------------------------------------------------- edge hash */

typedef struct edge {
    uint64_t key;   /* lo << 32 | hi, 0 = free slot (vertex ids are + 1) */
    uint32_t c[2][2]; /* corners (3 f + k) of lo and hi in the first two facets */
    uint32_t fwd, bwd;/* uses lo -> hi and hi -> lo */
} edge;

static inline uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Checks triangles tri (3 * nt vertex ids < nv) with positions pos (3 * nv,
 * mm). */
static int check_core(size_t nv, size_t nt, const uint32_t *tri, const double *pos, mesh_report *r,
                      d2_err *e)
{
    int rc = D2_EIO;
    memset(r, 0, sizeof *r);
    r->facets = nt;
    r->vertices = nv;
    size_t nslot = 16;
    while (nslot < 3 * nt) nslot <<= 1;
    edge *h = calloc(nslot, sizeof *h);
    uint32_t *cp = malloc(3 * nt * sizeof *cp), *fp = malloc(nt * sizeof *fp);
    uint32_t *comps = calloc(nv ? nv : 1, sizeof *comps);
    uint32_t *fedge = malloc(3 * nt * sizeof *fedge); /* slot of each facet edge */
    if (!h || !cp || !fp || !comps || !fedge) {
        d2_fail(e, D2_EIO, "out of memory checking a mesh of %zu facets", nt);
        goto done;
    }
    for (size_t i = 0; i < 3 * nt; i++) cp[i] = (uint32_t)i;
    for (size_t i = 0; i < nt; i++) fp[i] = (uint32_t)i;
    for (int k = 0; k < 3; k++) {
        r->lo[k] = nv ? INFINITY : 0;
        r->hi[k] = nv ? -INFINITY : 0;
    }
    for (size_t v = 0; v < nv; v++)
        for (int k = 0; k < 3; k++) {
            if (pos[3 * v + k] < r->lo[k]) r->lo[k] = pos[3 * v + k];
            if (pos[3 * v + k] > r->hi[k]) r->hi[k] = pos[3 * v + k];
        }
    double c0[3] = {0.5 * (r->lo[0] + r->hi[0]), 0.5 * (r->lo[1] + r->hi[1]),
                    0.5 * (r->lo[2] + r->hi[2])};
    for (size_t f = 0; f < nt; f++) {
        const uint32_t *t = tri + 3 * f;
        const double *a = pos + 3 * t[0], *b = pos + 3 * t[1], *c = pos + 3 * t[2];
        double u[3], w[3], ar[3], x[3], y[3], z[3];
        for (int k = 0; k < 3; k++) {
            u[k] = b[k] - a[k];
            w[k] = c[k] - a[k];
            x[k] = a[k] - c0[k];
            y[k] = b[k] - c0[k];
            z[k] = c[k] - c0[k];
        }
        ar[0] = u[1] * w[2] - u[2] * w[1];
        ar[1] = u[2] * w[0] - u[0] * w[2];
        ar[2] = u[0] * w[1] - u[1] * w[0];
        r->area_mm2 += 0.5 * sqrt(ar[0] * ar[0] + ar[1] * ar[1] + ar[2] * ar[2]);
        r->volume_mm3 += (x[0] * (y[1] * z[2] - y[2] * z[1]) + x[1] * (y[2] * z[0] - y[0] * z[2]) +
                          x[2] * (y[0] * z[1] - y[1] * z[0])) /
                         6.0;
        if (t[0] == t[1] || t[1] == t[2] || t[0] == t[2]) {
            r->degenerate_facets++;
            for (int k = 0; k < 3; k++) fedge[3 * f + k] = UINT32_MAX;
            continue;
        }
        for (int k = 0; k < 3; k++) {
            uint32_t va = t[k], vb = t[(k + 1) % 3];
            int forward = va < vb;
            uint32_t lo = forward ? va : vb, hi = forward ? vb : va;
            uint64_t key = ((uint64_t)(lo + 1) << 32) | (hi + 1);
            size_t s = mix(key) & (nslot - 1);
            while (h[s].key && h[s].key != key) s = (s + 1) & (nslot - 1);
            edge *ed = h + s;
            if (!ed->key) {
                ed->key = key;
                r->edges++;
            }
            uint32_t uses = ed->fwd + ed->bwd;
            if (uses < 2) {
                uint32_t klo = forward ? (uint32_t)k : (uint32_t)(k + 1) % 3;
                uint32_t khi = forward ? (uint32_t)(k + 1) % 3 : (uint32_t)k;
                ed->c[uses][0] = (uint32_t)(3 * f + klo);
                ed->c[uses][1] = (uint32_t)(3 * f + khi);
            }
            if (forward) ed->fwd++;
            else ed->bwd++;
            fedge[3 * f + k] = (uint32_t)s;
        }
    }
    for (size_t s = 0; s < nslot; s++) {
        edge *ed = h + s;
        if (!ed->key) continue;
        uint32_t uses = ed->fwd + ed->bwd;
        if (uses == 1) r->open_edges++;
        else if (uses > 2) r->nonmanifold_edges++;
        else if (ed->fwd != 1) r->inconsistent_edges++;
        if (uses == 2) {
            uf_union(cp, ed->c[0][0], ed->c[1][0]);
            uf_union(cp, ed->c[0][1], ed->c[1][1]);
        }
    }
    /* parts: facets joined through any shared edge (first user of a slot
     * stands for it) */
    uint32_t *first = malloc(nslot * sizeof *first);
    if (!first) {
        d2_fail(e, D2_EIO, "out of memory checking a mesh of %zu facets", nt);
        goto done;
    }
    for (size_t s = 0; s < nslot; s++) first[s] = UINT32_MAX;
    for (size_t f = 0; f < nt; f++)
        for (int k = 0; k < 3; k++) {
            uint32_t s = fedge[3 * f + k];
            if (s == UINT32_MAX) continue;
            if (first[s] == UINT32_MAX) first[s] = (uint32_t)f;
            else uf_union(fp, first[s], (uint32_t)f);
        }
    free(first);
    for (size_t f = 0; f < nt; f++)
        if (uf_find(fp, (uint32_t)f) == f) r->parts++;
    /* fans around each vertex: corners joined through two-facet edges */
    for (size_t c = 0; c < 3 * nt; c++) {
        if (fedge[c - c % 3] == UINT32_MAX) continue; /* degenerate facet */
        if (uf_find(cp, (uint32_t)c) == c) comps[tri[c]]++;
    }
    for (size_t v = 0; v < nv; v++)
        if (comps[v] > 1) r->nonmanifold_vertices++;
    r->closed = nt > 0 && !r->open_edges && !r->nonmanifold_edges && !r->inconsistent_edges &&
                !r->nonmanifold_vertices && !r->degenerate_facets;
    rc = 0;
done:
    free(h);
    free(cp);
    free(fp);
    free(comps);
    free(fedge);
    return rc;
}

int mesh_check(const mesh *m, mesh_report *r, d2_err *e)
{
    double *pos = malloc((m->nv ? m->nv : 1) * 3 * sizeof *pos);
    if (!pos) return d2_fail(e, D2_EIO, "out of memory checking a mesh of %zu facets", m->nt);
    for (size_t v = 0; v < m->nv; v++) {
        pos[3 * v] = m->v[3 * v] * MESH_Q_MM;
        pos[3 * v + 1] = m->v[3 * v + 1] * MESH_Q_MM;
        pos[3 * v + 2] = m->v[3 * v + 2] * MESH_QZ_MM;
    }
    int rc = check_core(m->nv, m->nt, m->t, pos, r, e);
    if (!rc) r->volume_mm3 = mesh_volume_mm3(m);
    free(pos);
    return rc;
}

int mesh_check_soup(const float *xyz, size_t facets, mesh_report *r, d2_err *e)
{
    int rc = D2_EIO;
    size_t nc = 3 * facets, nslot = 16, nv = 0;
    while (nslot < 2 * nc) nslot <<= 1;
    uint32_t *slot = calloc(nslot, sizeof *slot), *tri = malloc((nc ? nc : 1) * sizeof *tri);
    double *pos = malloc((nc ? nc : 1) * 3 * sizeof *pos);
    uint32_t(*key)[3] = malloc((nc ? nc : 1) * sizeof *key);
    if (!slot || !tri || !pos || !key) {
        d2_fail(e, D2_EIO, "out of memory checking a mesh of %zu facets", facets);
        goto done;
    }
    for (size_t c = 0; c < nc; c++) {
        uint32_t k[3];
        for (int q = 0; q < 3; q++) {
            float f = xyz[3 * c + q] + 0.0f; /* -0 joins +0 */
            memcpy(k + q, &f, 4);
        }
        size_t s = mix(((uint64_t)k[0] << 32 | k[1]) ^ mix(k[2])) & (nslot - 1);
        while (slot[s]) {
            uint32_t *o = key[slot[s] - 1];
            if (o[0] == k[0] && o[1] == k[1] && o[2] == k[2]) break;
            s = (s + 1) & (nslot - 1);
        }
        if (!slot[s]) {
            memcpy(key[nv], k, sizeof k);
            for (int q = 0; q < 3; q++) pos[3 * nv + q] = xyz[3 * c + q];
            slot[s] = (uint32_t)++nv;
        }
        tri[c] = slot[s] - 1;
    }
    rc = check_core(nv, facets, tri, pos, r, e);
done:
    free(slot);
    free(tri);
    free(pos);
    free(key);
    return rc;
}

typedef struct soup {
    float *v;
    size_t n, cap; /* facets */
} soup;

static int soup_add(soup *s, const float *a, const float *b, const float *c)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4096;
        float *v = realloc(s->v, cap * 9 * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    float *d = s->v + 9 * s->n++;
    memcpy(d, a, 3 * sizeof *d);
    memcpy(d + 3, b, 3 * sizeof *d);
    memcpy(d + 6, c, 3 * sizeof *d);
    return 0;
}

static int walk(const struct aiScene *sc, const struct aiNode *nd, struct aiMatrix4x4 tr, soup *s,
                int depth)
{
    if (depth > 64) return 0;
    struct aiMatrix4x4 t = tr;
    aiMultiplyMatrix4(&t, &nd->mTransformation);
    for (unsigned i = 0; i < nd->mNumMeshes; i++) {
        const struct aiMesh *m = sc->mMeshes[nd->mMeshes[i]];
        for (unsigned f = 0; f < m->mNumFaces; f++) {
            const struct aiFace *fc = m->mFaces + f;
            if (fc->mNumIndices < 3) continue;
            float p[3][3];
            for (unsigned k = 0; k + 2 < fc->mNumIndices; k++) {
                unsigned id[3] = {fc->mIndices[0], fc->mIndices[k + 1], fc->mIndices[k + 2]};
                for (int q = 0; q < 3; q++) {
                    struct aiVector3D v = m->mVertices[id[q]];
                    aiTransformVecByMatrix4(&v, &t);
                    p[q][0] = v.x;
                    p[q][1] = v.y;
                    p[q][2] = v.z;
                }
                if (soup_add(s, p[0], p[1], p[2])) return -1;
            }
        }
    }
    for (unsigned i = 0; i < nd->mNumChildren; i++)
        if (walk(sc, nd->mChildren[i], t, s, depth + 1)) return -1;
    return 0;
}

int mesh_check_file(const char *path, mesh_report *r, d2_err *e)
{
    /* Assimp opens the file itself: the checked open first, so a FIFO or
     * device is refused instead of read forever. */
    int crc = d2_check_input(path, e);
    if (crc) return crc;
    const struct aiScene *sc = aiImportFile(path, aiProcess_JoinIdenticalVertices);
    if (!sc)
        return d2_fail(e, D2_EINPUT, "%s: cannot read it as a mesh: %s", path, aiGetErrorString());
    soup s = {0};
    int rc = 0;
    struct aiMatrix4x4 id;
    aiIdentityMatrix4(&id);
    if (sc->mRootNode) rc = walk(sc, sc->mRootNode, id, &s, 0);
    aiReleaseImport(sc);
    if (rc) {
        free(s.v);
        return d2_fail(e, D2_EIO, "%s: out of memory loading %zu facets", path, s.n);
    }
    if (!s.n) {
        free(s.v);
        return d2_fail(e, D2_EINPUT, "%s: the file holds no triangles", path);
    }
    rc = mesh_check_soup(s.v, s.n, r, e);
    free(s.v);
    return rc;
}
