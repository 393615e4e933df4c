#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) for clickhook
# development and tests. No Docker, no tarball: the broker's jars come from Maven Central
# through deploy/local/pom.xml and are cached outside the repo.
#
# Usage: deploy/local/kafka.sh start|stop|status
#   start   fetch the jars once, format a fresh data dir, start the broker in the background,
#           wait until it answers a metadata request, and print its bootstrap address
#           (127.0.0.1:<port>) as the last line of stdout. Already running: prints it again.
#   stop    stop the broker this state dir started (SIGTERM, then SIGKILL after
#           KAFKA_STOP_TIMEOUT s) and remove the temporary data dir. No broker: exit 0.
#   status  "running" + bootstrap address (exit 0), or "not running" (exit 3).
#
# Environment (all optional):
#   KAFKA_PORT             client port (default 9092; 0 = pick a free port, start only)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default KAFKA_PORT+1 if free, else a free one)
#   CLICKHOOK_CACHE_DIR    cache root (default ~/.cache/clickhook); jars go to
#                          $CLICKHOOK_CACHE_DIR/kafka-<version>/libs
#   KAFKA_STATE_DIR        pid file, properties and logs (default $CLICKHOOK_CACHE_DIR/run-<port>)
#   KAFKA_DATA_DIR         log.dirs to use and keep (default: a fresh mktemp -d, removed by stop)
#   KAFKA_VERSION          Kafka version to fetch (default: kafka.version in pom.xml)
#   KAFKA_HEAP_OPTS        default "-Xms256m -Xmx512m"
#   KAFKA_JVM_OPTS         extra JVM options for the broker
#   KAFKA_LOG_LEVEL        level of the kafka loggers in <state>/logs/server.log (default INFO)
#   KAFKA_AUTO_CREATE_TOPICS  auto.create.topics.enable (default false)
#   KAFKA_EXTRA_PROPERTIES extra server.properties lines, appended last (they win)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker (default 60)
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

# owns PID: the process is the kafka.Kafka started with this state dir's properties.
owns() {
  local cmd
  cmd=$(cmdline_of "$1" 2>/dev/null) || return 1
  [[ $cmd == *kafka.Kafka* && $cmd == *"$STATE/server.properties"* ]]
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
running_pid() {
  local pid
  [[ -s $PIDFILE ]] || return 1
  pid=$(<"$PIDFILE")
  alive "$pid" && owns "$pid" && echo "$pid"
}

# Remove the data dir that start created (never a KAFKA_DATA_DIR given by the user).
cleanup_state() {
  local dir
  if [[ -s $STATE/data_dir && -f $STATE/data_dir_owned ]]; then
    dir=$(<"$STATE/data_dir")
    if [[ $dir == */clickhook-kafka-* && -d $dir ]]; then rm -rf -- "$dir"; fi
  fi
  rm -f -- "$PIDFILE" "$STATE/data_dir" "$STATE/data_dir_owned"
}

# After a clean stop, publish the class-data-sharing archive the broker wrote at exit
# (its first run only), so later brokers and the format step start faster.
publish_cds() {
  local target
  [[ -s $STATE/broker.jsa && -s $STATE/cds_target ]] || return 0
  target=$(<"$STATE/cds_target")
  if [[ ! -s $target && -d ${target%/*} ]]; then
    if ! { cp -- "$STATE/broker.jsa" "$target.tmp.$$" && mv -- "$target.tmp.$$" "$target"; }; then
      rm -f -- "$target.tmp.$$"
    fi
  fi
  rm -f -- "$STATE/broker.jsa" "$STATE/cds_target"
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

# Ask the broker for metadata (Metadata v4: all topics) and check it lists itself.
probe() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$HOST" "$PORT" <<'PY' 2>/dev/null
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
    port_in_use "$PORT"
  fi
}

# ---------------------------------------------------------------- commands

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
  port_in_use "$PORT" && die "port $PORT is already in use (set KAFKA_PORT, or KAFKA_PORT=0 for a free one)"

  local cport=${KAFKA_CONTROLLER_PORT:-}
  if [[ -z $cport ]]; then
    cport=$((PORT + 1))
    if (( cport > 65535 )) || port_in_use "$cport"; then cport=$(free_port); fi
  fi
  [[ $cport != "$PORT" ]] || die "controller port equals KAFKA_PORT ($PORT)"
  port_in_use "$cport" && die "controller port $cport is already in use (set KAFKA_CONTROLLER_PORT)"

  fetch_libs

  local data
  if [[ -n ${KAFKA_DATA_DIR:-} ]]; then
    data=$KAFKA_DATA_DIR
    mkdir -p "$data"
  else
    data=$(mktemp -d "${TMPDIR:-/tmp}/clickhook-kafka-$PORT.XXXXXX")
    : >"$STATE/data_dir_owned"
  fi
  echo "$data" >"$STATE/data_dir"
  echo "$BOOTSTRAP" >"$STATE/bootstrap"

  cat >"$STATE/server.properties" <<EOF
# Written by deploy/local/kafka.sh: single-node KRaft broker+controller for local tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$cport
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$cport
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data

# One node: every internal topic has one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
default.replication.factor=1

# Fast tests on a small machine.
num.partitions=3
auto.create.topics.enable=${KAFKA_AUTO_CREATE_TOPICS:-false}
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
offsets.topic.num.partitions=5
transaction.state.log.num.partitions=5
share.coordinator.state.topic.num.partitions=5
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=4
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
EOF
  if [[ -n ${KAFKA_EXTRA_PROPERTIES:-} ]]; then
    printf '\n# KAFKA_EXTRA_PROPERTIES\n%s\n' "$KAFKA_EXTRA_PROPERTIES" >>"$STATE/server.properties"
  fi

  local -a log_opts=(
    "-Dlog4j2.configurationFile=$LOG4J_CONF"
    "-Dkafka.logs.dir=$STATE/logs"
    "-Dclickhook.kafka.log.level=${KAFKA_LOG_LEVEL:-INFO}"
  )
  # AppCDS: the broker's first run (per Kafka and Java version) dumps its classes at exit;
  # later runs map that archive (about 1.5 s faster, 35 MB less RSS). KAFKA_CDS=0: off.
  local jsa=$KAFKA_CACHE/broker-java$JAVA_VERSION.jsa
  local -a cds_use=() cds_broker=()
  rm -f -- "$STATE/broker.jsa" "$STATE/cds_target"
  if [[ ${KAFKA_CDS:-1} != 0 ]]; then
    if [[ -s $jsa ]]; then
      cds_use=("-XX:SharedArchiveFile=$jsa")
      cds_broker=("${cds_use[@]}")
    else
      cds_broker=("-XX:ArchiveClassesAtExit=$STATE/broker.jsa")
      echo "$jsa" >"$STATE/cds_target"
    fi
  fi
  local -a tool_opts=(-Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData
    -Djava.awt.headless=true ${cds_use[@]+"${cds_use[@]}"} "${log_opts[@]}")
  # A KAFKA_DATA_DIR formatted by an earlier run keeps its cluster id: no format.
  if [[ -f $data/meta.properties ]]; then
    echo "already formatted: $data" >"$STATE/format.log"
  elif ! "$JAVA" "${tool_opts[@]}" -cp "$LIBS/*" kafka.tools.StorageTool format \
      -t "$(random_uuid)" -c "$STATE/server.properties" \
      >"$STATE/format.log" 2>&1 </dev/null; then
    cat "$STATE/format.log" >&2
    cleanup_state
    die "formatting $data failed"
  fi

  local -a heap jvm_extra
  read -r -a heap <<<"${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
  read -r -a jvm_extra <<<"${KAFKA_JVM_OPTS:-}"
  local -a jvm=("${heap[@]}" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData
    -Djava.awt.headless=true ${cds_broker[@]+"${cds_broker[@]}"} "${log_opts[@]}"
    ${jvm_extra[@]+"${jvm_extra[@]}"})

  rm -f -- "$PIDFILE"
  # setsid: own session, so a Ctrl-C or a test runner's process-group kill does not reach it.
  # The inner shell writes its own pid and execs java, so the pid file is java's pid even
  # if setsid had to fork. All fds are redirected: callers capturing our output don't hang.
  # shellcheck disable=SC2016  # $$ and $1 are for the inner shell
  (cd "$STATE" && exec setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka-start \
    "$PIDFILE" "$JAVA" "${jvm[@]}" -cp "$LIBS/*" kafka.Kafka "$STATE/server.properties" \
    >"$STATE/kafka.out" 2>&1 </dev/null 9>&-) &

  local timeout=${KAFKA_START_TIMEOUT:-60} started=$SECONDS
  local deadline=$((SECONDS + timeout))
  pid=
  while :; do
    [[ -z $pid && -s $PIDFILE ]] && pid=$(<"$PIDFILE")
    if [[ -n $pid ]] && ! alive "$pid"; then
      say "broker exited during startup; last lines of $STATE/kafka.out:"
      tail -n 25 "$STATE/kafka.out" >&2 || true
      say "broker exited during startup (full log: $STATE/logs/server.log)"
      cleanup_state
      exit 1
    fi
    if [[ -n $pid ]] && port_in_use "$PORT" && probe; then break; fi
    if (( SECONDS >= deadline )); then
      say "broker not ready after ${timeout}s; last lines of $STATE/kafka.out:"
      tail -n 25 "$STATE/kafka.out" >&2 || true
      say "broker not ready after ${timeout}s (full log: $STATE/logs/server.log); stopping it"
      cmd_stop >&2
      exit 1
    fi
    sleep 0.2
  done
  say "running (pid $pid, ready in $((SECONDS - started))s, state $STATE, data $data)"
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
  if ! owns "$pid"; then
    say "pid $pid is not the broker of $STATE; not killing it, cleaning up"
    cleanup_state
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + ${KAFKA_STOP_TIMEOUT:-15}))
  while alive "$pid" && (( SECONDS < deadline )); do sleep 0.1; done
  if alive "$pid"; then
    say "broker (pid $pid) still up after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f -- "$STATE/broker.jsa"
    deadline=$((SECONDS + 5))
    while alive "$pid" && (( SECONDS < deadline )); do sleep 0.1; done
  fi
  publish_cds
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

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "usage: kafka.sh start|stop|status (see kafka.sh help)" ;;
esac
