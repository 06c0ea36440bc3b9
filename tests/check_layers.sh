#!/bin/sh
# tests/check_layers.sh: checks that code/ keeps its layers (CTest `layers`). Reads every
# `#include "..."` of the .c, .h and .cu files under CODE_DIR and fails, naming file:line and both
# groups, when a file includes a header of a higher layer (or of another group of its own layer),
# when an include names no file of CODE_DIR, when a file belongs to no layer, or when modules
# include each other in a cycle. The layers and the rules are in CODE_DIR/layers.txt.
# POSIX sh and awk only (make test runs on a minimal Debian).
#   usage: sh tests/check_layers.sh [CODE_DIR]      (default: the code/ next to tests/)
set -eu

code=${1:-$(dirname "$0")/../code}
layers=$code/layers.txt
[ -f "$layers" ] || { echo "check_layers: $layers not found (the layer table of code/)" >&2; exit 2; }

# Every source file, as a path relative to CODE_DIR; awk reads each in turn.
files=$(cd "$code" && find . -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' \) | sed 's|^\./||' | sort)
[ -n "$files" ] || { echo "check_layers: no .c, .h or .cu files under $code" >&2; exit 2; }

printf '%s\n' "$files" | awk -v code="$code" -v layers="$layers" '
# A pattern of layers.txt as an anchored regular expression: * matches any characters but /.
function glob_re(g,    r, i, ch) {
    r = "^"
    for (i = 1; i <= length(g); i++) {
        ch = substr(g, i, 1)
        if (ch == "*") r = r "[^/]*"
        else if (index(".[]()+?^$|\\{}", ch)) r = r "\\" ch
        else r = r ch
    }
    return r "$"
}
function group_of(path,    i) {
    for (i = 1; i <= npat; i++)
        if (path ~ pat_re[i]) return pat_group[i]
    return ""
}
function module_of(path) { sub(/\.(c|h|cu)$/, "", path); return path }
function exists(path,    line, r) {
    r = (getline line < path) >= 0
    if (r) close(path)
    return r
}
function fail(msg) { print "check_layers: " msg > "/dev/stderr"; bad = 1 }
# Depth-first search of the module graph; state 1 = on the current path, 2 = done.
function dfs(m,    k, n, i, to, c, j) {
    state[m] = 1
    stack[++depth] = m
    n = nout[m]
    for (i = 1; i <= n; i++) {
        to = out[m, i]
        if (state[to] == 1) {
            c = ""
            for (j = depth; j >= 1 && stack[j] != to; j--) ;
            for (k = j; k <= depth; k++)
                c = c stack[k] " (" where[stack[k], (k < depth ? stack[k + 1] : to)] ") -> "
            fail("include cycle between modules: " c to)
        } else if (state[to] == 0) dfs(to)
    }
    depth--
    state[m] = 2
}
BEGIN {
    while ((getline line < layers) > 0) {
        sub(/#.*/, "", line); sub(/[ \t]+$/, "", line)
        sub(/^[ \t]+/, "", line)
        if (line == "") continue
        n = split(line, f, /[ \t]+/)
        if (n < 3 || f[1] !~ /^[0-9]+$/) { print "check_layers: " layers ": bad line: " line > "/dev/stderr"; exit 2 }
        level[f[2]] = f[1] + 0
        for (i = 3; i <= n; i++) { npat++; pat_re[npat] = glob_re(f[i]); pat_group[npat] = f[2] }
    }
    close(layers)
}
{
    file = $0
    g = group_of(file)
    if (g == "") { fail(file ": matches no line of " layers " (add its folder to a layer)"); next }
    m = module_of(file)
    if (!(m in state)) { state[m] = 0; mods[++nmods] = m }
    dir = file; if (!sub(/\/[^\/]*$/, "", dir)) dir = ""
    lineno = 0
    while ((getline line < (code "/" file)) > 0) {
        lineno++
        if (line !~ /^[ \t]*#[ \t]*include[ \t]*"/) continue
        inc = line; sub(/^[^"]*"/, "", inc); sub(/".*/, "", inc)
        # as the compiler resolves it: next to the including file first, then from code/
        if (dir != "" && exists(code "/" dir "/" inc)) target = dir "/" inc
        else if (exists(code "/" inc)) target = inc
        else { fail(file ":" lineno ": includes \"" inc "\", which is no file of code/"); continue }
        tg = group_of(target)
        if (tg == "") continue # reported as a file of its own
        if (level[tg] > level[g] || (level[tg] == level[g] && tg != g))
            fail(file ":" lineno ": " g " (layer " level[g] ") includes " target " of " tg \
                 " (layer " level[tg] "): a lower layer must not include a higher one or a sibling" \
                 " (layers: " layers ")")
        tm = module_of(target)
        if (tm != m && !((m, tm) in edge)) {
            edge[m, tm] = 1
            out[m, ++nout[m]] = tm
            where[m, tm] = file ":" lineno
            if (!(tm in state)) { state[tm] = 0; mods[++nmods] = tm }
        }
    }
    close(code "/" file)
}
END {
    for (i = 1; i <= nmods; i++) if (state[mods[i]] == 0) dfs(mods[i])
    if (bad) exit 1
    print "check_layers: " NR " files of " code " keep the layers of " layers
}'
