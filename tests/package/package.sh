#!/usr/bin/env bash
# Burst as another project uses it: install to a temporary prefix, build examples/cpp outside
# the tree with find_package (shared and static libraries) and with pkg-config, and run it on
# thread ranks and under mpirun. Also checks that the README shows that program verbatim.
#   package.sh SOURCE_DIR BUILD_DIR MPIRUN
set -u
src=${1:?usage: package.sh SOURCE_DIR BUILD_DIR MPIRUN}
build=${2:?}
mpirun=${3:?}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok    $1"; }
bad() {
  failed=$((failed + 1))
  echo "FAIL  $1"
  [ -n "${2:-}" ] && sed 's/^/      /' <<<"$2" | tail -n 20
}
# check NAME CMD...: the command succeeds.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$name"; else bad "$name" "$out"; fi
}

prefix=$TMP/prefix
check "cmake --install to a temporary prefix" cmake --install "$build" --prefix "$prefix"
for f in include/burst/burst.h include/burst/version.h lib/libburst.so lib/libburst.a lib/libburst_mpi.so \
         lib/libburst_mpi.a lib/cmake/burst/burstConfig.cmake lib/pkgconfig/burst.pc lib/pkgconfig/burst-mpi.pc bin/burst; do
  [ -e "$prefix/$f" ] || bad "installed $f"
done
# No private header may reach the prefix (they live in src/, outside consumers' include path).
if find "$prefix/include" -name '*.h' | xargs grep -l '#include "\(core\|kernels\|comm\|algo\|api\)/' >/dev/null; then
  bad "installed headers include only installed headers"
else
  ok "installed headers include only installed headers"
fi

run_example() {  # run_example NAME BINARY
  check "$1: 4 thread ranks" "$2"
  check "$1: 4 MPI ranks" "$mpirun" -np 4 "$2"
}
for kind in shared static; do
  static=OFF
  [ "$kind" = static ] && static=ON
  dir=$TMP/example-$kind
  if cmake -S "$src/examples/cpp" -B "$dir" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
       -DBURST_EXAMPLE_STATIC=$static >"$TMP/log" 2>&1 && cmake --build "$dir" >>"$TMP/log" 2>&1; then
    ok "find_package(burst COMPONENTS mpi), $kind libraries: the example builds"
    run_example "find_package, $kind" "$dir/burst_example"
  else
    bad "find_package(burst COMPONENTS mpi), $kind libraries: the example builds" "$(cat "$TMP/log")"
  fi
done

flags=$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs burst-mpi 2>&1)
if c++ -O2 "$src/examples/cpp/main.cpp" -o "$TMP/example-pc" $flags -Wl,-rpath,"$prefix/lib" >"$TMP/log" 2>&1; then
  ok "pkg-config burst-mpi: the example builds ($flags)"
  run_example "pkg-config" "$TMP/example-pc"
else
  bad "pkg-config burst-mpi: the example builds" "$flags"$'\n'"$(cat "$TMP/log")"
fi

# The README's C++ block under "## The library" is the example, to the byte.
python3 - "$src" <<'PY' && ok "README shows examples/cpp/main.cpp verbatim" || bad "README shows examples/cpp/main.cpp verbatim"
import re, sys
src = sys.argv[1]
readme = open(f"{src}/README.md").read()
section = readme.split("## The library\n", 1)[1].split("\n## ", 1)[0]
blocks = re.findall(r"```cpp\n(.*?)```", section, re.S)
sys.exit(0 if open(f"{src}/examples/cpp/main.cpp").read() in blocks else 1)
PY

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
