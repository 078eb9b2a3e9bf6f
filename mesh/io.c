/* d2fab mesh: writing meshes. Binary STL here; 3MF, OBJ, PLY and glTF
 * binary through Assimp's exporter, from a scene built in C. */
#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <assimp/cexport.h>
#include <assimp/scene.h>
#include <zlib.h>

#include "core/fileio.h"
#include "mesh/mesh_int.h"

static const char *const fmt_names[] = {"stl", "3mf", "obj", "ply", "glb"};

int mesh_format_parse(const char *s, mesh_format *f, d2_err *e)
{
    for (int i = 0; i < 5; i++)
        if (s && !strcmp(s, fmt_names[i])) {
            *f = (mesh_format)i;
            return 0;
        }
    return d2_fail(e, D2_EUSAGE, "mesh format '%s': expected stl, 3mf, obj, ply or glb",
                   s ? s : "");
}

const char *mesh_format_ext(mesh_format f)
{
    return (unsigned)f < 5 ? fmt_names[f] : "?";
}

static inline void pos_mm(const mesh *m, uint32_t v, const double off[3], float out[3])
{
    const int32_t *p = m->v + 3 * (size_t)v;
    out[0] = (float)(p[0] * MESH_Q_MM + off[0]);
    out[1] = (float)(p[1] * MESH_Q_MM + off[1]);
    out[2] = (float)(p[2] * MESH_QZ_MM + off[2]);
}

static inline void put_f32(unsigned char *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    b[0] = (unsigned char)u;
    b[1] = (unsigned char)(u >> 8);
    b[2] = (unsigned char)(u >> 16);
    b[3] = (unsigned char)(u >> 24);
}

static int write_stl(const char *path, const mesh_part *parts, int nparts, size_t *bytes, d2_err *e)
{
    size_t nt = 0;
    for (int i = 0; i < nparts; i++) nt += parts[i].m->nt;
    if (nt > UINT32_MAX)
        return d2_fail(e, D2_EINPUT, "%s: %zu facets do not fit a binary STL", path, nt);
    d2_out *o = d2_out_open(path, e);
    if (!o) return e->code;
    FILE *fp = d2_out_fp(o);
    unsigned char hdr[84];
    memset(hdr, ' ', 80);
    char text[81];
    snprintf(text, sizeof text, "d2fab %s binary STL, units mm, %d part%s", D2FAB_VERSION, nparts,
             nparts == 1 ? "" : "s");
    memcpy(hdr, text, strlen(text));
    hdr[80] = (unsigned char)nt;
    hdr[81] = (unsigned char)(nt >> 8);
    hdr[82] = (unsigned char)(nt >> 16);
    hdr[83] = (unsigned char)(nt >> 24);
    fwrite(hdr, 1, 84, fp);
    unsigned char buf[50 * 1024];
    size_t nb = 0;
    for (int i = 0; i < nparts; i++) {
        const mesh *m = parts[i].m;
        for (size_t f = 0; f < m->nt; f++) {
            float p[3][3];
            for (int k = 0; k < 3; k++) pos_mm(m, m->t[3 * f + k], parts[i].offset_mm, p[k]);
            double u[3], w[3], n[3];
            for (int k = 0; k < 3; k++) {
                u[k] = (double)p[1][k] - p[0][k];
                w[k] = (double)p[2][k] - p[0][k];
            }
            n[0] = u[1] * w[2] - u[2] * w[1];
            n[1] = u[2] * w[0] - u[0] * w[2];
            n[2] = u[0] * w[1] - u[1] * w[0];
            double len = sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
            unsigned char *r = buf + nb;
            for (int k = 0; k < 3; k++) put_f32(r + 4 * k, len > 0 ? (float)(n[k] / len) : 0.0f);
            for (int v = 0; v < 3; v++)
                for (int k = 0; k < 3; k++) put_f32(r + 12 + 12 * v + 4 * k, p[v][k]);
            r[48] = r[49] = 0;
            nb += 50;
            if (nb == sizeof buf) {
                fwrite(buf, 1, nb, fp);
                nb = 0;
            }
        }
    }
    fwrite(buf, 1, nb, fp);
    if (d2_out_commit(o, e)) return e->code;
    if (bytes) *bytes = 84 + 50 * nt;
    return 0;
}

/* ------------------------------------------------------ Assimp exporters */

/* A scene built here with malloc (Assimp's exporter copies it before use);
 * one mesh per part under the root node, one empty material. */
typedef struct cscene {
    struct aiScene sc;
    struct aiNode root;
    struct aiNode *kids;
    struct aiNode **kidp;
    struct aiMesh *meshes;
    struct aiMesh **meshp;
    unsigned *meshidx;
    struct aiMaterial mat;
    struct aiMaterial *matp;
} cscene;

static void set_name(struct aiString *s, const char *name)
{
    size_t n = strlen(name);
    if (n >= sizeof s->data) n = sizeof s->data - 1;
    memcpy(s->data, name, n);
    s->data[n] = 0;
    s->length = (ai_uint32)n;
}

static void identity(struct aiMatrix4x4 *t)
{
    memset(t, 0, sizeof *t);
    t->a1 = t->b2 = t->c3 = t->d4 = 1;
}

static void cscene_free(cscene *c, int nparts)
{
    if (!c) return;
    for (int i = 0; c->meshes && i < nparts; i++) {
        free(c->meshes[i].mVertices);
        if (c->meshes[i].mFaces) free(c->meshes[i].mFaces[0].mIndices);
        free(c->meshes[i].mFaces);
    }
    free(c->kids);
    free(c->kidp);
    free(c->meshes);
    free(c->meshp);
    free(c->meshidx);
    free(c);
}

static cscene *cscene_new(const mesh_part *parts, int nparts)
{
    cscene *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->kids = calloc(nparts, sizeof *c->kids);
    c->kidp = calloc(nparts, sizeof *c->kidp);
    c->meshes = calloc(nparts, sizeof *c->meshes);
    c->meshp = calloc(nparts, sizeof *c->meshp);
    c->meshidx = calloc(nparts, sizeof *c->meshidx);
    if (!c->kids || !c->kidp || !c->meshes || !c->meshp || !c->meshidx) goto fail;
    set_name(&c->root.mName, "d2fab");
    identity(&c->root.mTransformation);
    c->root.mNumChildren = (unsigned)nparts;
    c->root.mChildren = c->kidp;
    for (int i = 0; i < nparts; i++) {
        const mesh *m = parts[i].m;
        struct aiMesh *am = c->meshes + i;
        c->meshp[i] = am;
        am->mPrimitiveTypes = aiPrimitiveType_TRIANGLE;
        am->mNumVertices = (unsigned)m->nv;
        am->mNumFaces = (unsigned)m->nt;
        am->mMaterialIndex = 0;
        set_name(&am->mName, parts[i].name ? parts[i].name : "part");
        am->mVertices = malloc((m->nv ? m->nv : 1) * sizeof *am->mVertices);
        am->mFaces = calloc(m->nt ? m->nt : 1, sizeof *am->mFaces);
        if (!am->mVertices || !am->mFaces) goto fail;
        unsigned *idx = malloc((m->nt ? m->nt : 1) * 3 * sizeof *idx);
        if (!idx) goto fail;
        am->mFaces[0].mIndices = idx;
        for (size_t v = 0; v < m->nv; v++) {
            float p[3];
            pos_mm(m, (uint32_t)v, parts[i].offset_mm, p);
            am->mVertices[v].x = p[0];
            am->mVertices[v].y = p[1];
            am->mVertices[v].z = p[2];
        }
        for (size_t f = 0; f < m->nt; f++) {
            am->mFaces[f].mNumIndices = 3;
            am->mFaces[f].mIndices = idx + 3 * f;
            memcpy(idx + 3 * f, m->t + 3 * f, 3 * sizeof *idx);
        }
        struct aiNode *nd = c->kids + i;
        c->kidp[i] = nd;
        set_name(&nd->mName, parts[i].name ? parts[i].name : "part");
        identity(&nd->mTransformation);
        nd->mParent = &c->root;
        nd->mNumMeshes = 1;
        c->meshidx[i] = (unsigned)i;
        nd->mMeshes = c->meshidx + i;
    }
    c->matp = &c->mat;
    c->sc.mRootNode = &c->root;
    c->sc.mNumMeshes = (unsigned)nparts;
    c->sc.mMeshes = c->meshp;
    c->sc.mNumMaterials = 1;
    c->sc.mMaterials = &c->matp;
    return c;
fail:
    cscene_free(c, nparts);
    return NULL;
}

/* ------------------------------------------------------------------ 3MF */

/* Assimp 5.2's 3MF exporter prints coordinates with six significant digits
 * (the ostream default): beyond 100 mm that merges vertices 0.1 um apart
 * (the corner gaps) and rounds heights to 1 um, so 3MF is written here: an
 * OPC zip whose entries zlib deflates (a plate's XML shrinks about tenfold),
 * coordinates printed as the exact float32 values ("%.9g"). */

typedef struct zentry {
    char name[40];
    uint32_t crc, csize, usize, offset;
} zentry;

/* A zip member being written: text goes through zput into an input buffer
 * that zlib deflates; the CRC and both sizes are kept, and the local header
 * is patched when the member ends. */
typedef struct zip {
    FILE *fp;
    zentry ent[6];
    int n;
    uint32_t crc;
    uint64_t usize, csize, pos;
    int bad;       /* 1 write error, 2 over 4 GB (needs zip64), 3 zlib error */
    int open;      /* deflate stream initialised */
    z_stream zs;
    size_t fill;
    unsigned char in[1 << 16], out[1 << 16];
} zip;

static void put16(unsigned char *b, unsigned v)
{
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *b, uint32_t v)
{
    put16(b, v & 0xffff);
    put16(b + 2, v >> 16);
}

static void zraw(zip *z, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, z->fp) != n) z->bad = 1;
    z->pos += n;
}

/* Deflates the buffered input; flush = Z_FINISH ends the member. */
static void zdeflate(zip *z, int flush)
{
    if (z->bad || !z->open) return;
    z->crc = (uint32_t)crc32(z->crc, z->in, (uInt)z->fill);
    z->usize += z->fill;
    z->zs.next_in = z->in;
    z->zs.avail_in = (uInt)z->fill;
    int r;
    do {
        z->zs.next_out = z->out;
        z->zs.avail_out = sizeof z->out;
        r = deflate(&z->zs, flush);
        if (r == Z_STREAM_ERROR) {
            z->bad = 3;
            return;
        }
        size_t got = sizeof z->out - z->zs.avail_out;
        zraw(z, z->out, got);
        z->csize += got;
    } while (z->zs.avail_out == 0 || (flush == Z_FINISH && r != Z_STREAM_END));
    z->fill = 0;
}

static void zput(zip *z, const char *p, size_t n)
{
    while (n && !z->bad) {
        size_t k = sizeof z->in - z->fill < n ? sizeof z->in - z->fill : n;
        memcpy(z->in + z->fill, p, k);
        z->fill += k;
        p += k;
        n -= k;
        if (z->fill == sizeof z->in) zdeflate(z, Z_NO_FLUSH);
    }
}

static void zprintf(zip *z, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void zprintf(zip *z, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof buf) {
        z->bad = 1;
        return;
    }
    zput(z, buf, (size_t)n);
}

/* Deflated (method 8), DOS date 1980-01-01 00:00: the files carry no build
 * time, so the same parts give the same bytes. */
static void local_header(unsigned char *h, const zentry *en)
{
    memset(h, 0, 30);
    put32(h, 0x04034b50);
    put16(h + 4, 20);
    put16(h + 8, 8);
    put16(h + 12, 0x21);
    put32(h + 14, en->crc);
    put32(h + 18, en->csize);
    put32(h + 22, en->usize);
    put16(h + 26, (unsigned)strlen(en->name));
}

static void zbegin(zip *z, const char *name)
{
    if (z->bad) return;
    zentry *en = z->ent + z->n++;
    snprintf(en->name, sizeof en->name, "%s", name);
    en->offset = (uint32_t)z->pos;
    unsigned char h[30];
    local_header(h, en);
    zraw(z, h, 30);
    zraw(z, en->name, strlen(en->name));
    z->crc = (uint32_t)crc32(0, Z_NULL, 0);
    z->usize = z->csize = 0;
    z->fill = 0;
    memset(&z->zs, 0, sizeof z->zs);
    /* Raw deflate (negative window bits): zip members carry no zlib header. */
    if (deflateInit2(&z->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        z->bad = 3;
    else
        z->open = 1;
}

static void zend(zip *z)
{
    zdeflate(z, Z_FINISH);
    if (z->open) deflateEnd(&z->zs);
    z->open = 0;
    if (z->bad) return;
    zentry *en = z->ent + z->n - 1;
    if (z->usize > 0xffffffffu || z->pos > 0xffffffffu) {
        z->bad = 2; /* would need zip64 */
        return;
    }
    en->crc = z->crc;
    en->csize = (uint32_t)z->csize;
    en->usize = (uint32_t)z->usize;
    unsigned char h[30];
    local_header(h, en);
    if (fseeko(z->fp, en->offset, SEEK_SET) || fwrite(h, 1, 30, z->fp) != 30 ||
        fseeko(z->fp, 0, SEEK_END))
        z->bad = 1;
}

static void zfinish(zip *z)
{
    uint32_t start = (uint32_t)z->pos;
    for (int i = 0; i < z->n; i++) {
        const zentry *en = z->ent + i;
        unsigned char h[46];
        memset(h, 0, sizeof h);
        put32(h, 0x02014b50);
        put16(h + 4, 20);
        put16(h + 6, 20);
        put16(h + 10, 8);
        put16(h + 14, 0x21);
        put32(h + 16, en->crc);
        put32(h + 20, en->csize);
        put32(h + 24, en->usize);
        put16(h + 28, (unsigned)strlen(en->name));
        put32(h + 42, en->offset);
        zraw(z, h, 46);
        zraw(z, en->name, strlen(en->name));
    }
    unsigned char t[22];
    memset(t, 0, sizeof t);
    put32(t, 0x06054b50);
    put16(t + 8, (unsigned)z->n);
    put16(t + 10, (unsigned)z->n);
    put32(t + 12, (uint32_t)z->pos - start);
    put32(t + 16, start);
    zraw(z, t, 22);
    if (z->pos > 0xffffffffu) z->bad = 2;
}

/* XML text of s with the five special characters escaped, at most cap - 1. */
static void xml_text(char *dst, size_t cap, const char *s)
{
    size_t k = 0;
    for (; s && *s && k + 7 < cap; s++) {
        const char *rep = *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : *s == '&' ? "&amp;"
                        : *s == '"' ? "&quot;" : *s == '\'' ? "&apos;" : NULL;
        if (rep) {
            memcpy(dst + k, rep, strlen(rep));
            k += strlen(rep);
        } else {
            dst[k++] = *s;
        }
    }
    dst[k] = 0;
}

/* The print settings as metadata: in the 3MF model (core metadata and the
 * d2fab namespace) and, for PrusaSlicer, its own config entry, which it
 * applies when the file is opened (layer height). */
static void meta_3mf(zip *z, const mesh_print_info *info)
{
    char pr[160], ma[160];
    xml_text(pr, sizeof pr, info->printer);
    xml_text(ma, sizeof ma, info->material);
    zprintf(z, "<metadata name=\"Description\">Diffractive network part: print on %s in %s at "
            "a %.4g mm layer height, millimetre units</metadata>\n", pr[0] ? pr : "the printer",
            ma[0] ? ma : "the material", info->layer_height_mm);
    if (pr[0]) zprintf(z, "<metadata name=\"d2fab:printer\">%s</metadata>\n", pr);
    if (ma[0]) zprintf(z, "<metadata name=\"d2fab:material\">%s</metadata>\n", ma);
    if (info->layer_height_mm > 0)
        zprintf(z, "<metadata name=\"d2fab:layer_height_mm\">%.6g</metadata>\n",
                info->layer_height_mm);
}

static int write_3mf(const char *path, const mesh_part *parts, int nparts,
                     const mesh_print_info *info, size_t *bytes, d2_err *e)
{
    d2_out *o = d2_out_open(path, e);
    if (!o) return e->code;
    zip *z = calloc(1, sizeof *z);
    if (!z) {
        d2_out_abort(o);
        return d2_fail(e, D2_EIO, "%s: out of memory for the zip writer", path);
    }
    z->fp = d2_out_fp(o);
    zbegin(z, "[Content_Types].xml");
    zprintf(z, "%s",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\n"
            "<Default Extension=\"rels\" "
            "ContentType=\"application/vnd.openxmlformats-package.relationships+xml\"/>\n"
            "<Default Extension=\"model\" "
            "ContentType=\"application/vnd.ms-package.3dmanufacturing-3dmodel+xml\"/>\n"
            "<Default Extension=\"config\" ContentType=\"text/plain\"/>\n"
            "</Types>\n");
    zend(z);
    zbegin(z, "_rels/.rels");
    zprintf(z, "%s",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<Relationships xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\">\n"
            "<Relationship Target=\"/3D/3dmodel.model\" Id=\"rel0\" "
            "Type=\"http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel\"/>\n"
            "</Relationships>\n");
    zend(z);
    zbegin(z, "3D/3dmodel.model");
    zprintf(z, "%s",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<model unit=\"millimeter\" xml:lang=\"en-US\" "
            "xmlns=\"http://schemas.microsoft.com/3dmanufacturing/core/2015/02\" "
            "xmlns:d2fab=\"urn:d2fab:print:1\">\n"
            "<metadata name=\"Application\">d2fab " D2FAB_VERSION "</metadata>\n");
    if (info) meta_3mf(z, info);
    zprintf(z, "%s", "<resources>\n");
    for (int i = 0; i < nparts && !z->bad; i++) {
        const mesh *m = parts[i].m;
        char name[400];
        xml_text(name, sizeof name, parts[i].name ? parts[i].name : "part");
        zprintf(z, "<object id=\"%d\" name=\"%s\" type=\"model\">\n<mesh>\n<vertices>\n", i + 1,
                name);
        for (size_t v = 0; v < m->nv; v++) {
            float p[3];
            pos_mm(m, (uint32_t)v, parts[i].offset_mm, p);
            zprintf(z, "<vertex x=\"%.9g\" y=\"%.9g\" z=\"%.9g\"/>\n", p[0], p[1], p[2]);
        }
        zprintf(z, "%s", "</vertices>\n<triangles>\n");
        for (size_t f = 0; f < m->nt; f++)
            zprintf(z, "<triangle v1=\"%u\" v2=\"%u\" v3=\"%u\"/>\n", m->t[3 * f], m->t[3 * f + 1],
                    m->t[3 * f + 2]);
        zprintf(z, "%s", "</triangles>\n</mesh>\n</object>\n");
    }
    zprintf(z, "%s", "</resources>\n<build>\n");
    for (int i = 0; i < nparts; i++) zprintf(z, "<item objectid=\"%d\"/>\n", i + 1);
    zprintf(z, "%s", "</build>\n</model>\n");
    zend(z);
    if (info && info->layer_height_mm > 0) {
        zbegin(z, "Metadata/Slic3r_PE.config");
        zprintf(z, "; generated by d2fab " D2FAB_VERSION "\n; layer_height = %.6g\n",
                info->layer_height_mm);
        zend(z);
    }
    zfinish(z);
    int bad = z->bad;
    uint64_t pos = z->pos;
    if (z->open) deflateEnd(&z->zs);
    free(z);
    if (bad) {
        int err = errno;
        d2_out_abort(o);
        return bad == 2   ? d2_fail(e, D2_EINPUT, "%s: the 3MF would exceed 4 GB", path)
               : bad == 3 ? d2_fail(e, D2_EIO, "%s: zlib failed to compress the 3MF", path)
                          : d2_fail(e, D2_EIO, "%s: write failed: %s", path, strerror(err));
    }
    if (d2_out_commit(o, e)) return e->code;
    if (bytes) *bytes = (size_t)pos;
    return 0;
}

static int export_blob(const struct aiScene *sc, const char *id, const char *path, size_t *bytes,
                       d2_err *e)
{
    const struct aiExportDataBlob *b = aiExportSceneToBlob(sc, id, 0);
    if (!b) return d2_fail(e, D2_EIO, "%s: Assimp's %s exporter failed", path, id);
    if (b->next) {
        aiReleaseExportBlob(b);
        return d2_fail(e, D2_EIO, "%s: Assimp's %s exporter made more than one file", path, id);
    }
    int rc = d2_write_file(path, b->data, b->size, e);
    if (!rc && bytes) *bytes = b->size;
    aiReleaseExportBlob(b);
    return rc;
}

int mesh_write(const char *path, mesh_format fmt, const mesh_part *parts, int nparts,
               size_t *bytes, d2_err *e)
{
    return mesh_write_info(path, fmt, parts, nparts, NULL, bytes, e);
}

int mesh_write_info(const char *path, mesh_format fmt, const mesh_part *parts, int nparts,
                    const mesh_print_info *info, size_t *bytes, d2_err *e)
{
    if (nparts < 1) return d2_fail(e, D2_EINPUT, "%s: no mesh to write", path);
    for (int i = 0; i < nparts; i++) {
        if (!parts[i].m->nt)
            return d2_fail(e, D2_EINPUT, "%s: part %s is empty", path,
                           parts[i].name ? parts[i].name : "");
        for (int k = 0; k < 3; k++)
            if (!isfinite(parts[i].offset_mm[k]))
                return d2_fail(e, D2_EINPUT, "%s: part offset is not finite", path);
    }
    if (fmt == MESH_STL) return write_stl(path, parts, nparts, bytes, e);
    if (fmt == MESH_3MF) return write_3mf(path, parts, nparts, info, bytes, e);
    size_t nt = 0;
    for (int i = 0; i < nparts; i++) nt += parts[i].m->nt;
    if (nt > UINT32_MAX / 3) return d2_fail(e, D2_EINPUT, "%s: %zu facets are too many", path, nt);
    cscene *c = cscene_new(parts, nparts);
    if (!c) return d2_fail(e, D2_EIO, "%s: out of memory building the export scene", path);
    int rc;
    switch (fmt) {

    case MESH_OBJ: rc = export_blob(&c->sc, "objnomtl", path, bytes, e); break;
    case MESH_PLY: rc = export_blob(&c->sc, "plyb", path, bytes, e); break;
    case MESH_GLB: rc = export_blob(&c->sc, "glb2", path, bytes, e); break;
    default: rc = d2_fail(e, D2_EUSAGE, "%s: unknown mesh format %d", path, (int)fmt);
    }
    cscene_free(c, nparts);
    return rc;
}
