#!/usr/bin/env bash
# A single-node SLURM cluster on this Debian machine, for kdbuild's tests and CI: munge,
# slurmctld, slurmd, and (by default) MariaDB + slurmdbd so that `sacct` works, with cgroup
# memory enforcement so that a job over its `--mem` ends OUT_OF_MEMORY. Runs as root; no
# systemd needed: the daemons are started directly and stopped by their PID files.
#
# Usage:  scripts/slurm-cluster.sh up       # install (apt) + configure + start; re-running is safe
#         scripts/slurm-cluster.sh down     # stop what `up` started (by PID file only)
#         scripts/slurm-cluster.sh status   # daemons, node state, cgroup mode, accounting
#         scripts/slurm-cluster.sh check    # submit probe jobs: memory enforcement and timing
#
# Env:    KD_SLURM_DBD=0          skip MariaDB + slurmdbd (then `sacct` fails; kdbuild falls
#                                 back to squeue, scontrol and the jobcomp file)
#         KD_SLURM_CGROUP=0       no cgroups: `--mem` is not enforced (no OUT_OF_MEMORY)
#         KD_SLURM_CPUS=16        CPUs the node claims (default 16, whatever the hardware: the
#                                 test jobs are tiny and the tests run in parallel)
#         KD_SLURM_PARTITION=debug
#         PURGE_STATE=1 (down)    also wipe SLURM's state, spool and logs
#
# Derived from ../shared/slurm/setup.sh (see ../shared/NOTES.md). What differs, and why:
# - cgroups: the plugin follows what the kernel mounts (v1 hierarchy, or unified v2), and
#   only memory is constrained (ConstrainCores would pin jobs to CPUs the node only claims).
# - the node claims KD_SLURM_CPUS CPUs (SlurmdParameters=config_overrides), so independent
#   tests' jobs run side by side on a 2-core machine.
# - timing: a job that ends makes the scheduler run at once, dependent jobs start within a
#   second, and a job over its time limit is killed within about 30 s of it (OverTimeLimit=0,
#   KillWait=2); SLURM's minimum limit is one minute, so a TIMEOUT test takes 1-1.5 min.
set -euo pipefail

PART="${KD_SLURM_PARTITION:-debug}"
WITH_DBD="${KD_SLURM_DBD:-1}"
WITH_CGROUP="${KD_SLURM_CGROUP:-1}"
NODE_CPUS="${KD_SLURM_CPUS:-16}"
MEM_RESERVE_MB=1024
CONF=/etc/slurm/slurm.conf
RUN=/run/slurm
LOG=/var/log/slurm
SPOOL=/var/spool/slurm

log() { echo "[slurm-cluster] $*" >&2; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Which cgroup version the kernel gives us: "v2" if /sys/fs/cgroup is the unified hierarchy,
# "v1" if the memory controller is mounted as a v1 hierarchy, "none" otherwise.
cgroup_mode() {
  if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
    if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then echo v2; else echo none; fi
  elif [ -d /sys/fs/cgroup/memory ] && grep -q ' /sys/fs/cgroup/memory cgroup ' /proc/mounts; then
    echo v1
  else
    echo none
  fi
}

install_packages() {
  local pkgs=(slurmctld slurmd slurm-client munge) missing=()
  [ "$WITH_DBD" = 1 ] && pkgs+=(slurmdbd mariadb-server)
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    if ! apt-cache policy slurmctld 2>/dev/null | grep -q 'Candidate: [0-9]'; then apt-get update -qq; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown -R munge:munge /etc/munge; chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge; chmod 755 /run/munge
  if ! alive /run/munge/munged.pid; then
    log "starting munged"
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && break; sleep 0.1; done
  fi
  munge -n | unmunge >/dev/null || { log "munge self-test failed"; exit 1; }
}

start_dbd() {
  mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
  if ! alive /run/mysqld/mysqld.pid; then
    log "starting mariadb"
    (mysqld_safe --pid-file=/run/mysqld/mysqld.pid >/dev/null 2>&1 &)
    for _ in $(seq 150); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
DebugLevel=info
LogFile=${LOG}/slurmdbd.log
PidFile=${RUN}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
  if ! alive "$RUN/slurmdbd.pid"; then
    log "starting slurmdbd"; slurmdbd
    for _ in $(seq 100); do sacctmgr -n show cluster >/dev/null 2>&1 && break; sleep 0.2; done
  fi
}

write_config() {
  local host node_line realmem cg mode
  host="$(hostname -s)"
  node_line="$(slurmd -C | sed -n 1p)"
  realmem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")"
  # The node claims NODE_CPUS CPUs on one socket, whatever the hardware has.
  node_line="NodeName=${host} CPUs=${NODE_CPUS} Boards=1 SocketsPerBoard=1 CoresPerSocket=${NODE_CPUS} ThreadsPerCore=1 RealMemory=$((realmem - MEM_RESERVE_MB))"

  local acct proctrack taskplugin
  if [ "$WITH_DBD" = 1 ]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5"
  else
    acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  mode="$(cgroup_mode)"
  if [ "$WITH_CGROUP" = 1 ] && [ "$mode" != none ]; then
    proctrack=proctrack/cgroup; taskplugin=task/cgroup
    # Memory only: ConstrainCores would bind jobs to CPUs that the node merely claims.
    cg="CgroupPlugin=cgroup/${mode}
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0
ConstrainCores=no"
    # Without systemd (this machine has none), cgroup/v2 must not ask it for a scope.
    [ "$mode" = v2 ] && cg="${cg}
IgnoreSystemd=yes"
  else
    [ "$WITH_CGROUP" = 1 ] && log "no usable memory cgroup (mode: $mode): --mem is NOT enforced"
    proctrack=proctrack/linuxproc; taskplugin=task/none
    cg="CgroupPlugin=autodetect"
  fi

  local conf
  conf="$(cat <<EOF
# generated by kdbuild's scripts/slurm-cluster.sh
ClusterName=kdlocal
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=${proctrack}
TaskPlugin=${taskplugin}
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=100000,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
# without a default, a job with no --mem is given the whole node's memory and runs alone
DefMemPerCPU=512
ReturnToService=2
SlurmctldPidFile=${RUN}/slurmctld.pid
SlurmdPidFile=${RUN}/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${SPOOL}/ctld
SlurmdSpoolDir=${SPOOL}/d
SlurmctldLogFile=${LOG}/slurmctld.log
SlurmdLogFile=${LOG}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# finished jobs stay visible to squeue -t all / scontrol for 1 h
MinJobAge=3600
JobCompType=jobcomp/filetxt
JobCompLoc=${LOG}/jobcomp.log
${acct}
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
OverTimeLimit=0
KillWait=2
${node_line} State=UNKNOWN
PartitionName=${PART} Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
)"
  changed=0
  if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$conf" ]; then
    printf '%s\n' "$conf" >"$CONF"; changed=1; log "wrote $CONF"
  fi
  if [ ! -f /etc/slurm/cgroup.conf ] || [ "$(cat /etc/slurm/cgroup.conf)" != "$cg" ]; then
    printf '%s\n' "$cg" >/etc/slurm/cgroup.conf; changed=1; log "wrote /etc/slurm/cgroup.conf ($mode)"
  fi
}

up() {
  install_packages
  mkdir -p /etc/slurm "$RUN" "$LOG" "$SPOOL/ctld" "$SPOOL/d"
  start_munge
  write_config
  [ "$WITH_DBD" = 1 ] && start_dbd
  if [ "$changed" = 1 ]; then
    # new config: restart what runs so that it reads it
    for pf in "$RUN/slurmd.pid" "$RUN/slurmctld.pid"; do
      if alive "$pf"; then kill "$(cat "$pf")"; for _ in $(seq 50); do alive "$pf" || break; sleep 0.1; done; fi
    done
  fi
  if ! alive "$RUN/slurmctld.pid"; then log "starting slurmctld"; slurmctld -i; fi
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
  if [ "$WITH_DBD" = 1 ]; then sacctmgr -i add cluster kdlocal >/dev/null 2>&1 || true; fi
  if ! alive "$RUN/slurmd.pid"; then log "starting slurmd"; slurmd; fi
  local host st
  host="$(hostname -s)"
  for _ in $(seq 150); do
    st="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
    case "$st" in idle*|mix*|alloc*) break ;; esac
    sleep 0.2
  done
  case "$(sinfo -h -n "$host" -o %t 2>/dev/null || true)" in
    idle*|mix*|alloc*) ;;
    *) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true; sleep 1 ;;
  esac
  sinfo
  log "ready (node ${host}, partition ${PART}, cgroup $(cgroup_mode), accounting $([ "$WITH_DBD" = 1 ] && echo slurmdbd || echo none))"
}

stop_pid() { # $1 = pid file, $2 = name
  local pf="$1" pid
  [ -f "$pf" ] || return 0
  pid="$(cat "$pf")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $2 (pid $pid)"
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pf"
}

down() {
  stop_pid "$RUN/slurmd.pid" slurmd
  stop_pid "$RUN/slurmctld.pid" slurmctld
  stop_pid "$RUN/slurmdbd.pid" slurmdbd
  if [ -f /run/mysqld/mysqld.pid ]; then
    # mysqld_safe (its parent) exits by itself once mysqld is shut down
    mysqladmin shutdown 2>/dev/null || stop_pid /run/mysqld/mysqld.pid mysqld
  fi
  stop_pid /run/munge/munged.pid munged
  if [ "${PURGE_STATE:-0}" = 1 ]; then rm -rf "$SPOOL" "$LOG"; fi
  return 0
}

status() {
  for d in munge/munged slurm/slurmctld slurm/slurmd slurm/slurmdbd mysqld/mysqld; do
    if alive "/run/$d.pid"; then echo "${d#*/}: running"; else echo "${d#*/}: stopped"; fi
  done
  echo "cgroup: $(cgroup_mode)"
  if alive "$RUN/slurmctld.pid"; then sinfo 2>/dev/null || true; fi
}

# Probes, printed for the record: does a job over its --mem end OUT_OF_MEMORY here?
check() {
  local dir id st
  dir="$(mktemp -d)"
  id="$(sbatch --parsable --mem=64M --time=1 -o "$dir/oom.log" --wrap 'dd if=/dev/zero of=/dev/null bs=256M count=1')"
  for _ in $(seq 300); do
    st="$(squeue -h -t all -j "$id" -o %T 2>/dev/null || true)"
    case "$st" in PENDING|RUNNING|CONFIGURING|COMPLETING|"") sleep 0.2 ;; *) break ;; esac
  done
  echo "job over --mem=64M: $st"
  cat "$dir/oom.log"
  rm -rf "$dir"
  [ "$st" = OUT_OF_MEMORY ]
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  check) check ;;
  *) echo "usage: $0 up|down|status|check" >&2; exit 2 ;;
esac
