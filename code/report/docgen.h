// docgen.h: the literate-report preprocessor. It turns a chapter's Markdown (chapters/NN-name.md)
// into plain pandoc Markdown by expanding placeholders, so that every number in the prose comes
// from results/ and every piece of code is quoted from the programs, never typed by hand:
//
//   {{NN-name:key}}             the value of "key" in <results>/NN-name.json (a flat JSON object)
//   {{NN-name:key|%.3f}}        ... formatted with one printf conversion (d i u x X e E f F g G s)
//   {{NN-name:key|*100|%.1f}}   ... scaled first (here a fraction shown as a percentage)
//   {{NN-name:key|raw}}         ... a string inserted without Markdown escaping (inside `code`)
//   {{NN-name:key|basename}}    ... a path string without its directories
//   {{figure:pets.png}}         the path of <figures>/pets.png (which must exist)
//   {{code:code/01-data-loading.c#count-classes}}    (alone on a line) the lines between
//                               "// region: count-classes" and its "// endregion", as a C block
//   {{table:04-feature-extraction.csv}}              (alone on a line) a CSV of <results> as a
//   {{table:04-feature-extraction.csv|epoch,val_acc}} table, optionally only some columns,
//   {{table:04-feature-extraction.csv|epoch,val_loss:%.4f,val_acc:*100|%.1f}}  formatted
//
// A missing file, key, region or column is an error naming the chapter file, line and key; all
// errors of a chapter are reported, then the run fails. `\{{` stays literal (pandoc shows "{{").
//
// Backbone weights: when a results file used by a chapter has "weights_pretrained": 0 (or
// "weights": "random"), the chapter is marked as using a non-ImageNet backbone; the output then
// opens with the raw LaTeX `\petschapter{random}` (otherwise `\petschapter{imagenet}` when a file
// says "weights_pretrained": 1, `\petschapter{none}` when no file mentions weights) and, for
// random, has `\petsrandomnote` after its first "# " heading; chapters/preamble.tex turns these
// into a boxed note and a warning header on every page of the chapter.
#ifndef DOCGEN_H
#define DOCGEN_H

#include <stddef.h>
#include <stdio.h>

// ----------------------------------------------------------------------------
// flat JSON objects: {"key": number | "string", ...}

typedef struct {
    char *key;
    char *text;    // a string's decoded UTF-8 value, or a number's JSON text as written
    int is_string; // 1 for a string, 0 for a number
    double num;    // the number (0 for strings)
} JsonEntry;

typedef struct {
    int n;
    JsonEntry *e; // (n) in file order
} FlatJson;

// Parses a flat JSON object. Nested objects, arrays, true/false/null and duplicate keys are
// refused (the results contract: string keys, number or string values). `name` is used in messages.
int flatjson_parse(const char *text, size_t len, const char *name, FlatJson *out, char *err,
                   size_t errlen);
int flatjson_load(const char *path, FlatJson *out, char *err, size_t errlen);
const JsonEntry *flatjson_get(const FlatJson *j, const char *key);
void flatjson_free(FlatJson *j);

// ----------------------------------------------------------------------------
// values and regions

// Formats a value with a chain of modifiers separated by '|' ("" = as written in the file;
// "*100|%.1f"; "%d" rounds to the nearest integer; "raw"; "basename"). Returns a heap string, or NULL with err.
// Strings are escaped for Markdown unless "raw" is given.
char *docgen_format_value(const JsonEntry *e, const char *mods, char *err, size_t errlen);

// Extracts region `name` from a source text: the lines strictly between the line
// "<comment> region: <name>" and its matching "<comment> endregion" (<comment> is // or #),
// without nested marker lines, with their common indentation removed. Returns a heap string
// (each line ending in '\n') and the 1-based file line numbers of its first and last lines
// (either pointer may be NULL), or NULL with err
// (a missing, duplicate or unterminated region, naming `path`).
char *docgen_extract_region(const char *src, size_t len, const char *path, const char *name,
                            int *first_line, int *last_line, char *err, size_t errlen);

// ----------------------------------------------------------------------------
// expanding a chapter

typedef struct {
    const char *results_dir; // where NN-name.json and CSV files are read ("results")
    const char *figures_dir; // where {{figure:...}} points ("figures")
    const char *src_dir;     // root of {{code:...}} paths (".")
    FILE *errors;            // where messages go (stderr)
    // filled by docgen_expand:
    int n_errors;
    int n_deps;
    char **deps;   // files read (results, CSVs, sources, figures), for a make depfile
    int weights;   // -1 no file mentions weights, 1 all ImageNet, 0 some file says random
    // internal cache of loaded JSON files
    int n_json;
    char **json_names;
    FlatJson *jsons;
    int *json_ok;
} DocGen;

void docgen_init(DocGen *g);
void docgen_free(DocGen *g);
// Expands a chapter text (named `md_path` in messages) into a heap string (the whole output,
// \petschapter line included). Errors are printed to g->errors and counted in g->n_errors; the
// output is still returned (with the failed placeholders left as they were).
char *docgen_expand(DocGen *g, const char *md_path, const char *text, size_t len);
// Writes "target: dep dep ...\n" plus an empty rule per dependency (as gcc -MP does).
int docgen_write_depfile(const DocGen *g, const char *path, const char *target, char *err,
                         size_t errlen);

#endif // DOCGEN_H
