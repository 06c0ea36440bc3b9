// dataset.c: reads the Oxford-IIIT Pet annotation files (see dataset.h).
// A split file lists one image per line, "<name> <CLASS-ID> <SPECIES> <BREED-ID>"; we keep the
// name, the image path and label = CLASS-ID - 1, and derive each class's display name from the
// image names exactly as torchvision's OxfordIIITPet does.
#define _GNU_SOURCE
#include "data/dataset.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/common.h"

// ----------------------------------------------------------------------------
// class names

void pets_class_name_from_image(const char *image_name, char *out, size_t outlen) {
    // torchvision: raw = image_id.rsplit("_", 1)[0]; " ".join(part.title() for part in raw.split("_"))
    size_t n = strlen(image_name);
    const char *us = strrchr(image_name, '_');
    if (us) n = (size_t)(us - image_name);
    size_t o = 0;
    int prev_cased = 0; // str.title(): a letter after a letter is lowered, any other letter raised
    for (size_t i = 0; i < n && o + 1 < outlen; i++) {
        unsigned char c = (unsigned char)image_name[i];
        if (c == '_') {
            out[o++] = ' ';
            prev_cased = 0;
        } else if (isalpha(c)) {
            out[o++] = (char)(prev_cased ? tolower(c) : toupper(c));
            prev_cased = 1;
        } else {
            out[o++] = (char)c;
            prev_cased = 0;
        }
    }
    if (outlen) out[o < outlen ? o : outlen - 1] = 0;
}

// Generic names for labels absent from a split ("class <CLASS-ID>").
static const char *const GENERIC_NAMES[PETS_NUM_CLASSES] = {
    "class 1",  "class 2",  "class 3",  "class 4",  "class 5",  "class 6",  "class 7",  "class 8",
    "class 9",  "class 10", "class 11", "class 12", "class 13", "class 14", "class 15", "class 16",
    "class 17", "class 18", "class 19", "class 20", "class 21", "class 22", "class 23", "class 24",
    "class 25", "class 26", "class 27", "class 28", "class 29", "class 30", "class 31", "class 32",
    "class 33", "class 34", "class 35", "class 36", "class 37"};

const char *pets_class_name(const PetSplit *ds, int label) {
    if (label < 0 || label >= PETS_NUM_CLASSES) return "class ?";
    if (ds && ds->class_names[label]) return ds->class_names[label];
    return GENERIC_NAMES[label];
}

// ----------------------------------------------------------------------------
// checking the layout

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int pets_check_root(const char *root, char *err, size_t errlen) {
    if (!is_dir(root))
        return set_err(err, errlen,
                       "dataset root '%s' not found: run `make data` to download Oxford-IIIT Pet "
                       "there, or pass --root DIR (a folder holding images/ and annotations/)",
                       root);
    const char *sub[2] = {"images", "annotations"};
    for (int i = 0; i < 2; i++) {
        char *p = xasprintf("%s/%s", root, sub[i]);
        int ok = is_dir(p);
        free(p);
        if (!ok)
            return set_err(err, errlen,
                           "dataset root '%s' has no %s/ folder: it is not an Oxford-IIIT Pet root "
                           "(run `make data`, or pass --root DIR pointing at the folder that holds "
                           "images/ and annotations/)",
                           root, sub[i]);
    }
    return 0;
}

// ----------------------------------------------------------------------------
// parsing a split file

// Parses a positive decimal integer field; returns -1 if it is not one.
static long parse_int(const char *s) {
    if (!*s) return -1;
    long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
        if (v > 1000000) return -1;
    }
    return v;
}

static int valid_name(const char *s) {
    if (!*s || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
    for (; *s; s++)
        if (*s == '/' || *s == '\\' || (unsigned char)*s < 32) return 0;
    return 1;
}

static void push_item(PetSplit *ds, int *cap, const char *name, int label, int species) {
    if (ds->n == *cap) {
        *cap = *cap ? 2 * *cap : 256;
        ds->items = xrealloc(ds->items, (size_t)*cap * sizeof(PetItem));
    }
    PetItem *it = &ds->items[ds->n++];
    it->name = xstrdup(name);
    it->path = xasprintf("%s/images/%s.jpg", ds->root, name);
    it->label = label;
    it->species = species;
}

int pets_open(const char *root, const char *split, PetSplit *ds, char *err, size_t errlen) {
    memset(ds, 0, sizeof *ds);
    if (strcmp(split, "trainval") != 0 && strcmp(split, "test") != 0)
        return set_err(err, errlen, "unknown split '%s' (the dataset has 'trainval' and 'test')",
                       split);
    if (pets_check_root(root, err, errlen)) return -1;
    char *file = xasprintf("%s/annotations/%s.txt", root, split);
    FILE *f = fopen(file, "r");
    if (!f) {
        set_err(err, errlen,
                "%s: cannot open (%s): the annotations are missing or incomplete; run `make data` "
                "or pass --root DIR",
                file, strerror(errno));
        free(file);
        return -1;
    }
    ds->root = xstrdup(root);
    ds->split = xstrdup(split);
    int cap = 0;
    char *line = NULL;
    size_t linecap = 0;
    long lineno = 0;
    int rc = 0;
    while (getline(&line, &linecap, f) >= 0) {
        lineno++;
        // fields separated by whitespace, as Python's str.split()
        char *fields[5];
        int nf = 0;
        for (char *tok = strtok(line, " \t\r\n\v\f"); tok; tok = strtok(NULL, " \t\r\n\v\f")) {
            if (nf < 5) fields[nf] = tok;
            nf++;
        }
        if (nf == 0 || fields[0][0] == '#') continue; // blank line or comment
        long cls = nf == 4 ? parse_int(fields[1]) : -1;
        long species = nf == 4 ? parse_int(fields[2]) : -1;
        long breed = nf == 4 ? parse_int(fields[3]) : -1;
        if (nf != 4 || cls < 1 || cls > PETS_NUM_CLASSES || species < 1 || species > 2 || breed < 1 ||
            !valid_name(fields[0])) {
            rc = set_err(err, errlen,
                         "%s:%ld: malformed annotation line (expected '<name> <CLASS-ID 1-%d> "
                         "<SPECIES 1-2> <BREED-ID>'); fix or remove the line, or re-extract the "
                         "annotations with `make data`",
                         file, lineno, PETS_NUM_CLASSES);
            break;
        }
        int label = (int)cls - 1;
        push_item(ds, &cap, fields[0], label, (int)species);
        ds->class_count[label]++;
        if (!ds->class_names[label]) {
            char name[256];
            pets_class_name_from_image(fields[0], name, sizeof name);
            ds->class_names[label] = xstrdup(name);
        }
    }
    if (rc == 0 && ferror(f)) rc = set_err(err, errlen, "%s: read error", file);
    if (rc == 0 && ds->n == 0)
        rc = set_err(err, errlen, "%s: no images listed; re-extract the annotations (`make data`)",
                     file);
    free(line);
    fclose(f);
    free(file);
    if (rc) pets_free(ds);
    return rc;
}

void pets_free(PetSplit *ds) {
    for (int i = 0; i < ds->n; i++) {
        free(ds->items[i].name);
        free(ds->items[i].path);
    }
    free(ds->items);
    for (int c = 0; c < PETS_NUM_CLASSES; c++) free(ds->class_names[c]);
    free(ds->root);
    free(ds->split);
    memset(ds, 0, sizeof *ds);
}
