/* d2fab core: atomic output files and path safety.
 *
 * Every file d2fab writes goes to a temporary name in the destination folder
 * and is renamed into place only once complete (fsync'ed), so a failure or a
 * SIGKILL leaves either the previous file or the new one, never a truncated
 * one. */
#ifndef D2_FILEIO_H
#define D2_FILEIO_H

#include <stdio.h>
#include "err.h"

typedef struct d2_out d2_out;

/* Opens a temporary file ".NAME.tmp-XXXXXX" beside path for writing (a
 * SIGKILL can leave such a hidden file behind, never a truncated path; the
 * next successful write of the same path removes it). The writer holds an
 * flock on the temporary while it lives. The new file gets the permissions of
 * the file it replaces, else 0666 & ~umask. Returns NULL and fills e (D2_EIO,
 * naming path) on failure. Finish with d2_out_commit (rename into place) or
 * d2_out_abort (remove the temporary); either frees the handle. */
d2_out *d2_out_open(const char *path, d2_err *e);
/* The stdio stream to write to. Owned by the handle. */
FILE *d2_out_fp(d2_out *o);
/* Flushes, checks every write, fsyncs, closes and renames into place, then
 * removes stale temporaries of the same path whose writer is gone (no flock
 * held: killed). On any failure removes the temporary, fills e and returns
 * D2_EIO. Frees o. */
int d2_out_commit(d2_out *o, d2_err *e);
/* Discards the temporary file. d2_out_abort(NULL) is a no-op. Frees o. */
void d2_out_abort(d2_out *o);

/* Writes n bytes to path atomically (d2_out_open .. commit). */
int d2_write_file(const char *path, const void *buf, size_t n, d2_err *e);

/* Reads a whole file into a malloc'ed buffer (NUL-terminated, *n excludes the
 * NUL; n may be NULL). Refuses files larger than max_bytes. Caller frees *buf.
 * Opens through d2_open_input. Fails with D2_EINPUT (missing file, a folder,
 * FIFO, socket or device, over the limit) or D2_EIO
 * (read error, memory), naming path; *buf is NULL then. */
int d2_read_file(const char *path, size_t max_bytes, char **buf, size_t *n, d2_err *e);

/* Creates directory path (and missing parents), mode 0777 & ~umask. An
 * existing folder is fine; a component that is a file fails with D2_EIO. */
int d2_mkdir_p(const char *path, d2_err *e);

/* Joins dir and name into out (cap bytes) with one '/'; an empty dir or an
 * absolute name gives name. Returns D2_EINPUT if it does not fit. */
int d2_path_join(char *out, size_t cap, const char *dir, const char *name, d2_err *e);

/* Checks that name, a file named inside a config or model file living in
 * folder dir, stays inside dir: no absolute path, no ".." component, and if it
 * exists, no symlink resolving outside dir. `what` names the config key for
 * the message. The longest existing prefix of dir/name is resolved with
 * realpath(), so a link anywhere on the way counts, and a dangling link (which
 * a writer would follow) is refused. Returns 0 or D2_EINPUT. */
int d2_path_inside(const char *dir, const char *name, const char *what, d2_err *e);

/* Refuses, before anything is written, an output of about `bytes` bytes that
 * the file system holding dir (or its nearest existing parent) has no room
 * for: D2_EIO "DIR: WHAT needs about 12 GB of disk; the file system has 3 GB
 * free". 0 when it fits or the free space cannot be told. For tests of a
 * full disk without one, $D2FAB_FREE_BYTES (a number of bytes) caps the free
 * space it reports. */
int d2_check_space(const char *dir, double bytes, const char *what, d2_err *e);


/* The one checked open for every input file. Opens path read-only without
 * blocking (O_NONBLOCK, so a FIFO without a writer or a device cannot hang
 * the program), then refuses anything that is not a regular file: a folder,
 * FIFO, socket or device gives D2_EINPUT "PATH: is a FIFO (named pipe);
 * expected a regular file". A missing file is D2_EINPUT, other open errors
 * D2_EIO, all naming path. Returns the descriptor (blocking mode restored,
 * close-on-exec), or a negative D2_E* code. The caller closes it. */
int d2_open_input(const char *path, d2_err *e);
/* d2_open_input as a stdio stream ("rb") in *f (NULL on failure). 0 or the
 * D2_E* code. The caller fcloses *f. */
int d2_fopen_input(const char *path, FILE **f, d2_err *e);
/* For libraries that open the file themselves (Assimp): d2_open_input and
 * close. 0 or the D2_E* code. */
int d2_check_input(const char *path, d2_err *e);

/* Removes earlier output from folder dir: every regular file (or symbolic
 * link, which is removed itself, never its target) directly inside dir for
 * which own(name, ctx) returns 1. Files are removed with unlinkat() relative
 * to the opened folder, so nothing outside dir is ever touched. With
 * nofollow (a sub-folder the program chose, not one the user named) dir is
 * opened with O_NOFOLLOW: if it is a symbolic link the call fails with
 * D2_EINPUT "DIR is a symbolic link ..."; a dir that is not a folder fails
 * likewise. A missing dir is fine (0). Removal errors give D2_EIO
 * naming the file. `what` names the files for messages ("the previous
 * export's file"). */
int d2_dir_clear(const char *dir, int nofollow, int (*own)(const char *name, void *ctx),
                 void *ctx, const char *what, d2_err *e);
/* Makes the output folder dir and removes the stage's index file in it
 * (name: export.json, assembly.json, ...) before the stage writes anything,
 * so a run stopped half-way never leaves an index that names files it did
 * not write; the index is written last. A missing file is fine. 0, or the
 * error naming the folder or the file. */
int d2_remove_index(const char *dir, const char *name, d2_err *e);
/* For a writer that only takes a file name (PLplot): its temporary beside
 * path, DIR/.NAME.tmp-PID, into tmp. */
void d2_tmp_path(const char *path, char *tmp, size_t cap);
/* Moves such a temporary into place; a missing or empty one fails with
 * D2_EIO ("PATH: PRODUCER wrote no image") and is removed. */
int d2_tmp_install(const char *tmp, const char *path, const char *producer, d2_err *e);
/* 1 if name is a d2fab temporary ".NAME.tmp-XXXXXX" (a killed writer's). */
int d2_is_temp_name(const char *name);

/* Stopping on SIGINT / SIGTERM. d2_stop_signals() installs handlers that
 * remove every output temporary still open (d2_out_open .. commit/abort),
 * then end the process by the same signal (exit status 130 / 143 as the
 * shell reports it), so a stopped command leaves the previous or no file,
 * never a temporary. Called once by the command line, never by the
 * library. */
void d2_stop_signals(void);

#endif
