#!/bin/sh
# tests/test_experiments_cache.sh: caches and checkpoints that cannot mislead.
#   test_experiments_cache.sh BUILD TMP
# On a synthetic dataset (build/make-fake-pets, --limit 6, random weights, CPU):
# - a flipped byte in the payload of a cache (04's features, the crops of --bn-train) is caught by
#   the file's checksum: a warning, the cache is rebuilt, and the run's numbers, predictions and
#   final weights are identical to those of the run that built the cache;
# - the reference kernels (PETS_CPU_REFERENCE=1) do not reuse the features the fast kernels
#   computed: another cache key (a new file), the cache is built, not reused;
# - --resume on another kernel table (PETS_CPU_REFERENCE=1 over a fast run's checkpoint) is refused
#   with a message that names both.
# shellcheck source=tests/experiments_lib.sh
. "$(dirname "$0")/experiments_lib.sh"
exp_setup "$1" "$2"
P04=$BUILD/04-feature-extraction
COMMON="--root $TMP/fake --limit 6 --weights random --seed 5 --batch-size 4 --device cpu --cache $TMP/cache"


# flip_payload FILE: flips one bit of a data byte (after the 128-byte header and the labels)
flip_payload() {
    off=$((128 + 64 + 1000))
    b=$(od -An -tu1 -j $off -N1 "$1" | tr -d ' ')
    printf '%b' "$(printf '\\%03o' $(((b + 16) % 256)))" |
        dd of="$1" bs=1 seek=$off count=1 conv=notrunc 2> /dev/null || fail "cannot patch $1"
}

for variant in "" "--bn-train"; do
    name=04-feature-extraction${variant:+-bn-train}
    pattern=$([ -n "$variant" ] && echo "crops-trainval-*.u8" || echo "features-trainval-*.f32")
    # shellcheck disable=SC2086
    "$P04" $COMMON $variant --epochs 1 --results "$TMP/a" > "$TMP/a.out" 2>&1 ||
        fail "$name run A failed: $(tail -5 "$TMP/a.out")"
    # shellcheck disable=SC2086
    set -- $TMP/cache/$pattern
    [ $# -eq 1 ] && [ -f "$1" ] || fail "$name: expected one cache $pattern, found: $*"
    flip_payload "$1"
    # shellcheck disable=SC2086
    "$P04" $COMMON $variant --epochs 1 --results "$TMP/b" > "$TMP/b.out" 2> "$TMP/b.err" ||
        fail "$name run B failed: $(tail -5 "$TMP/b.err")"
    grep -q "do not match their checksum" "$TMP/b.err" ||
        fail "$name: a damaged cache should be reported: $(cat "$TMP/b.err")"
    grep "cache: .*trainval.*reused" "$TMP/b.out" &&
        fail "$name: the damaged trainval cache was used"
    same_run "$name" "$TMP/a" "$TMP/b"
    echo "ok: $name: a flipped byte in $(basename "$1") is reported, the cache rebuilt, the results identical"
done

# The reference kernels: a new feature cache, then --resume over the fast run's checkpoint refused.
FAST_CACHE=$(echo "$TMP"/cache/features-trainval-*.f32)
# shellcheck disable=SC2086
PETS_CPU_REFERENCE=1 "$P04" $COMMON --epochs 2 --resume --results "$TMP/a" > "$TMP/r.out" 2> "$TMP/r.err"
rc=$?
[ $rc -ne 0 ] || fail "--resume on the reference kernels over a fast run's checkpoint must be refused"
grep "cache: .*features.*reused" "$TMP/r.out" && fail "PETS_CPU_REFERENCE=1 reused the fast kernels' features"
new=0
for f in "$TMP"/cache/features-trainval-*.f32; do [ "$f" = "$FAST_CACHE" ] || new=1; done
[ $new -eq 1 ] && [ -f "$FAST_CACHE" ] ||
    fail "PETS_CPU_REFERENCE=1 should build its own feature cache (another key), beside $FAST_CACHE"
echo "ok: PETS_CPU_REFERENCE=1 builds its own feature cache"
for p in "cpu-fast" "cpu-reference" "--device" "--precision" "without --resume"; do
    grep -qF -- "$p" "$TMP/r.err" || fail "the refused resume should name '$p': $(cat "$TMP/r.err")"
done
echo "ok: --resume on other kernels refused: $(grep -m1 error "$TMP/r.err")"
echo PASS
