// test_docgen.c: tests of the report's placeholder expander (code/report/docgen.c) and of the docgen
// program: flat JSON parsing and its refusals, value formatting, code regions, CSV tables, the
// random-weights mark, make depfiles, and that every missing file, key, region or column fails
// with a message naming the chapter file, line and key.
// usage: test-docgen PATH/TO/docgen SCRATCH_DIR
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/common.h"
#include "report/docgen.h"
#include "check.h"

static void check_str(int line, const char *got, const char *want) {
    if (got && strcmp(got, want) == 0) return;
    fprintf(stderr, "FAIL %s:%d: got [%s], want [%s]\n", __FILE__, line, got ? got : "(null)", want);
    failures++;
}
static void check_has(int line, const char *hay, const char *needle) {
    if (hay && strstr(hay, needle)) return;
    fprintf(stderr, "FAIL %s:%d: [%s] lacks [%s]\n", __FILE__, line, hay ? hay : "(null)", needle);
    failures++;
}
#define CHECK_STR(got, want) check_str(__LINE__, (got), (want))
#define CHECK_HAS(hay, needle) check_has(__LINE__, (hay), (needle))

// ----------------------------------------------------------------------------

static void test_json(void) {
    FlatJson j;
    char err[512];
    const char *ok = " {\"n\": 300, \"acc\": 0.906, \"neg\": -1.5e-3, \"name\": \"A \\\"b\\\" \\u00e9\\ud83d\\ude00\\n\","
                     " \"zero\": 0}\n";
    CHECK(flatjson_parse(ok, strlen(ok), "ok.json", &j, err, sizeof err) == 0, "%s", err);
    CHECK(j.n == 5, "n = %d", j.n);
    const JsonEntry *e = flatjson_get(&j, "n");
    CHECK(e && !e->is_string && e->num == 300, "n");
    CHECK_STR(e ? e->text : NULL, "300");
    e = flatjson_get(&j, "acc");
    CHECK(e && e->num == 0.906, "acc");
    CHECK_STR(e ? e->text : NULL, "0.906");
    e = flatjson_get(&j, "neg");
    CHECK(e && e->num == -1.5e-3, "neg");
    e = flatjson_get(&j, "name");
    CHECK(e && e->is_string, "name is a string");
    CHECK_STR(e ? e->text : NULL, "A \"b\" \xc3\xa9\xf0\x9f\x98\x80\n");
    CHECK(flatjson_get(&j, "missing") == NULL, "missing key");
    flatjson_free(&j);

    CHECK(flatjson_parse("{}", 2, "empty.json", &j, err, sizeof err) == 0 && j.n == 0, "%s", err);
    flatjson_free(&j);

    struct { const char *text, *msg; } bad[] = {
        {"{\"a\": {\"b\": 1}}", "nested"},
        {"{\"a\": [1, 2]}", "nested"},
        {"{\"a\": true}", "true/false/null"},
        {"{\"a\": null}", "true/false/null"},
        {"{\"a\": 1, \"a\": 2}", "duplicate key \"a\""},
        {"{\"a\": 1} x", "trailing"},
        {"{\"a\": 1", "expected ',' or '}'"},
        {"{\"a\": \"x}", "unterminated string"},
        {"{\"a\": 01}", "expected ',' or '}'"},
        {"{\"a\": 1.}", "bad number"},
        {"{\"a\": .5}", "expected a number"},
        {"{a: 1}", "expected a string key"},
        {"[1]", "expected '{'"},
        {"{\"a\": \"\\ud800\"}", "surrogate"},
        {"{\"a\": \"\\q\"}", "bad escape"},
        {"", "expected '{'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        int rc = flatjson_parse(bad[i].text, strlen(bad[i].text), "bad.json", &j, err, sizeof err);
        CHECK(rc == -1, "accepted %s", bad[i].text);
        CHECK_HAS(err, bad[i].msg);
        CHECK_HAS(err, "bad.json:1:");
    }
    // the line of an error
    const char *two = "{\n  \"a\": 1,\n  \"b\": [2]\n}";
    CHECK(flatjson_parse(two, strlen(two), "two.json", &j, err, sizeof err) == -1, "nested accepted");
    CHECK_HAS(err, "two.json:3:");
}

static char *fmt(const JsonEntry *e, const char *mods) {
    static char err[512];
    err[0] = 0;
    char *s = docgen_format_value(e, mods, err, sizeof err);
    return s ? s : xasprintf("ERROR: %s", err);
}

static void test_format(void) {
    JsonEntry acc = {"acc", "0.90625", 0, 0.90625};
    JsonEntry n = {"n", "3680", 0, 3680};
    JsonEntry sec = {"sec", "11.5", 0, 11.5};
    JsonEntry neg = {"neg", "-2.5", 0, -2.5};
    JsonEntry str = {"s", "american_pit_bull *x* [y] $z", 1, 0};
    JsonEntry path = {"p", "/data/pets/images/Abyssinian_100.jpg", 1, 0};
    struct { const JsonEntry *e; const char *mods, *want; } cases[] = {
        {&acc, "", "0.90625"},
        {&acc, "%.3f", "0.906"},
        {&acc, "*100|%.1f", "90.6"},
        {&acc, "%.1f|*100", "90.6"},   // the scale applies first whatever the order
        {&acc, "*100", "90.625"},
        {&acc, "*100|%.1f%%", "90.6%"},
        {&acc, "%6.2f", "  0.91"},
        {&acc, "%.2e", "9.06e-01"},
        {&acc, "%g", "0.90625"},
        {&n, "", "3680"},
        {&n, "%d", "3680"},
        {&n, "%05d", "03680"},
        {&n, "%x", "e60"},
        {&sec, "%d", "12"},           // rounded to nearest, not truncated
        {&neg, "%d", "-3"},            // llround: halfway away from zero
        {&n, "%s", "3680"},
        {&n, "%s images", "3680 images"},
        {&str, "", "american\\_pit\\_bull \\*x\\* \\[y\\] \\$z"},
        {&str, "raw", "american_pit_bull *x* [y] $z"},
        {&str, "%s|raw", "american_pit_bull *x* [y] $z"},
        {&str, "%.8s|raw", "american"},
        {&path, "basename", "Abyssinian\\_100.jpg"},
        {&path, "basename|raw", "Abyssinian_100.jpg"},
        {&str, "basename|raw", "american_pit_bull *x* [y] $z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = fmt(cases[i].e, cases[i].mods);
        CHECK(strcmp(s, cases[i].want) == 0, "%s|%s: got [%s], want [%s]", cases[i].e->key,
              cases[i].mods, s, cases[i].want);
        free(s);
    }
    struct { const JsonEntry *e; const char *mods, *msg; } bad[] = {
        {&acc, "%.3f|%.2f", "more than one format"},
        {&acc, "%.3f %d", "more than one conversion"},
        {&acc, "%n", "not one printf conversion"},
        {&acc, "%*d", "not one printf conversion"},
        {&acc, "%ld", "not one printf conversion"},
        {&acc, "%.3", "not one printf conversion"},
        {&acc, "%%", "no conversion"},
        {&acc, "*abc", "bad scale"},
        {&acc, "pct", "unknown modifier \"pct\""},
        {&neg, "%u", "non-negative"},
        {&str, "%.3f", "only %s formats"},
        {&str, "*100", "only %s formats"},
        {&n, "basename", "applies to strings"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *s = fmt(bad[i].e, bad[i].mods);
        CHECK(strncmp(s, "ERROR: ", 7) == 0, "%s accepted: %s", bad[i].mods, s);
        CHECK_HAS(s, bad[i].msg);
        free(s);
    }
}

static void test_regions(void) {
    const char *src =
        "// a.c: demo\n"                      // 1
        "int main(void) {\n"                  // 2
        "    // region: count\n"              // 3
        "    int n = 0;\n"                    // 4
        "    for (;;) {\n"                    // 5
        "        // region: inner\n"          // 6
        "        n++;\n"                      // 7
        "        // endregion\n"              // 8
        "    }\n"                             // 9
        "\n"                                  // 10
        "    // endregion\n"                  // 11
        "    # region: hash-style\n"          // 12
        "    return n;\n"                     // 13
        "    # endregion\n"                   // 14
        "}\n";                                // 15
    char err[512];
    int first = 0, last = 0;
    char *r = docgen_extract_region(src, strlen(src), "a.c", "count", &first, &last, err, sizeof err);
    CHECK_STR(r, "int n = 0;\nfor (;;) {\n    n++;\n}\n");
    CHECK(first == 4 && last == 9, "lines %d-%d, want 4-9", first, last);
    free(r);
    r = docgen_extract_region(src, strlen(src), "a.c", "inner", &first, &last, err, sizeof err);
    CHECK_STR(r, "n++;\n");
    CHECK(first == 7 && last == 7, "inner lines %d-%d", first, last);
    free(r);
    r = docgen_extract_region(src, strlen(src), "a.c", "hash-style", NULL, NULL, err, sizeof err);
    CHECK_STR(r, "return n;\n");
    free(r);
    // a region name that is a prefix of another is not confused with it
    r = docgen_extract_region(src, strlen(src), "a.c", "coun", NULL, NULL, err, sizeof err);
    CHECK(r == NULL, "prefix matched");
    CHECK_HAS(err, "a.c: no region \"coun\"");
    free(r);

    struct { const char *src, *name, *msg; } bad[] = {
        {"x\n// region: a\ny\n", "a", "a.c:2: region opened here has no \"endregion\""},
        {"// region: a\ny\n// endregion\n// endregion\n", "a", "a.c:4: \"endregion\" without an open region"},
        {"// region: a\ny\n// endregion\n// region: a\nz\n// endregion\n", "a", "a.c:4: region \"a\" is defined twice"},
        {"// region: a\n\n// endregion\n", "a", "region \"a\" is empty"},
        {"// region:\nx\n// endregion\n", "a", "a.c:1: region without a name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        r = docgen_extract_region(bad[i].src, strlen(bad[i].src), "a.c", bad[i].name, NULL, NULL, err, sizeof err);
        CHECK(r == NULL, "case %zu accepted", i);
        CHECK_HAS(err, bad[i].msg);
        free(r);
    }
}

// Expands `text` in the scratch dir; returns the output (NULL on errors) and the messages.
static char *expand(const char *dir, const char *text, char **messages, DocGen *keep) {
    DocGen g;
    docgen_init(&g);
    char *results = xasprintf("%s/results", dir), *figures = xasprintf("%s/figures", dir);
    g.results_dir = results;
    g.figures_dir = figures;
    g.src_dir = dir;
    size_t msize;
    g.errors = open_memstream(messages, &msize);
    char *out = docgen_expand(&g, "chapters/07-test.md", text, strlen(text));
    fclose(g.errors);
    g.errors = stderr;
    if (g.n_errors) {
        free(out);
        out = NULL;
    }
    if (keep) *keep = g;
    else docgen_free(&g);
    free(results);
    free(figures);
    return out;
}

static void test_expand(const char *dir) {
    char *p;
    mkdir_p((p = xasprintf("%s/results", dir))), free(p);
    mkdir_p((p = xasprintf("%s/figures", dir))), free(p);
    mkdir_p((p = xasprintf("%s/code", dir))), free(p);
    write_text((p = xasprintf("%s/results/01-x.json", dir)), "{\"n\": 300, \"acc\": 0.90625, \"who\": \"Bengal_1\"}"), free(p);
    write_text((p = xasprintf("%s/results/04-y.json", dir)), "{\"acc\": 0.5, \"weights_pretrained\": 0}"), free(p);
    write_text((p = xasprintf("%s/results/05-z.json", dir)), "{\"acc\": 0.7, \"weights_pretrained\": 1}"), free(p);
    write_text((p = xasprintf("%s/results/04-y.csv", dir)), "epoch,val_loss,val_acc\n1,1.5,0.25\n2,1.25,0.5\n"), free(p);
    write_text((p = xasprintf("%s/figures/pets.png", dir)), "png"), free(p);
    write_text((p = xasprintf("%s/code/01-x.c", dir)),
               "int f(void) {\n    // region: body\n    return 1;\n    // endregion\n}\n"), free(p);

    // values, a figure, a code region, a table, literal braces
    char *msg = NULL;
    DocGen g;
    const char *text =
        "# Title\n"
        "We have {{01-x:n}} images; accuracy {{01-x:acc|*100|%.1f}} %, first {{01-x:who}}.\n"
        "![grid]({{figure:pets.png}})\n"
        "  {{code:code/01-x.c#body}}  \n"
        "{{table:04-y.csv|epoch,val_acc}}\n"
        "Literal \\{{not:expanded}} stays.";
    char *out = expand(dir, text, &msg, &g);
    char *want = xasprintf(
        "```{=latex}\n\\petschapter{none}\n```\n\n"
        "# Title\n"
        "We have 300 images; accuracy 90.6 %%, first Bengal\\_1.\n"
        "![grid](%s/figures/pets.png)\n"
        "\n```c\nreturn 1;\n```\n\n`\\coderef{code/01-x.c}{body}{3}{3}`{=latex}\n\n"
        "\n| epoch | val\\_acc |\n|---:|---:|\n| 1 | 0.25 |\n| 2 | 0.5 |\n\n"
        "Literal \\{{not:expanded}} stays.\n", dir);
    CHECK_STR(out, want);
    CHECK(msg && !*msg, "messages: %s", msg);
    // the depfile lists every file read, with an empty rule for each
    CHECK(g.n_deps == 4, "%d deps", g.n_deps);
    char *dep = xasprintf("%s/out.d", dir), err[256];
    CHECK(docgen_write_depfile(&g, dep, "build/doc/07-test.md", err, sizeof err) == 0, "%s", err);
    size_t n;
    char *d = (char *)read_file(dep, &n, 0, err, sizeof err);
    char *code_dep = xasprintf("\\\n  %s/code/01-x.c", dir), *json_dep = xasprintf("\n%s/results/01-x.json:\n", dir);
    CHECK(d && strncmp(d, "build/doc/07-test.md: \\\n  ", 26) == 0, "depfile: %s", d);
    CHECK_HAS(d, code_dep);
    CHECK_HAS(d, json_dep);
    free(d), free(dep), free(code_dep), free(json_dep);
    docgen_free(&g);
    free(out), free(want), free(msg);

    // a table with formatted columns
    out = expand(dir, "{{table:04-y.csv|val_acc:*100|%.1f,epoch:%02d,val_loss}}\n", &msg, NULL);
    CHECK_STR(out, "```{=latex}\n\\petschapter{none}\n```\n\n"
                   "\n| val\\_acc | epoch | val\\_loss |\n|---:|---:|---:|\n| 25.0 | 01 | 1.5 |\n"
                   "| 50.0 | 02 | 1.25 |\n\n");
    free(out), free(msg);
    out = expand(dir, "{{table:04-y.csv|val_acc:%q}}\n", &msg, NULL);
    CHECK(out == NULL, "bad column format accepted");
    CHECK_HAS(msg, "04-y.csv, column val_acc, row 1: format \"%q\" is not one printf conversion");
    free(out), free(msg);

    // the weights mark: random wins over ImageNet in a chapter that uses both
    out = expand(dir, "{{05-z:acc}}\n", &msg, NULL);
    CHECK(out && strncmp(out, "```{=latex}\n\\petschapter{imagenet}\n", 35) == 0, "%s", out);
    free(out), free(msg);
    out = expand(dir, "{{05-z:acc}} {{04-y:acc}}\n", &msg, NULL);
    CHECK(out && strncmp(out, "```{=latex}\n\\petschapter{random}\n", 33) == 0, "%s", out);
    CHECK_HAS(out, "```\n\n\n```{=latex}\n\\petsrandomnote\n```\n\n0.7 0.5\n"); // no title: at the top
    free(out), free(msg);
    out = expand(dir, "Intro\n# Title {#id}\n## Sub\n{{04-y:acc}}\n", &msg, NULL);
    CHECK_HAS(out, "Intro\n# Title {#id}\n\n```{=latex}\n\\petsrandomnote\n```\n\n## Sub\n0.5\n");
    free(out), free(msg);
    write_text((p = xasprintf("%s/results/06-w.json", dir)), "{\"weights\": \"random\", \"a\": 1}"), free(p);
    out = expand(dir, "{{06-w:a}}\n", &msg, NULL);
    CHECK(out && strstr(out, "\\petschapter{random}"), "%s", out);
    free(out), free(msg);

    // every failure names the chapter file, line and what is missing; all are reported
    struct { const char *text, *msg; } bad[] = {
        {"ok\n{{01-x:nope}}\n", "chapters/07-test.md:2: {{01-x:nope}}: "},
        {"ok\n{{01-x:nope}}\n", "01-x.json has no key \"nope\" (its keys: n, acc, who)"},
        {"{{09-none:key}}", "chapters/07-test.md:1: {{09-none:key}}: "},
        {"{{09-none:key}}", "09-none.json: cannot open"},
        {"{{09-none:key}}", "run the chapter program (build/09-none"},
        {"a\nb\n{{code:code/01-x.c#nothere}}\n", "chapters/07-test.md:3: {{code:code/01-x.c#nothere}}: code/01-x.c: no region \"nothere\""},
        {"{{code:code/none.c#r}}\n", "none.c: cannot open"},
        {"{{code:code/01-x.c}}\n", "expected {{code:PATH#region}}"},
        {"x {{code:code/01-x.c#body}}\n", "must stand alone on its line"},
        {"{{table:04-y.csv|epoch,acc}}\n", "has no column \"acc\" (its columns: epoch, val_loss, val_acc)"},
        {"{{table:none.csv}}\n", "none.csv: cannot open"},
        {"![x]({{figure:nope.png}})\n", "chapters/07-test.md:1: {{figure:nope.png}}: "},
        {"![x]({{figure:nope.png}})\n", "figures/nope.png does not exist"},
        {"{{01-x:acc|%.3q}}", "not one printf conversion"},
        {"{{01-x:who|%.2f}}", "only %s formats"},
        {"x {{01-x:n\n", "chapters/07-test.md:1: \"{{01-x:n\": no closing }}"},
        {"{{../etc/passwd:x}}", "bad chapter name"},
        {"{{nocolon}}", "expected {{NN-name:key}}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        msg = NULL;
        out = expand(dir, bad[i].text, &msg, NULL);
        CHECK(out == NULL, "case %zu expanded: %s", i, out);
        CHECK_HAS(msg, bad[i].msg);
        free(out), free(msg);
    }
    // several errors in one chapter are all reported
    DocGen g2;
    msg = NULL;
    out = expand(dir, "{{01-x:a}}\n{{01-x:b}} {{01-x:n}} {{09-none:c}} {{09-none:d}}\n", &msg, &g2);
    CHECK(out == NULL && g2.n_errors == 4, "%d errors: %s", g2.n_errors, msg);
    CHECK_HAS(msg, "07-test.md:1: {{01-x:a}}");
    CHECK_HAS(msg, "07-test.md:2: {{01-x:b}}");
    CHECK_HAS(msg, "07-test.md:2: {{09-none:d}}: ");
    docgen_free(&g2);
    free(msg);
}

// The docgen program: exit status, nothing written on failure, the depfile.
static int run(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_program(const char *docgen, const char *dir) {
    char *p;
    write_text((p = xasprintf("%s/good.md", dir)), "n = {{01-x:n|%d}}\n"), free(p);
    write_text((p = xasprintf("%s/bad.md", dir)), "n = {{01-x:n}}\nm = {{01-x:missing_key}}\n"), free(p);
    char *cmd = xasprintf("cd %s && %s --results results -o out/good.md -M out/good.d good.md", dir, docgen);
    CHECK(run(cmd) == 0, "%s", cmd);
    free(cmd);
    size_t n;
    char err[256];
    char *out = (char *)read_file((p = xasprintf("%s/out/good.md", dir)), &n, 0, err, sizeof err);
    free(p);
    CHECK_HAS(out, "n = 300\n");
    free(out);
    out = (char *)read_file((p = xasprintf("%s/out/good.d", dir)), &n, 0, err, sizeof err);
    free(p);
    CHECK_HAS(out, "out/good.md: \\\n  results/01-x.json\n");
    free(out);

    cmd = xasprintf("cd %s && %s --results results -o out/bad.md bad.md 2>bad.err", dir, docgen);
    CHECK(run(cmd) == 1, "%s should fail with status 1", cmd);
    free(cmd);
    p = xasprintf("%s/out/bad.md", dir);
    CHECK(!file_exists(p), "output written despite errors");
    free(p);
    out = (char *)read_file((p = xasprintf("%s/bad.err", dir)), &n, 0, err, sizeof err);
    free(p);
    CHECK_HAS(out, "error: bad.md:2: {{01-x:missing_key}}: results/01-x.json has no key \"missing_key\"");
    CHECK_HAS(out, "1 placeholder could not be expanded");
    free(out);
    cmd = xasprintf("%s --no-such-option x.md 2>/dev/null", docgen);
    CHECK(run(cmd) == 2, "bad option accepted");
    free(cmd);
}

int main(int argc, char **argv) {
    if (argc != 3) die("usage: test-docgen PATH/TO/docgen SCRATCH_DIR");
    char *docgen = realpath(argv[1], NULL);
    const char *dir = argv[2];
    if (!docgen) die("%s: not found", argv[1]);
    fresh_dir(dir);
    test_json();
    test_format();
    test_regions();
    test_expand(dir);
    test_program(docgen, dir);
    free(docgen);
    return check_exit("docgen: all checks passed");
}
