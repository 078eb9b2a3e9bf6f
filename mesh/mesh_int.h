/* d2fab mesh: internals shared by the mesh/ sources (not a public header). */
#ifndef D2_MESH_INT_H
#define D2_MESH_INT_H

#include <stdint.h>
#include "mesh/mesh.h"

struct mesh {
    int32_t *v;        /* 3 per vertex */
    size_t nv, cap_v;
    uint32_t *t;       /* 3 per facet */
    size_t nt, cap_t;
    uint32_t *slot;    /* hash of vertex positions: index + 1, 0 = free */
    size_t nslot;      /* power of two */
    size_t hashed;     /* vertices 0 .. hashed - 1 are in the hash */
    int oom;           /* an allocation failed; reported by the public caller */
};

/* Index of the vertex at (x, y, z), added if new. Returns UINT32_MAX and sets
 * m->oom when out of memory. */
uint32_t mesh_vid(mesh *m, int32_t x, int32_t y, int32_t z);
/* Appends a vertex known to be at a new position, without the hash (it
 * joins the hash at the next mesh_vid). UINT32_MAX and m->oom when out of
 * memory. */
uint32_t mesh_vid_new(mesh *m, int32_t x, int32_t y, int32_t z);
/* Room for that many more vertices and facets (a hint; sets m->oom when out
 * of memory). */
void mesh_reserve(mesh *m, size_t vertices, size_t facets);
/* Appends facet (a, b, c). Sets m->oom when out of memory. */
void mesh_tri(mesh *m, uint32_t a, uint32_t b, uint32_t c);

/* 5x7 pixel font: bit 4 of row 0 is the top-left pixel. Returns NULL for a
 * character outside the set. */
const uint8_t *mesh_glyph(char ch);

#endif
