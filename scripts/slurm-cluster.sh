#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for tests: Debian's slurmctld, slurmd and munge
# with a cluster config of our own in DIR. Run as root.
#   scripts/slurm-cluster.sh up DIR     start it; prints the SLURM_CONF to export
#   scripts/slurm-cluster.sh down DIR   stop it
set -euo pipefail
action=${1:?up or down}
dir=$(realpath -m "${2:?a folder for the config, state and logs of the cluster}")

down() {
    for daemon in slurmd slurmctld; do
        if [ -f "$dir/$daemon.pid" ]; then
            kill "$(cat "$dir/$daemon.pid")" 2>/dev/null || true
        fi
    done
    for _ in $(seq 50); do
        pgrep -f "slurm(ctld|d) .*-f $dir/slurm.conf" >/dev/null || break
        sleep 0.1
    done
    pkill -9 -f "slurm(ctld|d) .*-f $dir/slurm.conf" 2>/dev/null || true
}

if [ "$action" = down ]; then
    down
    exit 0
fi

mkdir -p "$dir/state" "$dir/spool"
if ! pgrep -x munged >/dev/null; then
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    chown -R munge:munge /etc/munge 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    runuser -u munge -- /usr/sbin/munged --force 2>/dev/null || /usr/sbin/munged --force
fi
cpus=$(nproc)
memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cat > "$dir/slurm.conf" <<CONF
ClusterName=audiomill-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
JobRequeue=1
ReturnToService=2
KillWait=5
MinJobAge=300
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=${AUDIOMILL_SLURMCTLD_PORT:-6817}
SlurmdPort=${AUDIOMILL_SLURMD_PORT:-6818}
NodeName=localhost CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$dir/slurm.conf
/usr/sbin/slurmctld -i -f "$dir/slurm.conf"
/usr/sbin/slurmd -N localhost -f "$dir/slurm.conf"
for _ in $(seq 100); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        echo "SLURM_CONF=$dir/slurm.conf"
        exit 0
    fi
    sleep 0.1
done
echo "the SLURM cluster in $dir did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
down
exit 1
