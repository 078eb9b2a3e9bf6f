/* d2fab mesh: topology checks (closed, manifold, oriented, parts) and
 * loading any mesh file for them (binary STL read directly, everything else
 * through Assimp).
 *
 * The check is vertex-centred and linear in the mesh size: the corners of the
 * non-degenerate facets are bucketed by vertex (a counting sort), and each
 * vertex's bucket, a handful of corners, holds every facet that uses any edge
 * at that vertex. Sorting a bucket's 2 d edge ends by the other vertex gives
 * each edge's uses and directions, the fans around the vertex (corners joined
 * through edges used by exactly two facets) and the facets to join into
 * parts. Memory: 4 bytes per corner, per facet and per vertex besides the
 * mesh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

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

static inline uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Big work arrays: mapped directly and marked for transparent huge pages,
 * which cuts the page faults of first touch (a third of the check's time on
 * a 1000 x 1000 plate with 4 KiB pages). Sizes are kept in front. */
static void *big_alloc(size_t bytes, int zero)
{
    size_t total = bytes + 64;
    if (total < ((size_t)4 << 20)) {
        char *p = zero ? calloc(1, total) : malloc(total);
        if (!p) return NULL;
        *(size_t *)p = 0;
        return p + 64;
    }
    total = (total + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
    char *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, total, MADV_HUGEPAGE);
#endif
    *(size_t *)p = total; /* fresh anonymous memory is zero */
    return p + 64;
}

static void big_free(void *q)
{
    if (!q) return;
    char *p = (char *)q - 64;
    size_t total = *(size_t *)p;
    if (total) munmap(p, total);
    else free(p);
}

/* Vertex positions: integer grid units with scales (a mesh), or floats. */
typedef struct vpos {
    const int32_t *iv;
    const float *fv;
    double scale[3];
} vpos;

static inline void getpos(const vpos *P, uint32_t v, double out[3])
{
    if (P->iv)
        for (int k = 0; k < 3; k++) out[k] = P->iv[3 * (size_t)v + k] * P->scale[k];
    else
        for (int k = 0; k < 3; k++) out[k] = P->fv[3 * (size_t)v + k];
}

/* One end of an edge seen from the bucket's vertex: the other vertex, the
 * local corner (index in the bucket) and whether the edge leaves the vertex. */
typedef struct eend {
    uint32_t w, loc, out;
} eend;

static int eend_cmp(const void *a, const void *b)
{
    const eend *x = a, *y = b;
    if (x->w != y->w) return x->w < y->w ? -1 : 1;
    return (int)x->loc - (int)y->loc;
}

static inline int degenerate(const uint32_t *t) { return t[0] == t[1] || t[1] == t[2] || t[0] == t[2]; }

/* Checks triangles tri (3 * nt vertex ids < nv) with positions P (mm). */
/* Bounding box of the nv vertices. */
static void check_bbox(const vpos *P, size_t nv, mesh_report *r)
{
    for (int k = 0; k < 3; k++) {
        r->lo[k] = nv ? INFINITY : 0;
        r->hi[k] = nv ? -INFINITY : 0;
    }
    for (size_t v = 0; v < nv; v++) {
        double x[3];
        getpos(P, (uint32_t)v, x);
        for (int k = 0; k < 3; k++) {
            if (x[k] < r->lo[k]) r->lo[k] = x[k];
            if (x[k] > r->hi[k]) r->hi[k] = x[k];
        }
    }
}

/* Area, volume and degenerate facets; corners counted per vertex into
 * off[v + 2]; fp[f] = f (each facet its own part). The loads of a later
 * facet are started early (the vertices are scattered). For a mesh the
 * volume is exact: 6 V = sum of det(a, b, c) in 128-bit integers, as
 * mesh_volume_mm3 does. */
static void check_facets(const uint32_t *tri, size_t nt, const vpos *P, uint32_t *off,
                         uint32_t *fp, mesh_report *r)
{
    double c0[3] = {0.5 * (r->lo[0] + r->hi[0]), 0.5 * (r->lo[1] + r->hi[1]),
                    0.5 * (r->lo[2] + r->hi[2])};
    __int128 ivol = 0;
    for (size_t f = 0; f < nt; f++) {
        if (f + 16 < nt)
            for (int k = 0; k < 3; k++) {
                uint32_t pv = tri[3 * (f + 16) + k];
                if (P->iv) __builtin_prefetch(P->iv + 3 * (size_t)pv);
                else __builtin_prefetch(P->fv + 3 * (size_t)pv);
                __builtin_prefetch(off + pv + 2, 1);
            }
        const uint32_t *t = tri + 3 * f;
        if (P->iv) {
            const int32_t *a = P->iv + 3 * (size_t)t[0], *b = P->iv + 3 * (size_t)t[1],
                          *c = P->iv + 3 * (size_t)t[2];
            int64_t cx = (int64_t)b[1] * c[2] - (int64_t)b[2] * c[1];
            int64_t cy = (int64_t)b[2] * c[0] - (int64_t)b[0] * c[2];
            int64_t cz = (int64_t)b[0] * c[1] - (int64_t)b[1] * c[0];
            ivol += (__int128)a[0] * cx + (__int128)a[1] * cy + (__int128)a[2] * cz;
        }
        double a[3], b[3], c[3], u[3], w[3], ar[3], x[3], y[3], z[3];
        getpos(P, t[0], a);
        getpos(P, t[1], b);
        getpos(P, t[2], c);
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
        if (!P->iv)
            r->volume_mm3 += (x[0] * (y[1] * z[2] - y[2] * z[1]) +
                              x[1] * (y[2] * z[0] - y[0] * z[2]) +
                              x[2] * (y[0] * z[1] - y[1] * z[0])) /
                             6.0;
        fp[f] = (uint32_t)f;
        if (degenerate(t)) {
            r->degenerate_facets++;
            continue;
        }
        for (int k = 0; k < 3; k++) off[t[k] + 2]++;
    }
    if (P->iv) r->volume_mm3 = (double)ivol * (P->scale[0] * P->scale[1] * P->scale[2]) / 6.0;
}

/* Counting sort of the corners by vertex: off[v + 1] is the fill point of
 * vertex v's bucket, and after the fill off[v] .. off[v + 1] is it. */
static void check_buckets(const uint32_t *tri, size_t nt, size_t nv, uint32_t *off,
                          uint32_t *corner)
{
    for (size_t v = 0; v < nv; v++) off[v + 2] += off[v + 1];
    for (size_t f = 0; f < nt; f++) {
        if (f + 16 < nt)
            for (int k = 0; k < 3; k++) __builtin_prefetch(off + tri[3 * (f + 16) + k] + 1, 1);
        if (f + 8 < nt)
            for (int k = 0; k < 3; k++)
                __builtin_prefetch(corner + off[tri[3 * (f + 8) + k] + 1], 1);
        const uint32_t *t = tri + 3 * f;
        if (degenerate(t)) continue;
        for (int k = 0; k < 3; k++) corner[off[t[k] + 1]++] = (uint32_t)(3 * f + k);
    }
}

/* Scratch of the per-vertex pass, grown to the largest fan. */
typedef struct fan_ws {
    eend *ends;
    uint32_t *loc_uf;
    uint32_t cap;
} fan_ws;

/* The edges leaving vertex v (counted once, at their lower vertex), its fans
 * (more than one: a non-manifold vertex), and the parts its edges join.
 * D2_EIO when the scratch cannot grow. */
static int check_vertex(size_t v, const uint32_t *tri, const uint32_t *off,
                        const uint32_t *corner, uint32_t *fp, fan_ws *ws, mesh_report *r)
{
    uint32_t b0 = off[v], d = off[v + 1] - b0;
    if (!d) return 0;
    if (d > ws->cap) {
        while (ws->cap < d) ws->cap *= 2;
        free(ws->ends);
        free(ws->loc_uf);
        ws->ends = malloc(2 * (size_t)ws->cap * sizeof *ws->ends);
        ws->loc_uf = malloc((size_t)ws->cap * sizeof *ws->loc_uf);
        if (!ws->ends || !ws->loc_uf) return D2_EIO;
    }
    eend *ends = ws->ends;
    uint32_t *loc_uf = ws->loc_uf;
    for (uint32_t q = 0; q < d; q++) {
        uint32_t c = corner[b0 + q], f = c / 3, k = c % 3;
        const uint32_t *t = tri + 3 * (size_t)f;
        ends[2 * q] = (eend){t[(k + 1) % 3], q, 1};
        ends[2 * q + 1] = (eend){t[(k + 2) % 3], q, 0};
        loc_uf[q] = q;
    }
    uint32_t ne = 2 * d;
    if (ne <= 32) {
        for (uint32_t i = 1; i < ne; i++) {
            eend x = ends[i];
            uint32_t j = i;
            while (j > 0 && eend_cmp(&ends[j - 1], &x) > 0) {
                ends[j] = ends[j - 1];
                j--;
            }
            ends[j] = x;
        }
    } else {
        qsort(ends, ne, sizeof *ends, eend_cmp);
    }
    for (uint32_t i = 0; i < ne;) {
        uint32_t j = i + 1;
        while (j < ne && ends[j].w == ends[i].w) j++;
        uint32_t uses = j - i, w = ends[i].w;
        if (uses == 2) uf_union(loc_uf, ends[i].loc, ends[i + 1].loc);
        if (v < w) {
            /* each edge once, at its lower vertex: lo -> hi leaves v */
            uint32_t fwd = 0;
            for (uint32_t q = i; q < j; q++) fwd += ends[q].out;
            r->edges++;
            if (uses == 1) r->open_edges++;
            else if (uses > 2) r->nonmanifold_edges++;
            else if (fwd != 1) r->inconsistent_edges++;
            uint32_t f0 = corner[b0 + ends[i].loc] / 3;
            for (uint32_t q = i + 1; q < j; q++) uf_union(fp, f0, corner[b0 + ends[q].loc] / 3);
        }
        i = j;
    }
    uint32_t fans = 0;
    for (uint32_t q = 0; q < d; q++)
        if (uf_find(loc_uf, q) == q) fans++;
    if (fans > 1) r->nonmanifold_vertices++;
    return 0;
}

static int check_core(size_t nv, size_t nt, const uint32_t *tri, const vpos *P, mesh_report *r,
                      d2_err *e)
{
    int rc = D2_EIO;
    memset(r, 0, sizeof *r);
    r->facets = nt;
    r->vertices = nv;
    if (3 * nt >= UINT32_MAX || nv >= UINT32_MAX)
        return d2_fail(e, D2_EINPUT, "a mesh of %zu facets and %zu vertices: at most %u corners",
                       nt, nv, UINT32_MAX - 1);
    uint32_t *off = big_alloc((nv + 2) * sizeof *off, 1);
    uint32_t *corner = big_alloc((nt ? 3 * nt : 1) * sizeof *corner, 0);
    uint32_t *fp = big_alloc((nt ? nt : 1) * sizeof *fp, 0);
    fan_ws ws = {malloc(2 * 64 * sizeof(eend)), malloc(64 * sizeof(uint32_t)), 64};
    if (!off || !corner || !fp || !ws.ends || !ws.loc_uf) goto oom;
    check_bbox(P, nv, r);
    check_facets(tri, nt, P, off, fp, r);
    check_buckets(tri, nt, nv, off, corner);
    for (size_t v = 0; v < nv; v++) {
        if (v + 8 < nv) /* a later vertex's facets: their loads overlap this work */
            for (uint32_t q = off[v + 8]; q < off[v + 9]; q++) {
                __builtin_prefetch(tri + 3 * (size_t)(corner[q] / 3));
                __builtin_prefetch(fp + corner[q] / 3);
            }
        if (check_vertex(v, tri, off, corner, fp, &ws, r)) goto oom;
    }
    for (size_t f = 0; f < nt; f++)
        if (uf_find(fp, (uint32_t)f) == f) r->parts++;
    r->closed = nt > 0 && !r->open_edges && !r->nonmanifold_edges && !r->inconsistent_edges &&
                !r->nonmanifold_vertices && !r->degenerate_facets;
    rc = 0;
    goto done;
oom:
    rc = d2_fail(e, D2_EIO, "out of memory checking a mesh of %zu facets", nt);
done:
    big_free(off);
    big_free(corner);
    big_free(fp);
    free(ws.ends);
    free(ws.loc_uf);
    return rc;
}

int mesh_check(const mesh *m, mesh_report *r, d2_err *e)
{
    vpos P = {m->v, NULL, {MESH_Q_MM, MESH_Q_MM, MESH_QZ_MM}};
    return check_core(m->nv, m->nt, m->t, &P, r, e);
}

/* ------------------------------------------- joining vertices by position */

typedef struct vjoin {
    float *v;       /* 3 per vertex: the position, -0 made +0 */
    size_t nv, cap;
    uint32_t *slot; /* index + 1, 0 = free; load under one half */
    size_t nslot;
} vjoin;

static inline size_t vj_hash(const uint32_t k[3])
{
    return (size_t)mix(((uint64_t)k[0] << 32 | k[1]) ^ mix(k[2]));
}

static int vj_init(vjoin *j, size_t expect)
{
    memset(j, 0, sizeof *j);
    j->nslot = 1024;
    while (j->nslot < 2 * expect) j->nslot <<= 1;
    j->cap = expect > 256 ? expect : 256;
    j->slot = big_alloc(j->nslot * sizeof *j->slot, 1);
    j->v = big_alloc(3 * j->cap * sizeof *j->v, 0);
    return j->slot && j->v ? 0 : -1;
}

static void vj_free(vjoin *j)
{
    big_free(j->slot);
    big_free(j->v);
}

/* The index of the vertex at p (bit-exact, -0 joins +0), added if new;
 * UINT32_MAX when out of memory or past 2^32 - 2 vertices. */
static uint32_t vj_add(vjoin *j, const float *p)
{
    uint32_t k[3];
    for (int q = 0; q < 3; q++) {
        float f = p[q] + 0.0f;
        memcpy(k + q, &f, 4);
    }
    size_t mask = j->nslot - 1, s = vj_hash(k) & mask;
    for (;;) {
        uint32_t id = j->slot[s];
        if (!id) break;
        if (!memcmp(j->v + 3 * (size_t)(id - 1), k, sizeof k)) return id - 1;
        s = (s + 1) & mask;
    }
    if (j->nv >= UINT32_MAX - 1) return UINT32_MAX;
    if (j->nv == j->cap) {
        size_t cap = 2 * j->cap;
        float *v = big_alloc(3 * cap * sizeof *v, 0);
        if (!v) return UINT32_MAX;
        memcpy(v, j->v, 3 * j->nv * sizeof *v);
        big_free(j->v);
        j->v = v;
        j->cap = cap;
    }
    memcpy(j->v + 3 * j->nv, k, sizeof k);
    uint32_t id = (uint32_t)j->nv++;
    if (2 * j->nv > j->nslot) {
        size_t n = 2 * j->nslot;
        uint32_t *ns = big_alloc(n * sizeof *ns, 1);
        if (!ns) return UINT32_MAX;
        for (size_t i = 0; i < j->nv; i++) {
            size_t t = vj_hash((const uint32_t *)(j->v + 3 * i)) & (n - 1);
            while (ns[t]) t = (t + 1) & (n - 1);
            ns[t] = (uint32_t)i + 1;
        }
        big_free(j->slot);
        j->slot = ns;
        j->nslot = n;
    } else {
        j->slot[s] = id + 1;
    }
    return id;
}

/* Starts loading what vj_add(j, p) will read: its hash slot (stage 0) or,
 * once that is in cache, the vertex it names (stage 1). p may be unaligned. */
static inline void vj_prefetch(const vjoin *j, const void *p, int stage)
{
    uint32_t k[3];
    float f[3];
    memcpy(f, p, sizeof f);
    for (int q = 0; q < 3; q++) {
        f[q] += 0.0f;
        memcpy(k + q, f + q, 4);
    }
    size_t s = vj_hash(k) & (j->nslot - 1);
    if (!stage) {
        __builtin_prefetch(j->slot + s);
    } else {
        uint32_t id = j->slot[s];
        if (id) __builtin_prefetch(j->v + 3 * (size_t)(id - 1));
    }
}

static int check_joined(vjoin *j, size_t facets, const uint32_t *tri, mesh_report *r, d2_err *e)
{
    vpos P = {NULL, j->v, {1, 1, 1}};
    return check_core(j->nv, facets, tri, &P, r, e);
}

int mesh_check_soup(const float *xyz, size_t facets, mesh_report *r, d2_err *e)
{
    int rc = D2_EIO;
    size_t nc = 3 * facets;
    vjoin j;
    uint32_t *tri = malloc((nc ? nc : 1) * sizeof *tri);
    /* a closed mesh of triangles has about half as many vertices as facets */
    if (vj_init(&j, facets / 2 + 1) || !tri) goto oom;
    for (size_t c = 0; c < nc; c++)
        if ((tri[c] = vj_add(&j, xyz + 3 * c)) == UINT32_MAX) goto oom;
    rc = check_joined(&j, facets, tri, r, e);
    goto done;
oom:
    rc = d2_fail(e, D2_EIO, "out of memory checking a mesh of %zu facets", facets);
done:
    vj_free(&j);
    free(tri);
    return rc;
}

/* A binary STL: the file is 84 + 50 * count bytes, count in bytes 80-83.
 * Read in chunks straight into the joined vertices, never held whole.
 * Returns 1 when path is not such a file (the caller tries Assimp). */
static int check_binary_stl(const char *path, mesh_report *r, d2_err *e)
{
    size_t len = strlen(path);
    if (len < 4 || strcasecmp(path + len - 4, ".stl")) return 1;
    FILE *f = NULL;
    if (d2_fopen_input(path, &f, NULL)) return 1;
    unsigned char head[84];
    long size = -1;
    if (fread(head, 1, 84, f) == 84 && !fseek(f, 0, SEEK_END)) size = ftell(f);
    uint32_t count = (uint32_t)head[80] | (uint32_t)head[81] << 8 | (uint32_t)head[82] << 16 |
                     (uint32_t)head[83] << 24;
    if (size < 84 || (uint64_t)size != 84 + 50 * (uint64_t)count || fseek(f, 84, SEEK_SET)) {
        fclose(f);
        return 1;
    }
    if (!count) {
        fclose(f);
        return d2_fail(e, D2_EINPUT, "%s: the file holds no triangles", path);
    }
    int rc = D2_EIO;
    enum { CHUNK = 4096 };
    unsigned char *buf = malloc(50 * CHUNK);
    uint32_t *tri = malloc(3 * (size_t)count * sizeof *tri);
    vjoin j;
    if (vj_init(&j, count / 2 + 1) || !buf || !tri) {
        rc = d2_fail(e, D2_EIO, "%s: out of memory loading %u facets", path, count);
        goto done;
    }
    for (size_t got = 0; got < count;) {
        size_t k = count - got < CHUNK ? count - got : CHUNK;
        if (fread(buf, 50, k, f) != k) {
            rc = d2_fail(e, D2_EIO, "%s: read error after %zu of %u facets", path, got, count);
            goto done;
        }
        for (size_t q = 0; q < k; q++)
            for (int c = 0; c < 3; c++) {
                /* the lookups are random: start the slot loads 8 facets
                 * ahead and the vertex loads 4 facets ahead */
                if (q + 8 < k) vj_prefetch(&j, buf + 50 * (q + 8) + 12 + 12 * c, 0);
                if (q + 4 < k) vj_prefetch(&j, buf + 50 * (q + 4) + 12 + 12 * c, 1);
                float p[3];
                memcpy(p, buf + 50 * q + 12 + 12 * c, sizeof p); /* little-endian */
                uint32_t id = vj_add(&j, p);
                if (id == UINT32_MAX) {
                    rc = d2_fail(e, D2_EIO, "%s: out of memory loading %u facets", path, count);
                    goto done;
                }
                tri[3 * (got + q) + c] = id;
            }
        got += k;
    }
    rc = check_joined(&j, count, tri, r, e);
done:
    fclose(f);
    free(buf);
    free(tri);
    vj_free(&j);
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

/* The triangles of a mesh file through Assimp, as a soup (9 floats a facet,
 * malloc'ed): at least one, else D2_EINPUT naming the file. */
static int load_soup(const char *path, float **xyz, size_t *facets, d2_err *e)
{
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
    *xyz = s.v;
    *facets = s.n;
    return 0;
}

int mesh_check_file(const char *path, mesh_report *r, d2_err *e)
{
    /* Assimp opens the file itself: the checked open first, so a FIFO or
     * device is refused instead of read forever. */
    int crc = d2_check_input(path, e);
    if (crc) return crc;
    int fast = check_binary_stl(path, r, e);
    if (fast <= 0) return fast;
    float *v = NULL;
    size_t nf = 0;
    int rc = load_soup(path, &v, &nf, e);
    if (rc) return rc;
    rc = mesh_check_soup(v, nf, r, e);
    free(v);
    return rc;
}

int mesh_load_soup(const char *path, float **xyz, size_t *facets, d2_err *e)
{
    *xyz = NULL;
    *facets = 0;
    int crc = d2_check_input(path, e);
    return crc ? crc : load_soup(path, xyz, facets, e);
}
