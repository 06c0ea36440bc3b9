// tests/test_experiments_start.c: writes the starting checkpoint of the transfer-learning parity
// tests (build/test-experiments-start), the same file for tests/ref_transfer.py (PyTorch) and for
// our chapter programs (--weights FILE --keep-fc):
//   test-experiments-start --seed S --classes K --out FILE.pth [--bn-stats FILE.f32]
// A seeded random torchvision ResNet34 (resnet34_init_random: kaiming-normal convolutions,
// nn.Linear's init for the K-way fc). With --bn-stats, every BatchNorm's running_mean and
// running_var come from that file (float32, little-endian, in state-dict order: for each BN its
// running_mean then its running_var), so that eval-mode BatchNorm is calibrated as it is in a
// trained network instead of being the identity; tests/ref_transfer.py measures those statistics
// on the training images and commits them (tests/fixtures/transfer/bn_stats.f32, 68 KB), which
// is far smaller than the 87 MB checkpoint that this program rebuilds from them.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "core/common.h"
#include "checkpoint/pth.h"
#include "nn/resnet34.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int main(int argc, char **argv) {
    unsigned long long seed = 0;
    int classes = 37;
    const char *out = NULL, *stats = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--classes") == 0 && i + 1 < argc) classes = atoi(argv[++i]);
        else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) out = argv[++i];
        else if (strcmp(argv[i], "--bn-stats") == 0 && i + 1 < argc) stats = argv[++i];
        else {
            fprintf(stderr, "usage: %s --seed S --classes K --out FILE.pth [--bn-stats FILE.f32]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!out || classes < 1 || classes > 100000) die("--out FILE and --classes 1..100000 are needed");
    char err[1024];
    Backend *be = backend_open("cpu", PREC_FP32, 1, err, sizeof err);
    if (!be) die("%s", err);
    ResNet34 *m = resnet34_create(be, classes);
    resnet34_init_random(m, seed);
    StateDict sd = {0};
    resnet34_to_state(m, &sd);
    if (stats) {
        size_t n = 0;
        uint8_t *buf = read_file(stats, &n, 0, err, sizeof err);
        if (!buf) die("%s", err);
        size_t off = 0;
        for (int i = 0; i < sd.n; i++) {
            PthTensor *t = &sd.t[i];
            if (!ends_with(t->name, ".running_mean") && !ends_with(t->name, ".running_var")) continue;
            size_t bytes = t->numel * sizeof(float);
            if (off + bytes > n) die("%s: too short for %s", stats, t->name);
            memcpy(t->data, buf + off, bytes);
            off += bytes;
        }
        if (off != n) die("%s: %zu bytes, but the BatchNorm statistics take %zu", stats, n, off);
        free(buf);
        if (resnet34_load_state(m, &sd, 1, err, sizeof err)) die("%s", err);
    }
    if (pth_save(out, &sd, NULL, err, sizeof err)) die("%s", err);
    sd_free(&sd);
    resnet34_free(m);
    backend_close(be);
    return 0;
}
