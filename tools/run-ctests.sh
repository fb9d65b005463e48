#!/usr/bin/env bash
# Run every C unit test binary in a folder; print each one's summary and a total line.
set -u
dir=$1; pass=0; fail=0; bad=()
for t in "$dir"/*_test; do
  [ -x "$t" ] || continue
  out=$("$t" 2>&1); rc=$?
  line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -1)
  p=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) passed.*/\1/'); f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  [ -n "$line" ] || { p=0; f=1; }
  [ $rc -ne 0 ] && [ "$f" = 0 ] && f=1
  [ "$p" = 0 ] && [ "$f" = 0 ] && f=1   # "0 passed, 0 failed": a test that checked nothing fails
  pass=$((pass + p)); fail=$((fail + f))
  if [ "$f" != 0 ]; then bad+=("$(basename "$t")"); printf '%s\n' "$out" | tail -40; else echo "$line"; fi
done
echo "C tests ($dir): $pass passed, $fail failed"
[ $fail -eq 0 ] || { echo "failing: ${bad[*]}"; exit 1; }
