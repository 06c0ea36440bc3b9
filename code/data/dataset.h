// dataset.h: the Oxford-IIIT Pet dataset in its official layout under a root directory:
//   images/<name>.jpg, annotations/list.txt, annotations/trainval.txt, annotations/test.txt
// Each annotation line is "<name> <CLASS-ID> <SPECIES> <BREED-ID>"; '#' lines are comments.
// Label = CLASS-ID - 1 (0..36). Class names are derived as torchvision does: the image name
// without its trailing "_<number>", underscores to spaces, each word capitalised
// ("american_pit_bull_terrier_12" -> "American Pit Bull Terrier"). Class ids need not be
// contiguous (a subset may hold ids 1, 2 and 6 only).
#ifndef DATASET_H
#define DATASET_H

#include <stddef.h>

#define PETS_NUM_CLASSES 37

typedef struct {
    char *name;  // "Abyssinian_100"
    char *path;  // "<root>/images/Abyssinian_100.jpg"
    int label;   // CLASS-ID - 1
    int species; // SPECIES: 1 cat, 2 dog
} PetItem;

typedef struct {
    char *root;
    char *split;                           // "trainval" or "test"
    int n;                                 // number of items (lines) in the split file
    PetItem *items;                        // (n)
    char *class_names[PETS_NUM_CLASSES];   // indexed by label; NULL for a class absent from the split
    int class_count[PETS_NUM_CLASSES];     // items per label
} PetSplit;

// Reads <root>/annotations/<split>.txt. Returns 0, or -1 with a message naming the file (and the
// line for a malformed one) and how to fix it (e.g. "run `make data`").
int pets_open(const char *root, const char *split, PetSplit *ds, char *err, size_t errlen);
void pets_free(PetSplit *ds);
// Class name for a label as torchvision derives it (from the split's own items).
// Returns a generic "class <id>" when the label is absent.
const char *pets_class_name(const PetSplit *ds, int label);

// Checks that root is a folder holding images/ and annotations/. Returns 0, or -1 with a message
// saying how to get the dataset (`make data` or --root DIR).
int pets_check_root(const char *root, char *err, size_t errlen);
// torchvision's class name for an image name: drop the trailing "_<number>", split on '_', apply
// Python's str.title() to each part, join with spaces ("american_pit_bull_terrier_12" ->
// "American Pit Bull Terrier").
void pets_class_name_from_image(const char *image_name, char *out, size_t outlen);

#endif // DATASET_H
