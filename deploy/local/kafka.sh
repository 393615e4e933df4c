#!/usr/bin/env bash
# Local Apache Kafka (KRaft, combined broker+controller) for clickhook development and tests:
# one node, or a cluster of several on loopback (KAFKA_NODES=3). No Docker, no tarball: the
# broker's jars come from Maven Central through deploy/local/pom.xml and are cached outside
# the repo.
#
# Usage: deploy/local/kafka.sh start|stop|status
#        KAFKA_NODES=3 deploy/local/kafka.sh start|stop|status|kill-node I|start-node I|stop-node I
#   start   fetch the jars once, format a fresh data dir, start the broker in the background,
#           wait until it answers a metadata request, and print its bootstrap address
#           (127.0.0.1:<port>) as the last line of stdout. Already running: prints it again.
#   stop    stop the broker this state dir started (SIGTERM, then SIGKILL after
#           KAFKA_STOP_TIMEOUT s) and remove the temporary data dir. No broker: exit 0.
#   status  "running" + bootstrap address (exit 0), or "not running" (exit 3).
#
# Cluster (KAFKA_NODES=N, N > 1; 3 makes a quorum that survives one node down):
#   N nodes, each a broker and a KRaft controller, all N of them voters. Node I (1..N) listens
#   on KAFKA_PORT+2(I-1) and its controller on the next port (KAFKA_PORT=0: free ports, start
#   only). Internal topics (consumer offsets, transactions) have min(N, 3) replicas, writes
#   need min(2, N) in sync; a crashed node is fenced within 3 s. State in
#   $CLICKHOOK_CACHE_DIR/cluster-<port> (node-I/ for each node), heap "-Xms128m -Xmx256m" each.
#   start       as above for every node; prints the bootstrap list (127.0.0.1:p1,...) last.
#               Some nodes already running: starts the others.
#   stop        stops every node: SIGTERM one by one while a quorum is left to approve each
#               controlled shutdown, the last two together (SIGKILL after KAFKA_STOP_TIMEOUT s);
#               removes the temporary data dir.
#   status      one line per node, then the bootstrap list; exit 0 all running, 3 none,
#               4 some.
#   kill-node I SIGKILL node I: a crash, no controlled shutdown. Its data stays.
#   start-node I  start node I again on its data and ports; waits until it answers.
#   stop-node I SIGTERM node I (controlled shutdown), SIGKILL after KAFKA_STOP_TIMEOUT s.
#
# Environment (all optional):
#   KAFKA_NODES            number of nodes (default 1: the single node)
#   KAFKA_PORT             client port (default 9092; 0 = pick free ports, start only: a port
#                          taken before the broker binds it starts it again on fresh ones, 3
#                          attempts in all); in a cluster, node 1's client port, which names its
#                          state dir
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default KAFKA_PORT+1 if free, else a free one;
#                          with KAFKA_PORT=0 a free one; single node only)
#   CLICKHOOK_CACHE_DIR    cache root (default ~/.cache/clickhook); jars go to
#                          $CLICKHOOK_CACHE_DIR/kafka-<version>/libs
#   KAFKA_STATE_DIR        pid file, properties and logs (default $CLICKHOOK_CACHE_DIR/run-<port>)
#   KAFKA_DATA_DIR         log.dirs to use and keep (default: a fresh mktemp -d, removed by stop);
#                          in a cluster, node I uses KAFKA_DATA_DIR/node-I
#   KAFKA_VERSION          Kafka version to fetch (default: kafka.version in pom.xml)
#   KAFKA_HEAP_OPTS        default "-Xms256m -Xmx512m" (a cluster: "-Xms128m -Xmx256m" per node;
#                          KAFKA_PROFILE=production: "-Xms1g -Xmx1g")
#   KAFKA_JVM_OPTS         extra JVM options for the broker
#   KAFKA_PROFILE          test (default): fast start, little memory (C1 JIT only, SerialGC,
#                          2 network and 2 I/O threads); production: what a deployment would
#                          run (C2 JIT, G1 with Kafka's own pause target, Kafka's default 3
#                          network and 8 I/O threads, a 1 GiB heap per node)
#   KAFKA_LOG_LEVEL        level of the kafka loggers in <state>/logs/server.log (default INFO)
#   KAFKA_AUTO_CREATE_TOPICS  auto.create.topics.enable (default false)
#   KAFKA_EXTRA_PROPERTIES extra server.properties lines, appended last (they win)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker (default 60; a cluster: for all nodes)
#   KAFKA_STOP_TIMEOUT     seconds between SIGTERM and SIGKILL (default 15)
#   KAFKA_CDS              0 = no class-data-sharing archive (default on: the first broker
#                          per version writes one at stop, later starts are ~1.5 s faster)
#   KAFKA_MVN_ARGS         extra mvn arguments, e.g. -Dmaven.repo.local=/tmp/m2 (MAVEN_OPTS is
#                          passed through by mvn itself)
set -euo pipefail

PROG=kafka.sh
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM=$HERE/pom.xml
LOG4J_CONF=$HERE/log4j2.properties

say() { echo "$PROG: $*" >&2; }
die() { say "$*"; exit 1; }

pom_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n 1)
KAFKA_VERSION=${KAFKA_VERSION:-$pom_version}
[[ -n $KAFKA_VERSION ]] || die "cannot read kafka.version from $POM"
CACHE_ROOT=${CLICKHOOK_CACHE_DIR:-${HOME:-/tmp}/.cache/clickhook}
KAFKA_CACHE=$CACHE_ROOT/kafka-$KAFKA_VERSION
LIBS=$KAFKA_CACHE/libs
PORT=${KAFKA_PORT:-9092}
HOST=127.0.0.1
NODES=${KAFKA_NODES:-1}
[[ $NODES =~ ^[1-9][0-9]*$ ]] || die "KAFKA_NODES must be a positive number, got '$NODES'"
PROFILE=${KAFKA_PROFILE:-test}
case $PROFILE in
  # The tests start and stop dozens of brokers on a 2-core machine: C1 only and SerialGC start
  # a node in about a second and keep it small; two threads each are plenty for their load.
  test)
    PROFILE_JVM=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1)
    PROFILE_THREADS=(2 2)
    PROFILE_HEAP=
    ;;
  # kafka-run-class.sh's own defaults: C2 compiles the hot paths (request handling, replica
  # fetches, CRCs), G1 keeps pauses short under a steady allocation rate.
  production)
    PROFILE_JVM=(-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
      -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15)
    PROFILE_THREADS=(3 8)
    PROFILE_HEAP="-Xms1g -Xmx1g"
    ;;
  *) die "KAFKA_PROFILE must be test or production, got '$PROFILE'" ;;
esac

# ---------------------------------------------------------------- helpers

check_java() {
  JAVA=java
  if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then JAVA=$JAVA_HOME/bin/java; fi
  local hint="kafka.sh: needs Java 17+ (apt-get install openjdk-17-jre-headless)"
  command -v "$JAVA" >/dev/null 2>&1 || { echo "$hint" >&2; exit 1; }
  local ver major
  ver=$("$JAVA" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1)
  major=${ver%%.*}
  [[ $major == 1 ]] && major=8
  if ! [[ $major =~ ^[0-9]+$ ]] || (( major < 17 )); then
    echo "$hint; found ${ver:-no version} at $(command -v "$JAVA")" >&2
    exit 1
  fi
  JAVA_VERSION=$ver
}

port_in_use() { (: <>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# can_bind PORT: the broker could listen on PORT now. A connect probe (port_in_use) misses the
# local port of a live connection, which the broker's bind would still fail on; the bind here
# uses SO_REUSEADDR as the broker's does, so a port left in TIME_WAIT counts as free.
can_bind() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$HOST" "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
PY
    return
  fi
  ! port_in_use "$1"
}

# other_free_port PORT: a free port other than PORT.
other_free_port() {
  local p
  p=$(free_port)
  while [[ $p == "$1" ]]; do p=$(free_port); done
  echo "$p"
}

# With KAFKA_PORT=0 the ports are picked free, but another process can take one between the
# pick and the broker's bind. The broker then exits with "Address already in use"; start
# again on fresh ports, at most START_ATTEMPTS times in all.
START_ATTEMPTS=3

# retry_on_bind_conflict DIR...: when a broker of those dirs failed on a port taken under it
# and the ports were ours to pick, run this start again (the caller has cleaned up).
retry_on_bind_conflict() {
  local attempt=${KAFKA_START_ATTEMPT:-1} dir taken=0
  [[ ${KAFKA_PORT:-} == 0 ]] && ((attempt < START_ATTEMPTS)) || return 0
  for dir in "$@"; do
    if grep -qs "Address already in use" "$dir/kafka.out" "$dir/logs/server.log"; then taken=1; fi
  done
  ((taken)) || return 0
  say "a port was taken between its pick and the broker's bind; starting again on fresh ports"
  export KAFKA_START_ATTEMPT=$((attempt + 1))
  exec bash "$HERE/$PROG" start
}

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    return
  fi
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 30000))
    port_in_use "$p" || { echo "$p"; return; }
  done
  die "no free port found"
}

# alive PID: the process exists and is not a zombie.
alive() {
  local pid=$1 stat
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/stat ]]; then
    stat=$(<"/proc/$pid/stat") || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZX] ]] || return 1
  fi
}

cmdline_of() {
  if [[ -r /proc/$1/cmdline ]]; then tr '\0' ' ' <"/proc/$1/cmdline"; else ps -o args= -p "$1"; fi
}

# owns PID PROPS: the process is the kafka.Kafka started with that server.properties.
owns() {
  local cmd
  cmd=$(cmdline_of "$1" 2>/dev/null) || return 1
  [[ $cmd == *kafka.Kafka* && $cmd == *"$2"* ]]
}

# live_pid DIR: print the pid of the live broker started from DIR (its kafka.pid and
# server.properties: a single node's state dir, or a cluster node's), or fail.
live_pid() {
  local pid
  [[ -s $1/kafka.pid ]] || return 1
  pid=$(<"$1/kafka.pid")
  alive "$pid" && owns "$pid" "$1/server.properties" && echo "$pid"
}

set_state() {
  STATE=${KAFKA_STATE_DIR:-$CACHE_ROOT/run-$PORT}
  PIDFILE=$STATE/kafka.pid
  BOOTSTRAP=$HOST:$PORT
  if [[ -z ${KAFKA_PORT:-} || -n ${KAFKA_STATE_DIR:-} ]] && [[ -s $STATE/bootstrap ]]; then
    BOOTSTRAP=$(<"$STATE/bootstrap")
  fi
}

# running_pid: print the pid of this state dir's live broker, or fail.
running_pid() { live_pid "$STATE"; }

# Remove the data dir that start created (never a KAFKA_DATA_DIR given by the user).
remove_owned_data() {
  local dir
  if [[ -s $STATE/data_dir && -f $STATE/data_dir_owned ]]; then
    dir=$(<"$STATE/data_dir")
    if [[ $dir == */clickhook-kafka-* && -d $dir ]]; then rm -rf -- "$dir"; fi
  fi
  rm -f -- "$STATE/data_dir" "$STATE/data_dir_owned"
}

cleanup_state() {
  remove_owned_data
  rm -f -- "$PIDFILE"
}

# make_data_dir NAME: KAFKA_DATA_DIR, or a fresh temporary dir that stop removes.
make_data_dir() {
  local data
  if [[ -n ${KAFKA_DATA_DIR:-} ]]; then
    data=$KAFKA_DATA_DIR
    mkdir -p "$data"
  else
    data=$(mktemp -d "${TMPDIR:-/tmp}/clickhook-kafka-$1.XXXXXX")
    : >"$STATE/data_dir_owned"
  fi
  echo "$data" >"$STATE/data_dir"
  echo "$data"
}

# After a clean stop, publish the class-data-sharing archive the broker of DIR wrote at exit
# (its first run only), so later brokers and the format step start faster.
publish_cds() {
  local dir=$1 target
  [[ -s $dir/broker.jsa && -s $dir/cds_target ]] || return 0
  target=$(<"$dir/cds_target")
  if [[ ! -s $target && -d ${target%/*} ]]; then
    if ! { cp -- "$dir/broker.jsa" "$target.tmp.$$" && mv -- "$target.tmp.$$" "$target"; }; then
      rm -f -- "$target.tmp.$$"
    fi
  fi
  rm -f -- "$dir/broker.jsa" "$dir/cds_target"
}

fetch_libs() {
  local marker=$KAFKA_CACHE/libs.complete want tmp
  want="kafka $KAFKA_VERSION pom $(cksum <"$POM" | cut -d' ' -f1)"
  if [[ -d $LIBS && -f $marker && $(<"$marker") == "$want" ]]; then return; fi
  command -v mvn >/dev/null 2>&1 \
    || die "needs Maven to fetch the Kafka jars once (apt-get install maven)"
  mkdir -p "$KAFKA_CACHE"
  # One fetch at a time per version (tests may start several brokers on a cold cache).
  exec 9>"$KAFKA_CACHE/.lock"
  if command -v flock >/dev/null 2>&1; then flock -w 900 9 || die "timed out waiting for $KAFKA_CACHE/.lock"; fi
  if [[ -d $LIBS && -f $marker && $(<"$marker") == "$want" ]]; then exec 9>&-; return; fi
  say "fetching Kafka $KAFKA_VERSION jars with Maven into $LIBS (once)"
  tmp=$(mktemp -d "$KAFKA_CACHE/libs.tmp.XXXXXX")
  chmod 755 "$tmp"
  local -a extra=()
  read -r -a extra <<<"${KAFKA_MVN_ARGS:-}"
  # -q still prints ANSI resets on Maven 3.8: strip them; stdout stays for the address only.
  if ! mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" -Dkafka.version="$KAFKA_VERSION" \
      ${extra[@]+"${extra[@]}"} </dev/null 2>&1 | sed -e $'s/\x1b\\[[0-9;]*m//g' -e '/^$/d' >&2; then
    rm -rf -- "$tmp"
    die "mvn could not fetch Kafka $KAFKA_VERSION (see the errors above)"
  fi
  [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || { rm -rf -- "$tmp"; die "mvn finished but kafka_2.13-$KAFKA_VERSION.jar is missing"; }
  rm -f -- "$marker" "$KAFKA_CACHE"/*.jsa
  rm -rf -- "$LIBS"
  mv -- "$tmp" "$LIBS"
  echo "$want" >"$marker.tmp" && mv -- "$marker.tmp" "$marker"
  exec 9>&-
}

# Kafka's Uuid string: 16 random bytes, URL-safe base64 without padding, not starting with '-'.
random_uuid() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id != -* ]] && { echo "$id"; return; }
  done
}

# probe PORT: ask the broker for metadata (Metadata v4: all topics) and check it lists itself.
probe() {
  local port=$1
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$HOST" "$port" <<'PY' 2>/dev/null
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
client = b"kafka.sh"
body = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">ib", -1, 0)
with socket.create_connection((host, port), timeout=2) as s:
    s.settimeout(2)
    s.sendall(struct.pack(">i", len(body)) + body)
    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf
    (size,) = struct.unpack(">i", read(4))
    resp = read(size)
corr, _throttle, nbrokers = struct.unpack(">iii", resp[:12])
off, ports = 12, []
for _ in range(nbrokers):
    _node, hlen = struct.unpack(">ih", resp[off:off + 6]); off += 6 + hlen
    (bport, rlen) = struct.unpack(">ih", resp[off:off + 6]); off += 6 + max(rlen, 0)
    ports.append(bport)
sys.exit(0 if corr == 7 and port in ports else 1)
PY
  else
    port_in_use "$port"
  fi
}

# server_properties ID PORT CPORT VOTERS DATA REPLICAS: a combined broker+controller node;
# internal topics get REPLICAS replicas and writes need min(2, REPLICAS) of them in sync.
server_properties() {
  local id=$1 port=$2 cport=$3 voters=$4 data=$5 replicas=$6
  local min_isr=$((replicas < 2 ? replicas : 2))
  if ((NODES == 1)); then
    echo "# Written by deploy/local/kafka.sh: single-node KRaft broker+controller for local tests."
  else
    echo "# Written by deploy/local/kafka.sh: node $id of a $NODES-node KRaft cluster (broker+controller each)."
  fi
  cat <<PROPS
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$cport
advertised.listeners=PLAINTEXT://$HOST:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data

PROPS
  if ((replicas == 1)); then
    echo "# One node: every internal topic has one replica."
  else
    echo "# Every internal topic on $replicas nodes; a write (acks=all) needs $min_isr of them in sync."
  fi
  cat <<PROPS
offsets.topic.replication.factor=$replicas
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
min.insync.replicas=$min_isr
default.replication.factor=$replicas
PROPS
  if ((replicas > 1)); then
    cat <<PROPS
# A node that stops heartbeating (kill -9) is fenced, and leaves the ISRs, after 3 s instead
# of 9 s: until then, writes to the partitions it followed wait for it.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
PROPS
  fi
  cat <<PROPS

# Fast tests on a small machine.
num.partitions=3
auto.create.topics.enable=${KAFKA_AUTO_CREATE_TOPICS:-false}
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
offsets.topic.num.partitions=5
transaction.state.log.num.partitions=5
share.coordinator.state.topic.num.partitions=5
# Request threads per KAFKA_PROFILE (test: 2 and 2; production: Kafka's defaults).
num.network.threads=${PROFILE_THREADS[0]}
num.io.threads=${PROFILE_THREADS[1]}
num.recovery.threads.per.data.dir=1
background.threads=4
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
PROPS
  if [[ -n ${KAFKA_EXTRA_PROPERTIES:-} ]]; then
    printf '\n# KAFKA_EXTRA_PROPERTIES\n%s\n' "$KAFKA_EXTRA_PROPERTIES"
  fi
}

# jvm_options DIR HEAP DUMP: sets TOOL_OPTS (the format step) and BROKER_OPTS (the broker of
# DIR). HEAP is used unless KAFKA_HEAP_OPTS is set. AppCDS: the broker's first run (per Kafka
# and Java version) dumps its classes at exit when DUMP is "dump"; later runs map that
# archive (about 1.5 s faster, 35 MB less RSS). KAFKA_CDS=0: off. Only the test profile
# dumps it (the tests' brokers are the ones started often), any profile maps it.
jvm_options() {
  local dir=$1 heap_default=$2 dump=$3
  local -a log_opts=(
    "-Dlog4j2.configurationFile=$LOG4J_CONF"
    "-Dkafka.logs.dir=$dir/logs"
    "-Dclickhook.kafka.log.level=${KAFKA_LOG_LEVEL:-INFO}"
  )
  local jsa=$KAFKA_CACHE/broker-java$JAVA_VERSION.jsa
  local -a cds_use=() cds_broker=()
  rm -f -- "$dir/broker.jsa" "$dir/cds_target"
  if [[ ${KAFKA_CDS:-1} != 0 ]]; then
    if [[ -s $jsa ]]; then
      cds_use=("-XX:SharedArchiveFile=$jsa")
      cds_broker=("${cds_use[@]}")
    elif [[ $dump == dump && $PROFILE == test ]]; then
      cds_broker=("-XX:ArchiveClassesAtExit=$dir/broker.jsa")
      echo "$jsa" >"$dir/cds_target"
    fi
  fi
  TOOL_OPTS=(-Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData
    -Djava.awt.headless=true ${cds_use[@]+"${cds_use[@]}"} "${log_opts[@]}")
  local -a heap jvm_extra
  read -r -a heap <<<"${KAFKA_HEAP_OPTS:-${PROFILE_HEAP:-$heap_default}}"
  read -r -a jvm_extra <<<"${KAFKA_JVM_OPTS:-}"
  BROKER_OPTS=("${heap[@]}" "${PROFILE_JVM[@]}" -XX:-UsePerfData
    -Djava.awt.headless=true ${cds_broker[@]+"${cds_broker[@]}"} "${log_opts[@]}"
    ${jvm_extra[@]+"${jvm_extra[@]}"})
}

# format_storage DIR DATA CLUSTER_ID: format DATA for the node of DIR, unless a KAFKA_DATA_DIR
# formatted by an earlier run keeps its cluster id. Output in DIR/format.log.
format_storage() {
  local dir=$1 data=$2 cluster_id=$3
  if [[ -f $data/meta.properties ]]; then
    echo "already formatted: $data" >"$dir/format.log"
    return 0
  fi
  "$JAVA" "${TOOL_OPTS[@]}" -cp "$LIBS/*" kafka.tools.StorageTool format \
    -t "$cluster_id" -c "$dir/server.properties" >"$dir/format.log" 2>&1 </dev/null
}

# launch DIR: start the broker of DIR (its server.properties, BROKER_OPTS) in the background.
launch() {
  local dir=$1
  rm -f -- "$dir/kafka.pid"
  # setsid: own session, so a Ctrl-C or a test runner's process-group kill does not reach it.
  # The inner shell writes its own pid and execs java, so the pid file is java's pid even
  # if setsid had to fork. All fds are redirected: callers capturing our output don't hang.
  # shellcheck disable=SC2016  # $$ and $1 are for the inner shell
  (cd "$dir" && exec setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka-start \
    "$dir/kafka.pid" "$JAVA" "${BROKER_OPTS[@]}" -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
    >"$dir/kafka.out" 2>&1 </dev/null 9>&-) &
}

# await_broker DIR PORT DEADLINE: wait until the broker of DIR answers on PORT (0, its pid in
# READY_PID), exits (1) or SECONDS passes DEADLINE (2).
await_broker() {
  local dir=$1 port=$2 deadline=$3 pid=
  while :; do
    [[ -z $pid && -s $dir/kafka.pid ]] && pid=$(<"$dir/kafka.pid")
    if [[ -n $pid ]] && ! alive "$pid"; then return 1; fi
    if [[ -n $pid ]] && port_in_use "$port" && probe "$port"; then
      READY_PID=$pid
      return 0
    fi
    if ((SECONDS >= deadline)); then return 2; fi
    sleep 0.2
  done
}

# stop_broker PID DIR: SIGTERM, SIGKILL after KAFKA_STOP_TIMEOUT s; then publish its archive.
stop_broker() {
  local pid=$1 dir=$2
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + ${KAFKA_STOP_TIMEOUT:-15}))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then
    say "broker (pid $pid) still up after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f -- "$dir/broker.jsa"
    deadline=$((SECONDS + 5))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  fi
  publish_cds "$dir"
}

# ---------------------------------------------------------------- commands: one node

cmd_start() {
  check_java
  if [[ $PORT == 0 ]]; then PORT=$(free_port); fi
  [[ $PORT =~ ^[0-9]+$ ]] || die "KAFKA_PORT must be a number, got '$PORT'"
  set_state
  BOOTSTRAP=$HOST:$PORT
  mkdir -p "$STATE/logs"
  local pid
  if pid=$(running_pid); then
    [[ -s $STATE/bootstrap ]] && BOOTSTRAP=$(<"$STATE/bootstrap")
    say "already running (pid $pid, state $STATE)"
    echo "$BOOTSTRAP"
    return 0
  fi
  cleanup_state
  can_bind "$PORT" || die "port $PORT is already in use (set KAFKA_PORT, or KAFKA_PORT=0 for a free one)"

  local cport=${KAFKA_CONTROLLER_PORT:-}
  if [[ -z $cport && ${KAFKA_PORT:-} == 0 ]]; then
    cport=$(other_free_port "$PORT")
  elif [[ -z $cport ]]; then
    cport=$((PORT + 1))
    if (( cport > 65535 )) || ! can_bind "$cport"; then cport=$(other_free_port "$PORT"); fi
  fi
  [[ $cport != "$PORT" ]] || die "controller port equals KAFKA_PORT ($PORT)"
  can_bind "$cport" || die "controller port $cport is already in use (set KAFKA_CONTROLLER_PORT)"

  fetch_libs

  local data
  data=$(make_data_dir "$PORT")
  echo "$BOOTSTRAP" >"$STATE/bootstrap"
  server_properties 1 "$PORT" "$cport" "1@$HOST:$cport" "$data" 1 >"$STATE/server.properties"

  jvm_options "$STATE" "-Xms256m -Xmx512m" dump
  if ! format_storage "$STATE" "$data" "$(random_uuid)"; then
    cat "$STATE/format.log" >&2
    cleanup_state
    die "formatting $data failed"
  fi
  launch "$STATE"

  local timeout=${KAFKA_START_TIMEOUT:-60} started=$SECONDS waited=0
  await_broker "$STATE" "$PORT" $((SECONDS + timeout)) || waited=$?
  case $waited in
    1)
      say "broker exited during startup; last lines of $STATE/kafka.out:"
      tail -n 25 "$STATE/kafka.out" >&2 || true
      say "broker exited during startup (full log: $STATE/logs/server.log)"
      cleanup_state
      retry_on_bind_conflict "$STATE"
      exit 1
      ;;
    2)
      say "broker not ready after ${timeout}s; last lines of $STATE/kafka.out:"
      tail -n 25 "$STATE/kafka.out" >&2 || true
      say "broker not ready after ${timeout}s (full log: $STATE/logs/server.log); stopping it"
      cmd_stop >&2
      exit 1
      ;;
  esac
  say "running (pid $READY_PID, ready in $((SECONDS - started))s, state $STATE, data $data)"
  echo "$BOOTSTRAP"
}

cmd_stop() {
  set_state
  local pid
  if [[ ! -s $PIDFILE ]]; then
    say "no broker running for $STATE"
    cleanup_state
    return 0
  fi
  pid=$(<"$PIDFILE")
  if ! alive "$pid"; then
    say "broker (pid $pid) is not running; cleaning up"
    cleanup_state
    return 0
  fi
  if ! owns "$pid" "$STATE/server.properties"; then
    say "pid $pid is not the broker of $STATE; not killing it, cleaning up"
    cleanup_state
    return 0
  fi
  stop_broker "$pid" "$STATE"
  cleanup_state
  say "stopped broker (pid $pid) at $BOOTSTRAP"
}

cmd_status() {
  set_state
  local pid
  if pid=$(running_pid); then
    echo "running (pid $pid)"
    echo "$BOOTSTRAP"
    return 0
  fi
  echo "not running ($BOOTSTRAP)"
  return 3
}

# ---------------------------------------------------------------- commands: a cluster

CLUSTER_REPLICAS=$((NODES < 3 ? NODES : 3))

set_cluster_state() {
  STATE=${KAFKA_STATE_DIR:-$CACHE_ROOT/cluster-$PORT}
}

node_dir() { echo "$STATE/node-$1"; }

# read_nodes: NODE_PORT[I] and NODE_CPORT[I] from $STATE/nodes ("I PORT CPORT" lines), and
# NODES from their count; fails when no cluster was started from $STATE.
read_nodes() {
  [[ -s $STATE/nodes ]] || return 1
  NODE_PORT=()
  NODE_CPORT=()
  local id port cport
  while read -r id port cport; do
    NODE_PORT[id]=$port
    NODE_CPORT[id]=$cport
  done <"$STATE/nodes"
  NODES=${#NODE_PORT[@]}
}

cluster_bootstrap() {
  local id list=
  for ((id = 1; id <= NODES; id++)); do list+="${list:+,}$HOST:${NODE_PORT[id]}"; done
  echo "$list"
}

# take_free_port: a free port not handed out before (PORTS_TAKEN), in FREE_PORT.
take_free_port() {
  FREE_PORT=$(free_port)
  while [[ "$PORTS_TAKEN " == *" $FREE_PORT "* ]]; do FREE_PORT=$(free_port); done
  PORTS_TAKEN+=" $FREE_PORT"
}

# pick_ports: node I on KAFKA_PORT+2(I-1) and its controller on the next port; with
# KAFKA_PORT=0, free ports (PORT already holds node 1's).
pick_ports() {
  local id port
  NODE_PORT=()
  NODE_CPORT=()
  PORTS_TAKEN=" $PORT"
  for ((id = 1; id <= NODES; id++)); do
    if [[ ${KAFKA_PORT:-} == 0 ]]; then
      NODE_PORT[id]=$PORT
      if ((id > 1)); then take_free_port && NODE_PORT[id]=$FREE_PORT; fi
      take_free_port && NODE_CPORT[id]=$FREE_PORT
    else
      NODE_PORT[id]=$((PORT + 2 * (id - 1)))
      NODE_CPORT[id]=$((PORT + 2 * (id - 1) + 1))
    fi
    for port in "${NODE_PORT[id]}" "${NODE_CPORT[id]}"; do
      ((port <= 65535)) || die "port $port is out of range (set KAFKA_PORT lower)"
      if ! can_bind "$port"; then
        die "port $port is already in use (set KAFKA_PORT, or KAFKA_PORT=0 for free ones)"
      fi
    done
  done
}

# node_failed I WHAT: report a node that did not come up, with the end of its output.
node_failed() {
  local dir
  dir=$(node_dir "$1")
  say "node $1 $2; last lines of $dir/kafka.out:"
  tail -n 25 "$dir/kafka.out" >&2 || true
  say "node $1 $2 (full log: $dir/logs/server.log)"
}

# start_nodes I...: launch those nodes and wait until every one answers. A node that does not
# come up fails the command; on a cluster's first start (STOP_ON_FAILURE=1) it stops the rest.
start_nodes() {
  local id dir timeout=${KAFKA_START_TIMEOUT:-60} waited
  local deadline=$((SECONDS + timeout))
  for id in "$@"; do
    dir=$(node_dir "$id")
    jvm_options "$dir" "-Xms128m -Xmx256m" "$( ((id == 1)) && echo dump || echo no)"
    launch "$dir"
  done
  for id in "$@"; do
    waited=0
    await_broker "$(node_dir "$id")" "${NODE_PORT[id]}" "$deadline" || waited=$?
    case $waited in
      0) say "node $id running (pid $READY_PID) at $HOST:${NODE_PORT[id]}" ;;
      1) node_failed "$id" "exited during startup" ;;
      *) node_failed "$id" "not ready after ${timeout}s" ;;
    esac
    if ((waited != 0)); then
      if [[ ${STOP_ON_FAILURE:-0} == 1 ]]; then
        cmd_cluster_stop >&2
        retry_on_bind_conflict "$STATE"/node-*
      fi
      exit 1
    fi
  done
}

cmd_cluster_start() {
  check_java
  if [[ $PORT == 0 ]]; then PORT=$(free_port); fi
  [[ $PORT =~ ^[0-9]+$ ]] || die "KAFKA_PORT must be a number, got '$PORT'"
  set_cluster_state
  mkdir -p "$STATE"
  local id down=() started=$SECONDS
  if read_nodes && [[ -s $STATE/data_dir ]]; then
    for ((id = 1; id <= NODES; id++)); do
      live_pid "$(node_dir "$id")" >/dev/null || down+=("$id")
    done
    if ((${#down[@]} < NODES)); then
      say "already running (state $STATE)${down[*]:+; starting node(s) ${down[*]}}"
      ((${#down[@]} == 0)) || start_nodes "${down[@]}"
      cluster_bootstrap
      return 0
    fi
  fi
  cleanup_cluster
  pick_ports
  fetch_libs

  local data cluster_id voters= dir formats=()
  data=$(make_data_dir "cluster-$PORT")
  cluster_id=$(random_uuid)
  for ((id = 1; id <= NODES; id++)); do voters+="${voters:+,}$id@$HOST:${NODE_CPORT[id]}"; done
  : >"$STATE/nodes"
  for ((id = 1; id <= NODES; id++)); do
    echo "$id ${NODE_PORT[id]} ${NODE_CPORT[id]}" >>"$STATE/nodes"
    dir=$(node_dir "$id")
    mkdir -p "$dir/logs" "$data/node-$id"
    server_properties "$id" "${NODE_PORT[id]}" "${NODE_CPORT[id]}" "$voters" "$data/node-$id" \
      "$CLUSTER_REPLICAS" >"$dir/server.properties"
    jvm_options "$dir" "-Xms128m -Xmx256m" no
    format_storage "$dir" "$data/node-$id" "$cluster_id" &
    formats[id]=$!
  done
  for ((id = 1; id <= NODES; id++)); do
    if ! wait "${formats[id]}"; then
      cat "$(node_dir "$id")/format.log" >&2
      cleanup_cluster
      die "formatting $data/node-$id failed"
    fi
  done
  cluster_bootstrap >"$STATE/bootstrap"

  local all=()
  for ((id = 1; id <= NODES; id++)); do all+=("$id"); done
  STOP_ON_FAILURE=1 start_nodes "${all[@]}"
  say "cluster of $NODES running (ready in $((SECONDS - started))s, state $STATE, data $data)"
  cluster_bootstrap
}

# Remove what start created: the data dir (unless given), pid files, the node list.
cleanup_cluster() {
  remove_owned_data
  rm -f -- "$STATE"/node-*/kafka.pid "$STATE/nodes" "$STATE/bootstrap"
}

cmd_cluster_stop() {
  set_cluster_state
  if ! read_nodes; then
    say "no cluster running for $STATE"
    cleanup_cluster
    return 0
  fi
  local id dir pid stopping=()
  # One by one while a quorum is left to approve each controlled shutdown, then the last two
  # together: a node left alone has no quorum and would wait out KAFKA_STOP_TIMEOUT.
  for ((id = 1; id <= NODES; id++)); do
    dir=$(node_dir "$id")
    pid=$(live_pid "$dir") || continue
    if ((id < NODES - 1)); then
      stop_broker "$pid" "$dir"
    else
      stop_broker "$pid" "$dir" &
      stopping+=($!)
    fi
  done
  for pid in ${stopping[@]+"${stopping[@]}"}; do wait "$pid" || true; done
  local bootstrap
  bootstrap=$(cluster_bootstrap)
  cleanup_cluster
  say "stopped the cluster at $bootstrap"
}

cmd_cluster_status() {
  set_cluster_state
  if ! read_nodes; then
    echo "not running (no cluster in $STATE)"
    return 3
  fi
  local id pid running=0
  for ((id = 1; id <= NODES; id++)); do
    if pid=$(live_pid "$(node_dir "$id")"); then
      echo "node $id running (pid $pid) at $HOST:${NODE_PORT[id]}"
      running=$((running + 1))
    else
      echo "node $id not running ($HOST:${NODE_PORT[id]})"
    fi
  done
  cluster_bootstrap
  if ((running == NODES)); then return 0; fi
  if ((running == 0)); then return 3; fi
  return 4
}

# cmd_node COMMAND I: kill-node, start-node or stop-node for node I of the running cluster.
cmd_node() {
  local command=$1 id=$2 dir pid
  set_cluster_state
  read_nodes || die "no cluster in $STATE (start one with KAFKA_NODES=$NODES)"
  [[ $id =~ ^[0-9]+$ ]] && ((id >= 1 && id <= NODES)) || die "$command: node must be 1..$NODES, got '$id'"
  dir=$(node_dir "$id")
  case $command in
    kill-node)
      pid=$(live_pid "$dir") || { say "node $id is not running"; return 0; }
      kill -KILL "$pid"
      while alive "$pid"; do sleep 0.05; done
      rm -f -- "$dir/broker.jsa" "$dir/cds_target"
      say "killed node $id (pid $pid, SIGKILL)"
      ;;
    stop-node)
      pid=$(live_pid "$dir") || { say "node $id is not running"; return 0; }
      stop_broker "$pid" "$dir"
      say "stopped node $id (pid $pid)"
      ;;
    start-node)
      if pid=$(live_pid "$dir"); then
        say "node $id already running (pid $pid)"
        return 0
      fi
      check_java
      start_nodes "$id"
      ;;
  esac
}

if ((NODES > 1)); then
  case ${1:-} in
    start) cmd_cluster_start ;;
    stop) cmd_cluster_stop ;;
    status) cmd_cluster_status ;;
    kill-node | start-node | stop-node) cmd_node "$1" "${2:-}" ;;
    -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
    *) die "usage: KAFKA_NODES=$NODES kafka.sh start|stop|status|kill-node I|start-node I|stop-node I" ;;
  esac
  exit
fi

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  kill-node | start-node | stop-node) die "$1 is for a cluster: set KAFKA_NODES (e.g. 3)" ;;
  *) die "usage: kafka.sh start|stop|status (see kafka.sh help)" ;;
esac
