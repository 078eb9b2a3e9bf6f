/* d2fab mesh: the indexed integer-grid triangle mesh. */
#include <stdlib.h>
#include <string.h>

#include "mesh/mesh_int.h"

mesh *mesh_new(d2_err *e)
{
    mesh *m = d2_calloc(1, sizeof *m, "mesh", e);
    if (!m) return NULL;
    m->nslot = 1024;
    m->slot = d2_calloc(m->nslot, sizeof *m->slot, "mesh vertex hash", e);
    if (!m->slot) {
        free(m);
        return NULL;
    }
    return m;
}

void mesh_free(mesh *m)
{
    if (!m) return;
    free(m->v);
    free(m->t);
    free(m->slot);
    free(m);
}

size_t mesh_facets(const mesh *m) { return m->nt; }
size_t mesh_vertices(const mesh *m) { return m->nv; }

void mesh_vertex(const mesh *m, size_t i, int32_t xyz[3])
{
    memcpy(xyz, m->v + 3 * i, 3 * sizeof *xyz);
}

void mesh_facet(const mesh *m, size_t i, uint32_t idx[3])
{
    memcpy(idx, m->t + 3 * i, 3 * sizeof *idx);
}

static inline uint64_t hash3(int32_t x, int32_t y, int32_t z)
{
    uint64_t h = (uint64_t)(uint32_t)x * 0x9E3779B97F4A7C15ull;
    h ^= (uint64_t)(uint32_t)y * 0xC2B2AE3D27D4EB4Full + (h >> 29);
    h ^= (uint64_t)(uint32_t)z * 0x165667B19E3779F9ull + (h >> 32);
    h ^= h >> 31;
    return h;
}

/* A hash table of at least 2 * want slots holding vertices 0 .. hashed - 1. */
static int rehash(mesh *m, size_t want)
{
    size_t n = m->nslot;
    while (n < 2 * want) n *= 2;
    uint32_t *s = calloc(n, sizeof *s);
    if (!s) return -1;
    for (size_t i = 0; i < m->hashed; i++) {
        const int32_t *p = m->v + 3 * i;
        size_t k = hash3(p[0], p[1], p[2]) & (n - 1);
        while (s[k]) k = (k + 1) & (n - 1);
        s[k] = (uint32_t)i + 1;
    }
    free(m->slot);
    m->slot = s;
    m->nslot = n;
    return 0;
}

/* Vertices appended by mesh_vid_new join the hash before any lookup. */
static int catch_up(mesh *m)
{
    if (2 * m->nv > m->nslot && rehash(m, m->nv)) return -1;
    size_t mask = m->nslot - 1;
    for (; m->hashed < m->nv; m->hashed++) {
        const int32_t *p = m->v + 3 * m->hashed;
        size_t k = hash3(p[0], p[1], p[2]) & mask;
        while (m->slot[k]) k = (k + 1) & mask;
        m->slot[k] = (uint32_t)m->hashed + 1;
    }
    return 0;
}

static int grow_v(mesh *m, size_t want)
{
    if (want <= m->cap_v) return 0;
    size_t cap = m->cap_v ? m->cap_v : 1024;
    while (cap < want) cap *= 2;
    int32_t *v = realloc(m->v, cap * 3 * sizeof *v);
    if (!v) return -1;
    m->v = v;
    m->cap_v = cap;
    return 0;
}

void mesh_reserve(mesh *m, size_t vertices, size_t facets)
{
    if (m->oom) return;
    if (grow_v(m, m->nv + vertices)) {
        m->oom = 1;
        return;
    }
    if (m->nt + facets > m->cap_t) {
        size_t cap = m->nt + facets;
        uint32_t *t = realloc(m->t, cap * 3 * sizeof *t);
        if (!t) {
            m->oom = 1;
            return;
        }
        m->t = t;
        m->cap_t = cap;
    }
}

uint32_t mesh_vid_new(mesh *m, int32_t x, int32_t y, int32_t z)
{
    if (m->oom) return UINT32_MAX;
    if (m->nv >= UINT32_MAX - 1 || grow_v(m, m->nv + 1)) {
        m->oom = 1;
        return UINT32_MAX;
    }
    uint32_t id = (uint32_t)m->nv++;
    m->v[3 * (size_t)id] = x;
    m->v[3 * (size_t)id + 1] = y;
    m->v[3 * (size_t)id + 2] = z;
    return id;
}

uint32_t mesh_vid(mesh *m, int32_t x, int32_t y, int32_t z)
{
    if (m->oom) return UINT32_MAX;
    if (m->hashed < m->nv && catch_up(m)) {
        m->oom = 1;
        return UINT32_MAX;
    }
    size_t mask = m->nslot - 1, k = hash3(x, y, z) & mask;
    for (;;) {
        uint32_t s = m->slot[k];
        if (!s) break;
        const int32_t *p = m->v + 3 * (size_t)(s - 1);
        if (p[0] == x && p[1] == y && p[2] == z) return s - 1;
        k = (k + 1) & mask;
    }
    if (m->nv >= UINT32_MAX - 1) {
        m->oom = 1;
        return UINT32_MAX;
    }
    if (grow_v(m, m->nv + 1)) {
        m->oom = 1;
        return UINT32_MAX;
    }
    uint32_t id = (uint32_t)m->nv++;
    m->hashed = m->nv;
    m->v[3 * (size_t)id] = x;
    m->v[3 * (size_t)id + 1] = y;
    m->v[3 * (size_t)id + 2] = z;
    /* keep the load factor under one half */
    if (2 * m->nv > m->nslot) {
        if (rehash(m, m->nv)) {
            m->oom = 1;
            return UINT32_MAX;
        }
    } else {
        m->slot[k] = id + 1;
    }
    return id;
}

void mesh_tri(mesh *m, uint32_t a, uint32_t b, uint32_t c)
{
    if (m->oom) return;
    if (m->nt == m->cap_t) {
        size_t cap = m->cap_t ? m->cap_t * 2 : 4096;
        uint32_t *t = realloc(m->t, cap * 3 * sizeof *t);
        if (!t) {
            m->oom = 1;
            return;
        }
        m->t = t;
        m->cap_t = cap;
    }
    uint32_t *p = m->t + 3 * m->nt++;
    p[0] = a;
    p[1] = b;
    p[2] = c;
}

double mesh_volume_mm3(const mesh *m)
{
    /* 6 V = sum of det(a, b, c); products of three 24-bit-ish coordinates
     * overflow int64, so accumulate in 128 bits and convert once. */
    __int128 acc = 0;
    for (size_t i = 0; i < m->nt; i++) {
        const int32_t *a = m->v + 3 * (size_t)m->t[3 * i];
        const int32_t *b = m->v + 3 * (size_t)m->t[3 * i + 1];
        const int32_t *c = m->v + 3 * (size_t)m->t[3 * i + 2];
        int64_t cx = (int64_t)b[1] * c[2] - (int64_t)b[2] * c[1];
        int64_t cy = (int64_t)b[2] * c[0] - (int64_t)b[0] * c[2];
        int64_t cz = (int64_t)b[0] * c[1] - (int64_t)b[1] * c[0];
        acc += (__int128)a[0] * cx + (__int128)a[1] * cy + (__int128)a[2] * cz;
    }
    return (double)acc * (MESH_Q_MM * MESH_Q_MM * MESH_QZ_MM) / 6.0;
}

void mesh_bbox_mm(const mesh *m, double lo[3], double hi[3])
{
    int32_t l[3] = {0, 0, 0}, h[3] = {0, 0, 0};
    for (size_t i = 0; i < m->nv; i++)
        for (int k = 0; k < 3; k++) {
            int32_t x = m->v[3 * i + k];
            if (i == 0 || x < l[k]) l[k] = x;
            if (i == 0 || x > h[k]) h[k] = x;
        }
    for (int k = 0; k < 3; k++) {
        double q = k == 2 ? MESH_QZ_MM : MESH_Q_MM;
        lo[k] = l[k] * q;
        hi[k] = h[k] * q;
    }
}
