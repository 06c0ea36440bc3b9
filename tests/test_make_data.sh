#!/bin/sh
# tests/test_make_data.sh SRC TMP: `make data` (data/Makefile + data/fetch.sh) on local files.
# Builds tiny archives and a fake weight file in a local "mirror", with a checksum list made for
# them, and checks: a good download verifies, extracts and lands in place; a second run downloads
# and extracts nothing; an interrupted download resumes from its .part; a corrupt download (wrong
# SHA-256, wrong MD5, or a bad partial file) is rejected and removed; an unreachable mirror gives
# the offline message; an archive with members outside its folder is refused; when the first
# mirror lacks the archives (or serves a corrupt one), the second mirror (PETS_MIRROR2) is used.
set -u
SRC=$1
TMP=$2
rm -rf "$TMP"
mkdir -p "$TMP/mirror/build" "$TMP/bad"
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
command -v curl >/dev/null 2>&1 || { echo "SKIP: curl is not installed (make deps installs it)"; exit 77; }

# --- the fake upstream files
B=$TMP/mirror/build
mkdir -p "$B/images" "$B/annotations"
printf 'not really a jpeg %s\n' 1 > "$B/images/Abyssinian_1.jpg"
head -c 300000 /dev/urandom > "$B/images/Bengal_2.jpg"   # big enough to interrupt
printf 'Abyssinian_1 1 1 1\nBengal_2 6 1 6\n' > "$B/annotations/trainval.txt"
printf 'Abyssinian_1 1 1 1\n' > "$B/annotations/test.txt"
(cd "$B" && tar -czf ../images.tar.gz images && tar -czf ../annotations.tar.gz annotations)
head -c 5000 /dev/urandom > "$TMP/mirror/resnet34-b627a593.pth"
(cd "$TMP/mirror" && sha256sum images.tar.gz annotations.tar.gz resnet34-b627a593.pth) > "$TMP/sums"
(cd "$TMP/mirror" && md5sum images.tar.gz annotations.tar.gz) > "$TMP/md5s"
sed -i '1i # a comment line, as in data/checksums.sha256' "$TMP/sums"

run_make() { # DATA_DIR MIRROR [extra make args...]; output in $TMP/out. MIRROR2: the fallback.
    dd=$1 mirror=$2; shift 2
    make -s -f "$SRC/data/Makefile" DATA_DIR="$dd" PETS_MIRROR="$mirror" WEIGHTS_MIRROR="$mirror" \
        PETS_MIRROR2="${MIRROR2:-}" CHECKSUMS="$TMP/sums" MD5SUMS="$TMP/md5s" "$@" > "$TMP/out" 2>&1
}

# --- 1. a good download
D=$TMP/data
run_make "$D" "file://$TMP/mirror" || { cat "$TMP/out"; fail "make data failed on good files"; }
[ -f "$D/oxford-iiit-pet/images/Bengal_2.jpg" ] && cmp -s "$D/oxford-iiit-pet/images/Bengal_2.jpg" "$B/images/Bengal_2.jpg" \
    || fail "images not extracted"
cmp -s "$D/oxford-iiit-pet/annotations/trainval.txt" "$B/annotations/trainval.txt" || fail "annotations not extracted"
cmp -s "$D/weights/resnet34-b627a593.pth" "$TMP/mirror/resnet34-b627a593.pth" || fail "weights not in data/weights"
[ -f "$D/downloads/images.tar.gz" ] || fail "archive not kept in downloads/"
ls "$D/downloads" | grep -q '\.part$' && fail ".part files left behind"
ls -a "$D/oxford-iiit-pet" | grep -q '^\.extract' && fail "temporary extraction folder left behind"

# --- 2. a second run downloads and extracts nothing
stamp_before=$(stat -c %Y.%y "$D/oxford-iiit-pet/images/.extracted")
sleep 1
run_make "$D" "file://$TMP/mirror" || fail "second run failed"
grep -q 'downloading' "$TMP/out" && fail "second run downloaded again: $(cat "$TMP/out")"
grep -q 'extracting' "$TMP/out" && fail "second run extracted again: $(cat "$TMP/out")"
[ "$(stat -c %Y.%y "$D/oxford-iiit-pet/images/.extracted")" = "$stamp_before" ] || fail "stamp touched"

# --- 3. resume: a partial download is continued, then verified
rm "$D/downloads/images.tar.gz"
head -c 100000 "$TMP/mirror/images.tar.gz" > "$D/downloads/images.tar.gz.part"
run_make "$D" "file://$TMP/mirror" || { cat "$TMP/out"; fail "resume failed"; }
grep -q 'resuming from 100000 bytes' "$TMP/out" || fail "no resume message: $(cat "$TMP/out")"
cmp -s "$D/downloads/images.tar.gz" "$TMP/mirror/images.tar.gz" || fail "resumed file differs"
[ -f "$D/downloads/images.tar.gz.part" ] && fail ".part left after resume"

# --- 4. a bad partial file (wrong bytes): the result mismatches, is removed, make fails
rm "$D/downloads/images.tar.gz"
head -c 100000 /dev/urandom > "$D/downloads/images.tar.gz.part"
if run_make "$D" "file://$TMP/mirror"; then fail "a corrupt resumed download was accepted"; fi
grep -q 'checksum mismatch for images.tar.gz' "$TMP/out" || fail "no mismatch message: $(cat "$TMP/out")"
[ -e "$D/downloads/images.tar.gz.part" ] && fail "corrupt .part not removed"
[ -e "$D/downloads/images.tar.gz" ] && fail "corrupt download renamed into place"
run_make "$D" "file://$TMP/mirror" || fail "rerun after a corrupt .part failed"

# --- 5. a corrupt upstream file (SHA-256 mismatch): rejected, removed, nothing extracted
cp "$TMP/mirror/"*.tar.gz "$TMP/mirror/resnet34-b627a593.pth" "$TMP/bad/"
printf 'x' >> "$TMP/bad/annotations.tar.gz"
D2=$TMP/data2
if run_make "$D2" "file://$TMP/bad"; then fail "a corrupt archive was accepted"; fi
grep -q 'checksum mismatch for annotations.tar.gz: SHA-256' "$TMP/out" || fail "no SHA-256 message: $(cat "$TMP/out")"
grep -q 'corrupt or not the expected one; removed it' "$TMP/out" || fail "no removal message"
[ -e "$D2/downloads/annotations.tar.gz" ] || [ -e "$D2/downloads/annotations.tar.gz.part" ] && fail "corrupt archive kept"
[ -e "$D2/oxford-iiit-pet/annotations" ] && fail "corrupt archive extracted"

# --- 6. the MD5 cross-check: a SHA-256 list that matches but an MD5 that does not
cp "$TMP/md5s" "$TMP/md5s.good"
sed -i 's/^[0-9a-f]*  annotations/00000000000000000000000000000000  annotations/' "$TMP/md5s"
D3=$TMP/data3
if run_make "$D3" "file://$TMP/mirror"; then fail "an MD5 mismatch was accepted"; fi
grep -q 'checksum mismatch for annotations.tar.gz: MD5' "$TMP/out" || fail "no MD5 message: $(cat "$TMP/out")"
cp "$TMP/md5s.good" "$TMP/md5s"

# --- 7. offline: a clear message, non-zero exit
D4=$TMP/data4
if run_make "$D4" "http://127.0.0.1:9/pets"; then fail "an unreachable mirror succeeded"; fi
grep -q 'looks offline' "$TMP/out" || fail "no offline message: $(cat "$TMP/out")"
grep -q 'PETS_MIRROR=file://' "$TMP/out" || fail "offline message does not mention PETS_MIRROR"

# --- 8. a hostile archive (member outside images/) is refused before extraction
mkdir -p "$TMP/evil/images" "$TMP/evilmirror"
printf 'x' > "$TMP/evil/images/a.jpg"; printf 'pwned' > "$TMP/evil/escape"
(cd "$TMP/evil" && tar -czf "$TMP/evilmirror/images.tar.gz" images/a.jpg escape)
cp "$TMP/mirror/annotations.tar.gz" "$TMP/mirror/resnet34-b627a593.pth" "$TMP/evilmirror/"
(cd "$TMP/evilmirror" && sha256sum images.tar.gz annotations.tar.gz resnet34-b627a593.pth) > "$TMP/sums"
grep -v images "$TMP/md5s.good" > "$TMP/md5s"
D5=$TMP/data5
if run_make "$D5" "file://$TMP/evilmirror"; then fail "a hostile archive was extracted"; fi
grep -q "unexpected member 'escape'" "$TMP/out" || fail "no hostile-archive message: $(cat "$TMP/out")"
[ -e "$D5/oxford-iiit-pet/escape" ] && fail "hostile member written"

# --- 9. the second mirror: the first is missing (or serves a corrupt file), the second is used
(cd "$TMP/mirror" && sha256sum images.tar.gz annotations.tar.gz resnet34-b627a593.pth) > "$TMP/sums"
cp "$TMP/md5s.good" "$TMP/md5s"
mkdir -p "$TMP/weights-only"
cp "$TMP/mirror/resnet34-b627a593.pth" "$TMP/weights-only/"
D6=$TMP/data6
if MIRROR2="file://$TMP/mirror" run_make "$D6" "file://$TMP/weights-only"; then
    grep -q "trying the next mirror: file://$TMP/mirror/images.tar.gz" "$TMP/out" ||
        fail "no message about the second mirror: $(cat "$TMP/out")"
    cmp -s "$D6/oxford-iiit-pet/annotations/trainval.txt" "$B/annotations/trainval.txt" ||
        fail "second mirror: annotations not extracted"
else
    fail "make data failed although the second mirror has the files: $(cat "$TMP/out")"
fi
D7=$TMP/data7
if MIRROR2="file://$TMP/mirror" run_make "$D7" "file://$TMP/bad"; then
    grep -q "corrupt or not the expected one; removed it" "$TMP/out" || fail "no message about the corrupt first mirror"
    cmp -s "$D7/downloads/annotations.tar.gz" "$TMP/mirror/annotations.tar.gz" || fail "second mirror: wrong archive kept"
else
    fail "make data failed although the second mirror has good files: $(cat "$TMP/out")"
fi
D8=$TMP/data8
if MIRROR2="file://$TMP/missing-too" run_make "$D8" "file://$TMP/weights-only"; then
    fail "make data succeeded with both mirrors missing"
fi
grep -q "missing-too/images.tar.gz" "$TMP/out" || fail "both mirrors missing: the error should name the last one: $(cat "$TMP/out")"

if [ $fails -ne 0 ]; then echo "test_make_data: $fails failure(s)"; exit 1; fi
echo "test_make_data: all checks passed"
