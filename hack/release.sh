#!/usr/bin/env bash
# `make release`: writes dist/ from one source of truth, the chart and the image built
# from this tree (one version, virtualservice_operator.__version__):
#   virtualservice-operator-<version>.tgz          helm package of charts/virtualservice-operator
#   install.yaml                                   the chart rendered for release virtualservice-operator
#                                                  in virtualservice-operator-system (namespace included,
#                                                  no hooks), the image by digest
#   virtualservice-operator-v<version>.oci.tar     the image (make image), an OCI archive
#   virtualservice-operator-v<version>.spdx.json   its SBOM (SPDX, trivy)
#   virtualservice-operator-v<version>.scan.json   trivy's offline scan of it (secrets) and
#                                                  of install.yaml (misconfigurations)
#   virtualservice_operator-<version>-py3-none-any.whl, virtualservice_operator-<version>.tar.gz
#   SHA256SUMS                                     sha256sum -c SHA256SUMS checks them all
# Install from it: push the image archive to your registry (skopeo copy
# oci-archive:...), then helm install ... virtualservice-operator-<version>.tgz
# --set image.digest=sha256:..., or kubectl apply -f install.yaml. On a node without a
# registry: ctr -n k8s.io images import the archive, then ctr images tag it as
# repository@digest, the name a pull would have recorded (tests/node/test_release_on_node.py).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/image/common.sh"

# DIST_DIR: another folder; RELEASE_SCAN=0: no SBOM nor scan (trivy is long to build
# the first time; tests/node/test_release_on_node.py installs such a dist/).
dist="${DIST_DIR:-$root/dist}"
scan="${RELEASE_SCAN:-1}"
start=$SECONDS
bash "$here/build.sh"
helm="$(bash "$root/hack/build-controlplane.sh")/helm"
if [[ "$scan" == 1 ]]; then
  trivy="$(bash "$root/hack/build-trivy.sh")"
fi
python="${PYTHON:-$root/.venv/bin/python}"

rm -rf "$dist"
mkdir -p "$dist"
# The manifest digest the archive's index names: what a node resolves repository@digest to.
digest="$(tar -xOf "$archive" index.json | "$python" -c \
  'import json, sys; print(json.load(sys.stdin)["manifests"][0]["digest"])')"

"$helm" package "$root/charts/virtualservice-operator" --destination "$dist" >/dev/null
"$helm" template virtualservice-operator "$root/charts/virtualservice-operator" \
  --namespace virtualservice-operator-system --no-hooks \
  --set createNamespace=true --set "image.digest=$digest" >"$dist/install.yaml"
cp "$archive" "$dist/"

name="virtualservice-operator-v$version"
if [[ "$scan" == 1 ]]; then
  layout="$(mktemp -d "$image_cache/release-layout.XXXXXX")"
  trap 'rm -rf "$layout"' EXIT
  tar -xf "$archive" -C "$layout"
  offline=(--cache-dir "$cache/trivy-cache" --skip-check-update --skip-version-check
    --disable-telemetry --quiet)
  image_offline=("${offline[@]}" --skip-db-update --skip-java-db-update --offline-scan)
  "$trivy" image "${image_offline[@]}" --format spdx-json --output "$dist/$name.spdx.json" \
    --input "$layout"
  "$trivy" image "${image_offline[@]}" --scanners secret --format json --exit-code 1 \
    --output "$layout/image-scan.json" --input "$layout"
  "$trivy" config "${offline[@]}" --format json --exit-code 1 --severity HIGH,CRITICAL \
    --ignorefile "$here/trivyignore" --output "$layout/config-scan.json" "$dist/install.yaml"
  "$python" - "$layout/image-scan.json" "$layout/config-scan.json" "$dist/$name.scan.json" <<'PY'
import json, sys
image, config, out = sys.argv[1:]
report = {"image": json.load(open(image)), "install.yaml": json.load(open(config))}
json.dump(report, open(out, "w"), indent=2)
PY
fi

# The wheel and sdist through setuptools' PEP 517 hooks (the pinned build backend).
(cd "$root" && "$python" -c "
from setuptools import build_meta
build_meta.build_wheel('$dist')
build_meta.build_sdist('$dist')
" >/dev/null)
rm -rf "$root/build"

(cd "$dist" && sha256sum -- * >SHA256SUMS)
echo "dist/ (image $reference@$digest):" >&2
(cd "$dist" && ls -1 | sed 's/^/  /') >&2
echo "make release took $((SECONDS - start))s" >&2
