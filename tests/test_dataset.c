// tests/test_dataset.c: the Oxford-IIIT Pet annotation reader (code/data/dataset.c).
//   test-dataset TMPDIR          synthetic annotation files: parsing, comments, class names,
//                                non-contiguous ids, malformed lines, missing root or files
//   test-dataset --shared DIR    the real 3-class subset (exit 77 = skipped when DIR is absent)
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "data/dataset.h"
#include "check.h"

static void test_class_names(void) {
    // expected values are Python's " ".join(p.title() for p in name.rsplit("_", 1)[0].split("_"))
    const char *cases[][2] = {
        {"american_pit_bull_terrier_12", "American Pit Bull Terrier"},
        {"Abyssinian_100", "Abyssinian"},
        {"Bengal", "Bengal"}, // no "_<number>": rsplit keeps the whole name
        {"great_pyrenees_3", "Great Pyrenees"},
        {"yorkshire_terrier_190", "Yorkshire Terrier"},
        {"mIxEd_CASE_1", "Mixed Case"},
        {"3d_cat_7", "3D Cat"},
        {"o'neil_dog_2", "O'Neil Dog"},
        {"a__b_1", "A  B"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[128];
        pets_class_name_from_image(cases[i][0], out, sizeof out);
        CHECK(strcmp(out, cases[i][1]) == 0, "class name of '%s': '%s', expected '%s'", cases[i][0],
              out, cases[i][1]);
    }
    CHECK(strcmp(pets_class_name(NULL, 5), "class 6") == 0, "generic name");
}

static char *open_err(const char *root, const char *split) {
    static char err[1024];
    PetSplit ds;
    err[0] = 0;
    if (pets_open(root, split, &ds, err, sizeof err) == 0) {
        pets_free(&ds);
        return NULL;
    }
    CHECK(ds.n == 0 && ds.items == NULL, "a failed pets_open left items behind");
    return err;
}

static void test_synthetic(const char *tmp) {
    char err[1024];
    char *root = xasprintf("%s/pets", tmp);
    // missing root
    char *e = open_err(root, "trainval");
    CHECK(e && strstr(e, root) && strstr(e, "make data") && strstr(e, "--root"),
          "missing root: '%s'", e ? e : "(succeeded)");
    // root without annotations/
    char *img = xasprintf("%s/images", root);
    mkdir_p(img);
    e = open_err(root, "trainval");
    CHECK(e && strstr(e, "annotations/") && strstr(e, "make data"), "no annotations/: '%s'",
          e ? e : "(succeeded)");
    // annotations/ without the split file
    char *ann = xasprintf("%s/annotations", root);
    mkdir_p(ann);
    e = open_err(root, "test");
    CHECK(e && strstr(e, "annotations/test.txt") && strstr(e, "make data"), "no test.txt: '%s'",
          e ? e : "(succeeded)");
    e = open_err(root, "train");
    CHECK(e && strstr(e, "unknown split 'train'"), "bad split name: '%s'", e ? e : "(succeeded)");

    // a good file: comments, blank lines, CRLF, tabs, ids 1, 2 and 6 only, the list.txt header
    char *tv = xasprintf("%s/trainval.txt", ann);
    write_text(tv, "#Image CLASS-ID SPECIES BREED ID\n"
                   "#ID: 1:37 Class ids\n"
                   "Abyssinian_100 1 1 1\n"
                   "\n"
                   "american_bulldog_10 2 2 1\r\n"
                   "Bengal_1\t6 1 3\n"
                   "Abyssinian_101 1 1 1\n"
                   "   \n"
                   "american_pit_bull_terrier_5 3 2 2"); // no final newline
    PetSplit ds;
    int rc = pets_open(root, "trainval", &ds, err, sizeof err);
    CHECK(rc == 0, "good trainval.txt: %s", err);
    if (rc == 0) {
        CHECK(ds.n == 5, "n = %d, expected 5", ds.n);
        const char *names[5] = {"Abyssinian_100", "american_bulldog_10", "Bengal_1",
                                "Abyssinian_101", "american_pit_bull_terrier_5"};
        int labels[5] = {0, 1, 5, 0, 2};
        for (int i = 0; i < 5 && i < ds.n; i++) {
            CHECK(strcmp(ds.items[i].name, names[i]) == 0, "item %d name %s", i, ds.items[i].name);
            CHECK(ds.items[i].label == labels[i], "item %d label %d", i, ds.items[i].label);
            char *p = xasprintf("%s/images/%s.jpg", root, names[i]);
            CHECK(strcmp(ds.items[i].path, p) == 0, "item %d path %s", i, ds.items[i].path);
            free(p);
        }
        CHECK(ds.class_count[0] == 2 && ds.class_count[1] == 1 && ds.class_count[5] == 1 &&
                  ds.class_count[2] == 1 && ds.class_count[3] == 0,
              "class counts");
        CHECK(strcmp(pets_class_name(&ds, 0), "Abyssinian") == 0, "class 0");
        CHECK(strcmp(pets_class_name(&ds, 1), "American Bulldog") == 0, "class 1");
        CHECK(strcmp(pets_class_name(&ds, 2), "American Pit Bull Terrier") == 0, "class 2");
        CHECK(strcmp(pets_class_name(&ds, 5), "Bengal") == 0, "class 5");
        CHECK(ds.class_names[4] == NULL && strcmp(pets_class_name(&ds, 4), "class 5") == 0,
              "absent class");
        CHECK(strcmp(ds.split, "trainval") == 0 && strcmp(ds.root, root) == 0, "root/split");
        pets_free(&ds);
    }

    // malformed lines: each names the file and the line
    const char *bad[] = {
        "Abyssinian_100 1 1\n",              // a field missing
        "Abyssinian_100 one 1 1\n",          // not a number
        "Abyssinian_100 0 1 1\n",            // class id out of range
        "Abyssinian_100 38 1 1\n",           // class id out of range
        "Abyssinian_100 1 3 1\n",            // species out of range
        "Abyssinian_100 1 1 1 extra\n",      // a field too many
        "../../etc/passwd 1 1 1\n",          // a path, not a name
        "Abyssinian_100 -1 1 1\n",           // negative
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *text = xasprintf("# header\nAbyssinian_1 1 1 1\n\n%s", bad[i]);
        write_text(tv, text);
        free(text);
        char *want = xasprintf("%s:4: malformed annotation line", tv);
        e = open_err(root, "trainval");
        CHECK(e && strstr(e, want), "malformed line '%.*s': '%s'", (int)strlen(bad[i]) - 1, bad[i],
              e ? e : "(succeeded)");
        free(want);
    }
    // a split file with no entries
    write_text(tv, "# only a comment\n\n");
    e = open_err(root, "trainval");
    CHECK(e && strstr(e, "no images listed"), "empty split: '%s'", e ? e : "(succeeded)");
    free(tv), free(ann), free(img), free(root);
}

static int test_shared(const char *dir) {
    char err[1024];
    if (pets_check_root(dir, err, sizeof err) != 0) {
        printf("SKIP: %s\n", err);
        return 77;
    }
    PetSplit tv, te;
    if (pets_open(dir, "trainval", &tv, err, sizeof err)) die("%s", err);
    if (pets_open(dir, "test", &te, err, sizeof err)) die("%s", err);
    CHECK(tv.n == 300, "trainval has %d images, expected 300", tv.n);
    CHECK(te.n == 298, "test has %d images, expected 298", te.n);
    for (int c = 0; c < PETS_NUM_CLASSES; c++) {
        int present = c == 0 || c == 1 || c == 5;
        CHECK((tv.class_count[c] > 0) == present && (te.class_count[c] > 0) == present,
              "label %d present=%d", c, present);
    }
    CHECK(tv.class_count[0] == 100 && tv.class_count[1] == 100 && tv.class_count[5] == 100,
          "trainval per class");
    CHECK(te.class_count[0] == 98 && te.class_count[1] == 100 && te.class_count[5] == 100,
          "test per class");
    CHECK(strcmp(pets_class_name(&tv, 0), "Abyssinian") == 0, "name 0");
    CHECK(strcmp(pets_class_name(&tv, 1), "American Bulldog") == 0, "name 1: %s",
          pets_class_name(&tv, 1));
    CHECK(strcmp(pets_class_name(&tv, 5), "Bengal") == 0, "name 5");
    int found5 = 0;
    for (int i = 0; i < te.n; i++) found5 |= strcmp(te.items[i].name, "Abyssinian_5") == 0;
    CHECK(found5, "Abyssinian_5 (the PNG) is not in the test split");
    for (int s = 0; s < 2; s++) {
        PetSplit *d = s ? &te : &tv;
        for (int i = 0; i < d->n; i++)
            CHECK(access(d->items[i].path, R_OK) == 0, "%s missing", d->items[i].path);
    }
    pets_free(&tv);
    pets_free(&te);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--shared") == 0) {
        if (test_shared(argv[2]) == 77) return 77;
    } else if (argc == 2) {
        fresh_dir(argv[1]);
        test_class_names();
        test_synthetic(argv[1]);
    } else {
        die("usage: test-dataset TMPDIR | test-dataset --shared DIR");
    }
    return check_exit("test-dataset: all checks passed");
}
