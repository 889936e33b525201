# Sourced by scripts/bench-vs-pytorch.sh and scripts/bench-tch-diagnostic.sh: each case of the
# array `cases` ("network|vitrine bench flags|bench_pytorch.py flags[|timed steps]") whose name
# contains ONLY, round after round (so a busy machine slows every side alike), one line per run
# appended to RESULTS: the network, then what the caller's `measure VFLAGS PFLAGS [STEPS]` prints
# (each side's JSON, tab-separated). A side that fails ends the script (measure returns its status).
interleave() {
  local rounds="$1" only="$2" results="$3" round case name vflags pflags steps line
  for round in $(seq "$rounds"); do
    for case in "${cases[@]}"; do
      IFS='|' read -r name vflags pflags steps <<< "$case"
      [[ "$name" == *"$only"* ]] || continue
      echo "round $round: $name" >&2
      line=$(measure "$vflags" "$pflags" "$steps")
      printf '%s\t%s\n' "$name" "$line" >> "$results"
    done
  done
}
