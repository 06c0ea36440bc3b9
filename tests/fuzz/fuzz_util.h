// fuzz_util.h: helpers shared by the libFuzzer harnesses of tests/fuzz/: a private scratch folder
// (for the parsers that read a path rather than bytes) and splitting one input into parts.
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

// A fresh folder under $TMPDIR (or /tmp) for this process, removed with its files at exit.
const char *fuzz_scratch_dir(void);
// Writes data to <scratch>/<rel> (creating its folder); returns the full path (static buffer
// per call site is the caller's business: the result is a new heap string).
char *fuzz_write(const char *rel, const uint8_t *data, size_t n);
// Splits data at each occurrence of sep into at most max parts; returns the part count.
int fuzz_split(const uint8_t *data, size_t n, const char *sep, const uint8_t **part,
               size_t *len, int max);

#endif // FUZZ_UTIL_H
