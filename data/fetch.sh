#!/bin/sh
# data/fetch.sh: the download and extraction steps of `make data` (data/Makefile calls them).
#
#   fetch.sh get "URL [URL...]" DEST SHA256LIST [MD5LIST]
#       Downloads URL to DEST atomically and resumably: bytes go to DEST.part (curl -C - resumes
#       an interrupted download), DEST.part is verified against the SHA-256 listed for DEST's file
#       name in SHA256LIST (and the MD5 in MD5LIST when it lists the file), and only then renamed
#       to DEST. A DEST that already verifies is kept. A mismatch removes DEST.part. The first
#       argument may list several URLs of the same file (mirrors, separated by spaces): when one
#       cannot be downloaded or gives a file that does not verify, the next is tried; it fails
#       when none gives the file.
#   fetch.sh extract TARBALL DIR SUBDIR
#       Extracts TARBALL, which must hold only SUBDIR/..., into DIR/SUBDIR: unpacks into a
#       temporary folder inside DIR, then swaps it in, so DIR/SUBDIR is never half extracted.
set -eu

die() { echo "error: $*" >&2; exit 1; }

# lookup LIST NAME: the hash listed for NAME ("<hex>  <name>" lines, '#' comments)
lookup() {
    [ -f "$1" ] || die "checksum list $1 not found"
    awk -v n="$2" '$1 !~ /^#/ && NF == 2 && $2 == n { print tolower($1); exit }' "$1"
}

# verify FILE NAME SHA256LIST MD5LIST: 0 when FILE matches, 1 (with a message) otherwise
verify() {
    want=$(lookup "$3" "$2")
    [ -n "$want" ] || die "$3 lists no SHA-256 for $2: add its line (\"<sha256>  $2\")"
    got=$(sha256sum "$1" | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
        echo "checksum mismatch for $2: SHA-256 is $got, expected $want" >&2
        return 1
    fi
    if [ -n "$4" ] && [ -f "$4" ]; then
        want=$(lookup "$4" "$2")
        if [ -n "$want" ]; then
            got=$(md5sum "$1" | cut -d' ' -f1)
            if [ "$got" != "$want" ]; then
                echo "checksum mismatch for $2: MD5 is $got, expected $want" >&2
                return 1
            fi
        fi
    fi
    return 0
}

# fetch_one URL DEST NAME SHA256LIST MD5LIST LAST: one download attempt into DEST.part, verified.
# 0 on success; otherwise a message (the full advice when LAST is 1) and 1.
fetch_one() {
    url=$1 dest=$2 name=$3 sums=$4 md5s=$5 last=$6
    echo "downloading $url"
    [ -f "$dest.part" ] && echo "  resuming from $(wc -c < "$dest.part") bytes already in $dest.part"
    if [ -t 2 ]; then progress=--progress-bar; else progress=--silent; fi
    rc=0
    curl --fail --location --show-error $progress --retry 3 --connect-timeout 30 \
        -C - -o "$dest.part" "$url" || rc=$?
    if [ $rc -ne 0 ]; then
        # a .part that is already complete makes the server answer "range not satisfiable"
        if [ -f "$dest.part" ] && verify "$dest.part" "$name" "$sums" "$md5s" 2>/dev/null; then
            rc=0
        elif [ "$last" -ne 1 ]; then
            echo "cannot download $url (curl error $rc)" >&2
            return 1
        else
            case $rc in
            5|6|7|28|35|56)
                echo "error: cannot download $url (curl error $rc: the machine looks offline, or the site is unreachable).
  Rerun \`make data\` when online: it resumes from $dest.part.
  Or fetch the file another way and put it at $dest (it is verified), or point to a copy with
  PETS_MIRROR=file:///path/to/dir (the two archives) or WEIGHTS_MIRROR=... (the .pth)." >&2 ;;
            *)
                echo "error: cannot download $url (curl error $rc); rerun \`make data\` to resume from $dest.part" >&2 ;;
            esac
            return 1
        fi
    fi
    if ! verify "$dest.part" "$name" "$sums" "$md5s"; then
        rm -f "$dest.part"
        if [ "$last" -eq 1 ]; then
            echo "error: $url: the downloaded file is corrupt or not the expected one; removed it. Rerun \`make data\`." >&2
        else
            echo "$url: the downloaded file is corrupt or not the expected one; removed it" >&2
        fi
        return 1
    fi
    return 0
}

cmd_get() {
    urls=$1 dest=$2 sums=$3 md5s=${4:-}
    name=$(basename "$dest")
    if [ -f "$dest" ]; then
        if verify "$dest" "$name" "$sums" "$md5s"; then
            echo "$dest: present, checksum OK"
            return 0
        fi
        echo "$dest: checksum wrong, downloading it again" >&2
        rm -f "$dest"
    fi
    mkdir -p "$(dirname "$dest")"
    command -v curl >/dev/null 2>&1 || die "curl is not installed (make deps installs it)"
    # shellcheck disable=SC2086
    set -- $urls
    [ $# -ge 1 ] || die "no URL given for $name"
    while [ $# -ge 1 ]; do
        last=0; [ $# -eq 1 ] && last=1
        if fetch_one "$1" "$dest" "$name" "$sums" "$md5s" $last; then
            mv -f "$dest.part" "$dest"
            echo "$dest: downloaded, checksum OK"
            return 0
        fi
        shift
        [ $# -ge 1 ] && echo "  trying the next mirror: $1" >&2
    done
    exit 1
}

cmd_extract() {
    tarball=$1 dir=$2 sub=$3
    [ -f "$tarball" ] || die "$tarball not found"
    mkdir -p "$dir"
    # refuse archives with anything outside SUBDIR/ (absolute paths, '..', other folders)
    bad=$(tar -tzf "$tarball" | awk -v s="$sub" '
        { p = $0; sub(/^\.\//, "", p) }
        p !~ "^" s "(/|$)" || p ~ /(^|\/)\.\.(\/|$)/ { print; exit }') || die "$tarball: not a readable .tar.gz"
    [ -z "$bad" ] || die "$tarball: unexpected member '$bad' (expected only $sub/...); delete the file and rerun \`make data\`"
    tmp="$dir/.extract-$sub.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    trap 'rm -rf "$tmp"' EXIT INT TERM
    echo "extracting $tarball into $dir/$sub"
    tar -xzf "$tarball" -C "$tmp" --no-same-owner --no-same-permissions || die "$tarball: extraction failed"
    [ -d "$tmp/$sub" ] || die "$tarball holds no $sub/ folder"
    rm -rf "$dir/$sub.old"
    [ -e "$dir/$sub" ] && mv "$dir/$sub" "$dir/$sub.old"
    mv "$tmp/$sub" "$dir/$sub"
    rm -rf "$dir/$sub.old" "$tmp"
    trap - EXIT INT TERM
}

[ $# -ge 1 ] || die "usage: fetch.sh get \"URL [URL...]\" DEST SHA256LIST [MD5LIST] | fetch.sh extract TARBALL DIR SUBDIR"
cmd=$1; shift
case $cmd in
get) [ $# -ge 3 ] || die "usage: fetch.sh get \"URL [URL...]\" DEST SHA256LIST [MD5LIST]"; cmd_get "$@" ;;
extract) [ $# -eq 3 ] || die "usage: fetch.sh extract TARBALL DIR SUBDIR"; cmd_extract "$@" ;;
*) die "unknown command '$cmd'" ;;
esac
