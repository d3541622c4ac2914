#!/usr/bin/env bash
# Static checks of the deployment files users copy (packaging/Dockerfile,
# packaging/compose/): hadolint, docker-compose's own validation, nginx -t
# and promtool, without a container engine. Called by tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "hadolint packaging/Dockerfile"
"$VENV/bin/hadolint" packaging/Dockerfile

echo "docker-compose config -q"
(cd packaging/compose \
    && AIPROXY_API_KEY=check AIPROXY_CLUSTER_SECRET=check-secret-of-16-bytes \
       docker-compose config -q)

# nginx resolves upstream names when it reads its configuration; the
# compose service names exist only inside compose, so map them to loopback
# for the check (nothing else changes).
echo "nginx -t packaging/compose/nginx.conf"
mkdir -p "$tmp/nginx/logs"
sed -e 's/server aiproxy1:3000/server 127.0.0.1:3000/' \
    -e 's/server aiproxy2:3000/server 127.0.0.2:3000/' \
    packaging/compose/nginx.conf > "$tmp/nginx/nginx.conf"
nginx -t -q -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" \
    -g "pid $tmp/nginx/nginx.pid; error_log $tmp/nginx/error.log;"

# The compose file mounts the rules beside prometheus.yml, as here.
echo "promtool check config packaging/compose/prometheus.yml"
mkdir -p "$tmp/prometheus"
cp packaging/compose/prometheus.yml packaging/prometheus/aiproxy.rules.yml "$tmp/prometheus/"
promtool check config "$tmp/prometheus/prometheus.yml" >/dev/null

echo "grafana provisioning: datasource uid matches the dashboard"
python3 - <<'PY'
import json, re
ds = open("packaging/compose/grafana/provisioning/datasources/prometheus.yml").read()
uid = re.search(r"uid:\s*(\S+)", ds).group(1)
dash = json.load(open("packaging/grafana/aiproxy-dashboard.json"))
used = set(re.findall(r'"uid":\s*"([^"]+)"', json.dumps(dash))) - {dash["uid"]}
assert used == {uid}, f"dashboard uses datasource uids {used}, provisioning gives {uid}"
PY
echo "deployment files OK"
