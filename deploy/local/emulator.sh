#!/usr/bin/env bash
# Local AWS emulator (moto server) for certflow development and tests.
#
# Usage: deploy/local/emulator.sh <setup|start|stop|status|env>
#
#   setup   create/refresh <repo>/.venv from deploy/local/requirements.txt
#           (no-op when the venv already matches requirements.txt)
#   start   setup, then start moto_server on a free 127.0.0.1 port (or reuse
#           a running one), write <repo>/.local/emulator.env, print endpoint
#   stop    stop the emulator (TERM, then KILL), remove pid/env files
#   status  print whether the emulator is running (exit 0 if up, 3 if not)
#   env     print the env file (use: eval "$(deploy/local/emulator.sh env)")
#
# Environment:
#   PYTHON                     python interpreter used to create the venv
#                              (default: python3)
#   MOTO_ACM_VALIDATION_WAIT   passed through to moto_server if set
#   EMULATOR_START_TIMEOUT     seconds to wait for the server (default 30)
#
# Exit codes: 0 ok, 1 failure, 2 missing prerequisite (python3/venv/pip),
#             3 (status/env only) emulator not running, 64 usage error.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "${SCRIPT_DIR}/../.." && pwd -P)"
REQUIREMENTS="${SCRIPT_DIR}/requirements.txt"
VENV_DIR="${REPO_ROOT}/.venv"
VENV_PY="${VENV_DIR}/bin/python"
STAMP_FILE="${VENV_DIR}/.certflow-requirements.sha256"
STATE_DIR="${REPO_ROOT}/.local"
PID_FILE="${STATE_DIR}/emulator.pid"
PORT_FILE="${STATE_DIR}/emulator.port"
ENV_FILE="${STATE_DIR}/emulator.env"
LOG_FILE="${STATE_DIR}/emulator.log"
HOST="127.0.0.1"
PYTHON="${PYTHON:-python3}"
START_TIMEOUT="${EMULATOR_START_TIMEOUT:-30}"

log() { printf 'emulator: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

# ---------------------------------------------------------------- setup ----

require_python() {
    if ! command -v "${PYTHON}" >/dev/null 2>&1; then
        log "error: '${PYTHON}' not found."
        log "Install Python 3 (>= 3.9), e.g. on Debian/Ubuntu:"
        log "    apt-get install python3 python3-venv python3-pip"
        exit 2
    fi
    if ! "${PYTHON}" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null; then
        log "error: ${PYTHON} is $("${PYTHON}" -V 2>&1); moto 5.2.5 needs Python >= 3.9."
        exit 2
    fi
    if ! "${PYTHON}" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        log "error: ${PYTHON} lacks the 'venv'/'ensurepip' modules."
        log "Install them, e.g. on Debian/Ubuntu:"
        log "    apt-get install python3-venv"
        exit 2
    fi
}

requirements_hash() {
    "${PYTHON}" - "${REQUIREMENTS}" <<'PY'
import hashlib, sys
with open(sys.argv[1], "rb") as f:
    print(hashlib.sha256(f.read()).hexdigest())
PY
}

venv_is_current() {
    [[ -x "${VENV_PY}" && -x "${VENV_DIR}/bin/moto_server" && -f "${STAMP_FILE}" ]] || return 1
    "${VENV_PY}" -c 'import sys' >/dev/null 2>&1 || return 1
    local have
    have="$(cat -- "${STAMP_FILE}")" || return 1
    [[ "${have}" == "$1" ]]
}

cmd_setup() {
    [[ -f "${REQUIREMENTS}" ]] || die "missing ${REQUIREMENTS}"
    require_python
    local want
    want="$(requirements_hash)"
    if venv_is_current "${want}"; then
        return 0
    fi
    if [[ -d "${VENV_DIR}" ]] && ! "${VENV_PY}" -c 'import sys' >/dev/null 2>&1; then
        log "existing ${VENV_DIR} is broken; recreating it"
        rm -rf -- "${VENV_DIR}"
    fi
    if [[ ! -x "${VENV_PY}" ]]; then
        log "creating venv ${VENV_DIR}"
        if ! "${PYTHON}" -m venv "${VENV_DIR}"; then
            rm -rf -- "${VENV_DIR}"
            log "error: '${PYTHON} -m venv' failed."
            log "Install the venv module, e.g.: apt-get install python3-venv"
            exit 2
        fi
    fi
    if ! "${VENV_PY}" -m pip --version >/dev/null 2>&1; then
        log "error: pip is not available in ${VENV_DIR}."
        log "Install it, e.g.: apt-get install python3-venv python3-pip"
        exit 2
    fi
    rm -f -- "${STAMP_FILE}"
    log "installing ${REQUIREMENTS#"${REPO_ROOT}/"} into .venv"
    "${VENV_PY}" -m pip install --disable-pip-version-check -q -r "${REQUIREMENTS}" \
        || die "pip install failed"
    printf '%s\n' "${want}" >"${STAMP_FILE}"
    local ver
    ver="$("${VENV_PY}" -c 'import moto; print(moto.__version__)' 2>/dev/null || true)"
    log "venv ready (moto ${ver:-?})"
}

# -------------------------------------------------------------- runtime ----

read_file() {
    if [[ -f "$1" ]]; then
        tr -d '[:space:]' <"$1" || true
    fi
}

# True if PID exists and is not a zombie.
alive() {
    local pid="$1" stat
    [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
    kill -0 "${pid}" 2>/dev/null || return 1
    stat="$(ps -p "${pid}" -o stat= 2>/dev/null || true)"
    [[ -n "${stat}" && "${stat}" != Z* ]]
}

# True if PID is alive and is a moto_server process.
pid_is_emulator() {
    local pid="$1" args
    alive "${pid}" || return 1
    args="$(ps -p "${pid}" -o args= 2>/dev/null || true)"
    [[ "${args}" == *moto_server* ]]
}

# True if an HTTP server answers on PORT.
answering() {
    local port="$1" url="http://${HOST}:$1/moto-api/"
    [[ "${port}" =~ ^[0-9]+$ ]] || return 1
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null --max-time 2 "${url}"
    else
        "${PYTHON}" - "${url}" <<'PY' >/dev/null 2>&1
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass  # any HTTP answer counts
PY
    fi
}

is_running() {
    local pid port
    pid="$(read_file "${PID_FILE}")"
    port="$(read_file "${PORT_FILE}")"
    pid_is_emulator "${pid}" && answering "${port}"
}

free_port() {
    "${PYTHON}" -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

write_env_file() {
    local port="$1" tmp="${ENV_FILE}.tmp"
    cat >"${tmp}" <<EOF
export AWS_ENDPOINT_URL=http://${HOST}:${port}
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
EOF
    mv -f -- "${tmp}" "${ENV_FILE}"
}

cmd_start() {
    cmd_setup
    mkdir -p -- "${STATE_DIR}"
    if is_running; then
        local port
        port="$(read_file "${PORT_FILE}")"
        write_env_file "${port}"
        log "already running (pid $(read_file "${PID_FILE}"))"
        printf 'http://%s:%s\n' "${HOST}" "${port}"
        return 0
    fi
    # Stale or unresponsive instance: clean it up first.
    cmd_stop >/dev/null 2>&1 || true

    local port pid waited=0
    port="$(free_port)"
    : >"${LOG_FILE}"
    if [[ -n "${MOTO_ACM_VALIDATION_WAIT:-}" ]]; then
        export MOTO_ACM_VALIDATION_WAIT
    fi
    nohup "${VENV_DIR}/bin/moto_server" -H "${HOST}" -p "${port}" \
        >>"${LOG_FILE}" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "${pid}" >"${PID_FILE}"
    printf '%s\n' "${port}" >"${PORT_FILE}"

    local deadline=$((START_TIMEOUT * 4))
    until answering "${port}"; do
        if ! alive "${pid}"; then
            log "error: moto_server (pid ${pid}) exited during startup; log tail:"
            tail -n 30 -- "${LOG_FILE}" >&2 || true
            rm -f -- "${PID_FILE}" "${PORT_FILE}" "${ENV_FILE}"
            exit 1
        fi
        if ((waited >= deadline)); then
            log "error: moto_server did not answer on ${HOST}:${port} within ${START_TIMEOUT}s; log tail:"
            tail -n 30 -- "${LOG_FILE}" >&2 || true
            kill_pid "${pid}"
            rm -f -- "${PID_FILE}" "${PORT_FILE}" "${ENV_FILE}"
            exit 1
        fi
        sleep 0.25
        waited=$((waited + 1))
    done
    write_env_file "${port}"
    log "started moto_server pid ${pid}; env in ${ENV_FILE#"${REPO_ROOT}/"}"
    printf 'http://%s:%s\n' "${HOST}" "${port}"
}

# TERM the pid, then KILL it if still alive after ~5 s.
kill_pid() {
    local pid="$1" i
    kill -TERM "${pid}" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
        alive "${pid}" || return 0
        sleep 0.25
    done
    log "pid ${pid} ignored TERM; sending KILL"
    kill -KILL "${pid}" 2>/dev/null || true
}

cmd_stop() {
    local pid
    pid="$(read_file "${PID_FILE}")"
    if pid_is_emulator "${pid}"; then
        kill_pid "${pid}"
        log "stopped (pid ${pid})"
    else
        log "not running"
    fi
    rm -f -- "${PID_FILE}" "${PORT_FILE}" "${ENV_FILE}"
}

cmd_status() {
    local pid port
    pid="$(read_file "${PID_FILE}")"
    port="$(read_file "${PORT_FILE}")"
    if is_running; then
        printf 'running pid=%s endpoint=http://%s:%s\n' "${pid}" "${HOST}" "${port}"
        return 0
    fi
    if pid_is_emulator "${pid}"; then
        printf 'unhealthy pid=%s (not answering on port %s)\n' "${pid}" "${port:-?}"
    else
        printf 'stopped\n'
    fi
    return 3
}

cmd_env() {
    if [[ -f "${ENV_FILE}" ]] && is_running; then
        cat -- "${ENV_FILE}"
        return 0
    fi
    log "emulator not running; run: deploy/local/emulator.sh start"
    return 3
}

main() {
    local cmd="${1:-}"
    case "${cmd}" in
        setup) cmd_setup ;;
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        env) cmd_env ;;
        -h | --help | help) usage ;;
        *)
            usage
            exit 64
            ;;
    esac
}

main "$@"
