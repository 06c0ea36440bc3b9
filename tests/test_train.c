// tests/test_train.c: the host-side training pieces against PyTorch 1.13 (fixtures from
// tests/ref_train.py): the RNG's known answers and distributions (core/rng.c), Adam's scalars
// (nn/adam.c), ReduceLROnPlateau's rates and messages, GradScaler's scale sequence and skipped
// steps (nn/train.c).
// Usage: test-train FIXTURE_DIR
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "core/rng.h"
#include "nn/adam.h"
#include "nn/train.h"
#include "train_fixture.h"

// ----------------------------------------------------------------------------
// RNG

static void test_rng(const char *dir) {
    printf("rng\n");
    // splitmix64's published first output for state 0
    uint64_t st = 0;
    CHECK(splitmix64(&st) == 0xe220a8397b1dcdafull, "splitmix64(0) known answer");

    Fixture fx;
    fix_load(&fx, dir, "rng.bin");
    const uint64_t seeds[3] = {0, 42, UINT64_MAX};
    for (int k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "seed%d.u64", (int)(seeds[k] & 0xFFFF));
        FixArray *u = fix_get(&fx, name);
        snprintf(name, sizeof name, "seed%d.uniform", (int)(seeds[k] & 0xFFFF));
        FixArray *f = fix_get(&fx, name);
        Rng a, b;
        rng_seed(&a, seeds[k]);
        rng_seed(&b, seeds[k]);
        for (int i = 0; i < 8; i++) {
            uint64_t want = 0;
            for (int j = 0; j < 4; j++) want = want << 16 | (uint64_t)u->v[4 * i + j];
            uint64_t got = rng_u64(&a);
            CHECK(got == want, "seed %llu value %d: got %016llx want %016llx",
                  (unsigned long long)seeds[k], i, (unsigned long long)got,
                  (unsigned long long)want);
            double uf = rng_uniform(&b);
            CHECK(uf == f->v[i], "seed %llu uniform %d: got %.17g want %.17g",
                  (unsigned long long)seeds[k], i, uf, f->v[i]);
        }
    }
    fix_free(&fx);

    // different seeds give different streams
    Rng a, b;
    rng_seed(&a, 1);
    rng_seed(&b, 2);
    CHECK(rng_u64(&a) != rng_u64(&b), "seeds 1 and 2 give the same first value");

    // distributions: uniform in [0, 1) with mean 1/2, variance 1/12; normal mean 0, variance 1,
    // kurtosis 3, about 4.55% beyond 2 sigma. 1e6 samples: standard errors ~1e-3.
    rng_seed(&a, 123);
    const int n = 1000000;
    double s1 = 0, s2 = 0, lo = 1, hi = 0;
    for (int i = 0; i < n; i++) {
        double u = rng_uniform(&a);
        s1 += u;
        s2 += u * u;
        if (u < lo) lo = u;
        if (u > hi) hi = u;
    }
    double mean = s1 / n, var = s2 / n - mean * mean;
    printf("  uniform: mean %.5f var %.5f min %.2g max %.8f\n", mean, var, lo, hi);
    CHECK(lo >= 0 && hi < 1, "uniform out of [0, 1)");
    CHECK(fabs(mean - 0.5) < 0.002 && fabs(var - 1.0 / 12) < 0.001, "uniform moments off");
    double m1 = 0, m2 = 0, m4 = 0;
    int tail = 0;
    for (int i = 0; i < n; i++) {
        double z = rng_normal(&a);
        CHECK(isfinite(z), "normal not finite");
        m1 += z;
        m2 += z * z;
        m4 += z * z * z * z;
        tail += fabs(z) > 2;
    }
    m1 /= n;
    m2 /= n;
    m4 /= n;
    printf("  normal: mean %.5f var %.5f kurtosis %.4f P(|z|>2) %.5f\n", m1, m2, m4 / (m2 * m2),
           (double)tail / n);
    CHECK(fabs(m1) < 0.005 && fabs(m2 - 1) < 0.01, "normal moments off");
    CHECK(fabs(m4 / (m2 * m2) - 3) < 0.05, "normal kurtosis off");
    CHECK(fabs((double)tail / n - 0.0455) < 0.002, "normal tail mass off");
}

// ----------------------------------------------------------------------------
// ReduceLROnPlateau: rates after every step, and the messages printed, byte for byte.

static void test_plateau(const char *dir) {
    printf("plateau\n");
    Fixture fx;
    fix_load(&fx, dir, "plateau.bin");
    const char *cases[] = {"tutorial", "patience0", "cooldown", "eps", "negative"};

    // capture stdout (where PyTorch prints, and so do we) into a temporary file
    fflush(stdout);
    FILE *cap = tmpfile();
    if (!cap) die("tmpfile: cannot create a temporary file");
    int saved = dup(1);
    dup2(fileno(cap), 1);
    int reductions = 0;
    char log[4096] = "";
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char name[64];
        snprintf(name, sizeof name, "%s.config", cases[c]);
        double *cfg = fix_get(&fx, name)->v;
        snprintf(name, sizeof name, "%s.losses", cases[c]);
        FixArray *losses = fix_get(&fx, name);
        snprintf(name, sizeof name, "%s.lrs", cases[c]);
        FixArray *lrs = fix_get(&fx, name);
        Plateau p;
        plateau_init(&p, cfg[1], (int)cfg[2]);
        p.cooldown = (int)cfg[3];
        p.min_lr = cfg[4];
        float lr = (float)cfg[0];
        for (size_t i = 0; i < losses->numel; i++) {
            float before = lr;
            int red = plateau_step(&p, losses->v[i], &lr, 1);
            fflush(stdout);
            reductions += red;
            double want = lrs->v[i];
            if (!(fabs(lr - want) <= 1e-7 * want) || red != (lr != before)) {
                size_t l = strlen(log);
                snprintf(log + l, sizeof log - l, "%s step %zu (loss %g): lr %.9g, want %.9g\n",
                         cases[c], i + 1, losses->v[i], (double)lr, want);
                failures++;
            }
        }
    }
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    fputs(log, stderr);

    // compare the captured messages with PyTorch's
    long n = ftell(cap);
    rewind(cap);
    char *got = xcalloc((size_t)n + 1, 1);
    CHECK(fread(got, 1, (size_t)n, cap) == (size_t)n, "reading captured output");
    fclose(cap);
    char path[600];
    snprintf(path, sizeof path, "%s/plateau_messages.txt", dir);
    size_t wn;
    char *want = (char *)read_or_die(path, &wn, 1 << 20);
    CHECK((size_t)n == wn && !memcmp(got, want, wn), "messages differ:\n--- ours\n%s--- PyTorch\n%.*s",
          got, (int)wn, want);
    printf("  %d reductions; %ld bytes of messages identical to PyTorch's\n", reductions, n);
    printf("  first message: %.*s", (int)(strchr(got, '\n') ? strchr(got, '\n') - got + 1 : 0), got);
    free(got);
    free(want);
    fix_free(&fx);

    // defaults match torch.optim.lr_scheduler.ReduceLROnPlateau's
    Plateau p;
    plateau_init(&p, 0.1, 2);
    CHECK(p.threshold == 1e-4 && p.min_lr == 0 && p.eps == 1e-8 && p.cooldown == 0 &&
              isinf(p.best) && p.best > 0,
          "plateau defaults");
    // verbose = 0 prints nothing but still reduces
    float lr = 1e-3f;
    int red = 0;
    for (int i = 0; i < 4; i++) red += plateau_step(&p, 1.0, &lr, 0);
    CHECK(red == 1 && fabsf(lr - 1e-4f) < 1e-10f, "quiet reduction: %d reductions, lr %g", red,
          (double)lr);
}

// ----------------------------------------------------------------------------
// GradScaler

static void test_scaler(const char *dir) {
    printf("scaler\n");
    Fixture fx;
    fix_load(&fx, dir, "scaler.bin");
    const char *cases[] = {"default", "short", "huge"};
    for (size_t c = 0; c < 3; c++) {
        char name[64];
        snprintf(name, sizeof name, "%s.config", cases[c]);
        double *cfg = fix_get(&fx, name)->v;
        snprintf(name, sizeof name, "%s.flag_runs", cases[c]);
        FixArray *runs = fix_get(&fx, name);
        snprintf(name, sizeof name, "%s.scale_changes", cases[c]);
        FixArray *changes = fix_get(&fx, name);
        snprintf(name, sizeof name, "%s.steps_taken", cases[c]);
        double steps_want = fix_get(&fx, name)->v[0];

        GradScaler s;
        scaler_init(&s, 1);
        CHECK(s.scale == 65536.0f && s.growth_interval == 2000, "GradScaler defaults");
        s.scale = (float)cfg[0];
        s.growth_interval = (int)cfg[1];
        long step = 0, taken = 0;
        size_t next_change = 0, nchanges = changes->numel ? (size_t)changes->dims[0] : 0;
        float prev = s.scale;
        int ok = 1;
        for (size_t r = 0; r < (size_t)runs->dims[0]; r++) {
            int flag = (int)runs->v[2 * r];
            long count = (long)runs->v[2 * r + 1];
            for (long k = 0; k < count; k++, step++) {
                taken += scaler_update(&s, flag);
                if (s.scale != prev) {
                    if (next_change >= nchanges || changes->v[2 * next_change] != (double)step ||
                        changes->v[2 * next_change + 1] != (double)s.scale) {
                        if (ok)
                            fprintf(stderr, "FAIL %s: step %ld: scale %g -> %g not in PyTorch's "
                                    "sequence\n", cases[c], step, (double)prev, (double)s.scale);
                        ok = 0;
                    }
                    next_change++;
                    prev = s.scale;
                }
            }
        }
        CHECK(ok && next_change == nchanges, "%s: scale changes differ (%zu of %zu seen)", cases[c],
              next_change, nchanges);
        CHECK(step == (long)cfg[2], "%s: step count", cases[c]);
        CHECK(taken == (long)steps_want, "%s: %ld steps taken, PyTorch %g", cases[c], taken,
              steps_want);
        CHECK(isfinite(s.scale), "%s: scale became infinite", cases[c]);
        printf("  %-8s %6ld steps, %4ld skipped, %3zu scale changes, final scale %g\n", cases[c],
               step, step - taken, nchanges, (double)s.scale);
    }
    fix_free(&fx);

    // disabled (fp32): scale 1, never skips, never changes
    GradScaler s;
    scaler_init(&s, 0);
    CHECK(s.scale == 1.0f, "disabled scale");
    CHECK(scaler_update(&s, 1) == 1 && s.scale == 1.0f, "disabled scaler skipped a step");
}

// ----------------------------------------------------------------------------
// Adam's scalars: PyTorch computes them from the Python doubles 0.9, 0.999 and 1e-3

static void test_adam_scalars(void) {
    printf("adam scalars\n");
    CHECK(float_as_decimal(0.999f) == 0.999 && float_as_decimal(0.9f) == 0.9 &&
              float_as_decimal(1e-3f) == 1e-3 && float_as_decimal(1e-4f) == 1e-4 &&
              float_as_decimal(0.5f) == 0.5 && float_as_decimal(3e-4f) == 3e-4,
          "float_as_decimal of short decimals");
    float odd = 0.123456789f; // needs more than 6 digits: the float itself
    CHECK(float_as_decimal(odd) == (double)odd, "float_as_decimal of a long decimal");
    for (long t = 1; t <= 3000; t += (t < 10 ? 1 : 997)) {
        AdamScalars s = adam_scalars(1e-3f, 0.9f, 0.999f, t);
        CHECK(s.one_minus_b1 == (float)(1 - 0.9) && s.one_minus_b2 == (float)(1 - 0.999),
              "1 - beta: %.9g %.9g", (double)s.one_minus_b1, (double)s.one_minus_b2);
        CHECK(s.step_size == (float)(1e-3 / (1 - pow(0.9, (double)t))), "step_size at %ld", t);
        CHECK(s.bc2_sqrt == (float)sqrt(1 - pow(0.999, (double)t)), "bc2_sqrt at %ld", t);
    }
    CHECK(adam_scalars(1e-3f, 0.9f, 0.999f, 1).one_minus_b2 == 0.001f,
          "1 - 0.999 must be float(0.001), as in PyTorch");
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage: test-train FIXTURE_DIR (tests/fixtures/train)");
    test_rng(argv[1]);
    test_plateau(argv[1]);
    test_scaler(argv[1]);
    test_adam_scalars();
    return check_exit("all train checks passed");
}
