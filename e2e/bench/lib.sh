# shellcheck shell=bash
# Shell helpers shared by the benchmark scripts (sourced, not run).

# free_port: a free TCP port on 127.0.0.1
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# group_alive PGID: some process of that group is still running (zombies do not count)
group_alive() {
  local f rest st pg
  for f in /proc/[0-9]*/stat; do
    { read -r rest <"$f"; } 2>/dev/null || continue
    rest="${rest##*) }"
    read -r st _ pg _ <<<"$rest"
    [[ "$pg" == "$1" && "$st" != Z ]] && return 0
  done
  return 1
}

# group_cpu_ticks PGID: CPU time (utime + stime, clock ticks) of the live processes of that group
group_cpu_ticks() {
  local f rest total=0
  local -a fields
  for f in /proc/[0-9]*/stat; do
    { read -r rest <"$f"; } 2>/dev/null || continue
    rest="${rest##*) }"
    read -r -a fields <<<"$rest"
    # after "(comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    [[ "${fields[2]}" == "$1" ]] && total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}
