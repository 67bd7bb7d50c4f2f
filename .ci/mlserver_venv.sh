#!/usr/bin/env bash
# Provision a private virtualenv holding a real MLServer (+ XGBoost runtime),
# used by interop tests that talk to an actual MLServer process.
#
# It lives outside the project venv so MLServer's pins never constrain ours.
#
#   venv=$(bash .ci/mlserver_venv.sh)      # last (only) stdout line = venv path
#   "$venv/bin/mlserver" start MODEL_DIR
#
# Idempotent: a stamp file inside the venv records the exact lock below; when
# it matches (and the venv's python runs) the script does nothing.  A missing,
# half-built or outdated venv is rebuilt from scratch.
#
# Every distribution is pinned (resolved once on CPython 3.11 / linux x86_64
# and verified end to end) and installed with --no-deps, so no resolver runs
# and nothing floats.  nvidia-nccl-cu12 (~470 MB, GPU-only collectives) that
# xgboost>=3 declares on linux is deliberately left out: CPU inference never
# loads it.  uvloop is held at 0.21.0: with uvloop>=0.22 MLServer's parallel
# inference workers (parallel_workers>=1) die at start ("There is no current
# event loop") and every model fails to load.
#
# Wheels are kept in a wheelhouse under ~/.cache (pip's own HTTP cache stores
# nothing here: the registry answers without cache headers), so a rebuild
# after the first one is offline and takes ~20 s.
#
# Env overrides:
#   AISF_MLSERVER_VENV    venv path (default ~/.cache/aisf/venvs/mlserver)
#   AISF_MLSERVER_PYTHON  interpreter to build it from (default python3;
#                         MLServer 1.7.1 needs >=3.9,<3.13)
#   AISF_WHEELHOUSE       wheel cache (default ~/.cache/aisf/wheels/mlserver)
set -euo pipefail

MLSERVER_VERSION=1.7.1
MLSERVER_XGBOOST_VERSION=1.7.1

CACHE_ROOT="$HOME/.cache"
VENV="${AISF_MLSERVER_VENV:-$CACHE_ROOT/aisf/venvs/mlserver}"
PY="${AISF_MLSERVER_PYTHON:-python3}"
WHEELHOUSE="${AISF_WHEELHOUSE:-$CACHE_ROOT/aisf/wheels/mlserver}"
STAMP="$VENV/.aisf-mlserver-stamp"

log() { echo "[mlserver_venv] $*" >&2; }

LOCK="$(cat <<EOF
mlserver==${MLSERVER_VERSION}
mlserver-xgboost==${MLSERVER_XGBOOST_VERSION}
xgboost==3.2.0
aiofiles==25.1.0
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiokafka==0.14.0
aiosignal==1.4.0
annotated-types==0.8.0
anyio==4.16.0
asgiref==3.13.0
async-timeout==5.0.1
attrs==26.1.0
brotli==1.2.1
certifi==2026.10.19.post1
click==8.5.1
cloudpickle==3.1.3
fastapi==0.115.14
frozenlist==1.8.0
gevent==26.9.0
geventhttpclient==2.6.1
googleapis-common-protos==1.76.0
greenlet==3.3.2
grpcio==1.85.3
h11==0.16.0
idna==3.20
importlib_resources==6.5.2
joblib==1.6.0
ml_dtypes==0.5.4
multidict==7.2.1
narwhals==2.29.0
numpy==2.4.6
opentelemetry-api==1.45.2
opentelemetry-exporter-otlp-common==0.66b2
opentelemetry-exporter-otlp-proto-common==1.45.2
opentelemetry-exporter-otlp-proto-grpc==1.45.2
opentelemetry-instrumentation==0.66b2
opentelemetry-instrumentation-asgi==0.66b2
opentelemetry-instrumentation-fastapi==0.66b2
opentelemetry-instrumentation-grpc==0.66b2
opentelemetry-proto==1.45.2
opentelemetry-sdk==1.45.2
opentelemetry-semantic-conventions==0.66b2
opentelemetry-util-http==0.66b2
orjson==3.13.0
packaging==26.4
pandas==3.1.1
prometheus_client==0.26.0
propcache==0.5.4
protobuf==6.33.6
py-grpc-prometheus==0.8.0
pydantic==2.14.4
pydantic-settings==2.16.3
pydantic_core==2.50.5
python-dateutil==4.0.0
python-dotenv==1.2.4
python-multipart==0.0.34
python-rapidjson==1.25
scikit-learn==1.9.1
scipy==1.17.1
starlette==0.46.2
starlette_exporter==0.24.0
threadpoolctl==3.8.0
tritonclient==2.73.0
typing-inspection==0.4.5
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
uvicorn==0.54.0
uvloop==0.21.0
wrapt==2.5.2
yarl==1.25.1
zope.event==6.2
zope.interface==8.7
EOF
)"

is_ready() {
  [[ -f "$STAMP" && -x "$VENV/bin/python" && -x "$VENV/bin/mlserver" ]] || return 1
  [[ "$(cat "$STAMP")" == "$LOCK" ]] || return 1
  # Cheap integrity probe (no imports executed): interpreter runs and the
  # runtime packages are still on its path.
  "$VENV/bin/python" -c 'import importlib.util as u, sys
sys.exit(not all(u.find_spec(m) for m in ("mlserver", "mlserver_xgboost", "xgboost")))' \
    >/dev/null 2>&1
}

mkdir -p "$(dirname "$VENV")"

# Serialise concurrent callers (e.g. parallel test workers) on one venv.
exec 9>"$VENV.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

if is_ready; then
  log "up to date: $VENV (mlserver==$MLSERVER_VERSION mlserver-xgboost==$MLSERVER_XGBOOST_VERSION)"
  echo "$VENV"
  exit 0
fi

if ! "$PY" -c 'import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] < (3, 13) else 1)' >/dev/null 2>&1; then
  log "error: $PY must be CPython >=3.9,<3.13 for mlserver $MLSERVER_VERSION" \
      "(got: $("$PY" -V 2>&1 || echo 'not found')); set AISF_MLSERVER_PYTHON"
  exit 1
fi

t0=$SECONDS
log "building $VENV with $("$PY" -V 2>&1)"
rm -rf "$VENV"
"$PY" -m venv "$VENV" >&2

REQ="$VENV/.aisf-mlserver-lock.txt"
printf '%s\n' "$LOCK" >"$REQ"
mkdir -p "$WHEELHOUSE"

pip_q=(--disable-pip-version-check --no-input --quiet)
# Offline first from the wheelhouse; fill it from the registry when it lacks
# anything, then install again offline.
if ! "$VENV/bin/python" -m pip install "${pip_q[@]}" --no-deps --no-index \
       --find-links "$WHEELHOUSE" -r "$REQ" >/dev/null 2>"$VENV/.pip-offline.log"; then
  log "wheelhouse $WHEELHOUSE incomplete; fetching wheels from the registry"
  "$VENV/bin/python" -m pip wheel "${pip_q[@]}" --no-deps -w "$WHEELHOUSE" -r "$REQ" >&2
  "$VENV/bin/python" -m pip install "${pip_q[@]}" --no-deps --no-index \
    --find-links "$WHEELHOUSE" -r "$REQ" >&2
fi
rm -f "$VENV/.pip-offline.log"

# Smoke check: the runtime imports and the CLI runs.
"$VENV/bin/python" -c 'import mlserver, mlserver_xgboost, xgboost' >&2
"$VENV/bin/mlserver" --version >&2

printf '%s' "$LOCK" >"$STAMP"
log "ready in $((SECONDS - t0)) s: $VENV"
echo "$VENV"
