#!/usr/bin/env bash
# `make scan`: what runs here instead of the guide's
#   docker run --rm -v /var/run/docker.sock:/var/run/docker.sock aquasec/trivy image ...
# which needs Docker and trivy's vulnerability database, neither of which can be had here.
# trivy itself is built from its Go module (hack/build-trivy.sh) and runs, offline, the
# scanners that need no download:
#   1. secrets in every layer of the image archive from build.sh (fails on any);
#   2. misconfigurations of the Dockerfile, deployments/ and the Helm chart, with the
#      checks built into trivy (fails on HIGH or CRITICAL not accepted, with the reason,
#      in hack/image/trivyignore);
#   3. an SBOM (CycloneDX) of the image's Debian and Python packages, for a vulnerability
#      scan wherever a database is reachable (`trivy sbom FILE`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ ! -f "$archive" ]]; then
  echo "error: no image archive $archive; build it first (make image)" >&2
  exit 1
fi
trivy="$(bash "$root/hack/build-trivy.sh")"
results="$image_cache/scan"
mkdir -p "$results"
sbom="$results/virtualservice-operator-v$version.cdx.json"
# Nothing leaves the machine: no database, check bundle, version or telemetry request.
offline=(--cache-dir "$cache/trivy-cache" --skip-check-update --skip-version-check
  --disable-telemetry --quiet)
image_offline=("${offline[@]}" --skip-db-update --skip-java-db-update --offline-scan)

start=$SECONDS
# trivy reads an OCI image from a layout folder, not from its tar archive.
layout="$(mktemp -d "$image_cache/scan-layout.XXXXXX")"
trap 'rm -rf "$layout"' EXIT
tar -xf "$archive" -C "$layout"

echo "== secrets in $reference ($archive)" >&2
"$trivy" image "${image_offline[@]}" --scanners secret --exit-code 1 --table-mode detailed \
  --input "$layout"
echo "no secrets found" >&2

echo "== misconfigurations: Dockerfile, deployments/, charts/virtualservice-operator" >&2
for target in Dockerfile deployments charts/virtualservice-operator; do
  "$trivy" config "${offline[@]}" --severity HIGH,CRITICAL --exit-code 1 --table-mode detailed \
    --ignorefile "$here/trivyignore" "$root/$target"
done
echo "no HIGH or CRITICAL misconfiguration (accepted: $(grep -c '^[A-Z]' "$here/trivyignore"), see hack/image/trivyignore)" >&2

echo "== SBOM (CycloneDX) of $reference" >&2
"$trivy" image "${image_offline[@]}" --format cyclonedx --output "$sbom" --input "$layout"
python3 - "$sbom" <<'PY'
import json, sys
components = json.load(open(sys.argv[1])).get("components", [])
kinds = {}
for c in components:
    for p in c.get("properties", []):
        if p["name"] == "aquasecurity:trivy:PkgType":
            kinds[p["value"]] = kinds.get(p["value"], 0) + 1
print(f"SBOM {sys.argv[1]}: {len(components)} components ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})", file=sys.stderr)
PY
echo "make scan took $((SECONDS - start))s (trivy $("$trivy" --version | awk 'NR==1 {print $2}'))" >&2
