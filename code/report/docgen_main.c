// docgen_main.c: build/docgen, the report's preprocessor (see docgen.h for the placeholder syntax).
// Makefile.doc runs it on each chapter before pandoc:
//   build/docgen --results results --figures figures -M build/doc/01-data-loading.d
//                -o build/doc/01-data-loading.md chapters/01-data-loading.md
// Exit status 1 when any placeholder cannot be expanded (every such error is printed first).
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "report/docgen.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: docgen [options] CHAPTER.md\n"
            "Expands a chapter's placeholders into plain pandoc Markdown:\n"
            "  {{NN-name:key}}  {{NN-name:key|%%.3f}}  {{NN-name:key|*100|%%.1f}}  {{NN-name:key|raw}}\n"
            "      a value of <results>/NN-name.json (a flat JSON object)\n"
            "  {{figure:NAME}}                 the path <figures>/NAME (must exist)\n"
            "  {{code:PATH#region}}            (alone on a line) a region of a source file\n"
            "  {{table:NAME.csv|col,col}}      (alone on a line) a CSV of <results> as a table\n"
            "options:\n"
            "  -o OUT.md        output file, written atomically (default: standard output)\n"
            "  -M DEPS.d        also write a make depfile: OUT.md depends on every file read\n"
            "  --results DIR    results folder (default results)\n"
            "  --figures DIR    figures folder (default figures)\n"
            "  --src DIR        root of {{code:...}} paths (default .)\n"
            "  -h, --help       this help\n");
}

int main(int argc, char **argv) {
    DocGen g;
    docgen_init(&g);
    const char *out_path = NULL, *dep_path = NULL, *in_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-o") && has_next) out_path = argv[++i];
        else if (!strcmp(a, "-M") && has_next) dep_path = argv[++i];
        else if (!strcmp(a, "--results") && has_next) g.results_dir = argv[++i];
        else if (!strcmp(a, "--figures") && has_next) g.figures_dir = argv[++i];
        else if (!strcmp(a, "--src") && has_next) g.src_dir = argv[++i];
        else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "error: unknown or incomplete option %s\n", a);
            usage(stderr);
            return 2;
        } else if (!in_path) in_path = a;
        else { fprintf(stderr, "error: one chapter file at a time (got %s and %s)\n", in_path, a); return 2; }
    }
    if (!in_path) { usage(stderr); return 2; }
    if (dep_path && !out_path) die("-M needs -o (the depfile names the output as its target)");

    char err[512];
    size_t n;
    uint8_t *text = read_file(in_path, &n, 16u << 20, err, sizeof err);
    if (!text) die("%s", err);
    char *md = docgen_expand(&g, in_path, (const char *)text, n);
    free(text);
    if (g.n_errors) {
        fprintf(stderr, "error: %s: %d placeholder%s could not be expanded; nothing written\n", in_path,
                g.n_errors, g.n_errors > 1 ? "s" : "");
        free(md);
        docgen_free(&g);
        return 1;
    }
    if (out_path) {
        if (write_file_atomic(out_path, md, strlen(md), err, sizeof err)) die("%s", err);
        if (dep_path && docgen_write_depfile(&g, dep_path, out_path, err, sizeof err)) die("%s", err);
    } else {
        fputs(md, stdout);
        if (fflush(stdout)) die("writing the output failed");
    }
    free(md);
    docgen_free(&g);
    return 0;
}
