// Pins the Istio release whose generated CRDs (kubernetes/customresourcedefinitions.gen.yaml
// of istio.io/api) the tests, the demo, deployments/crd/ and the operator's offline schema
// (src/virtualservice_operator/domain/schemas/) use. hack/istio-crds.sh copies the file out of the
// module cache; nothing is compiled from this module.
module virtualservice-operator/hack/istio

go 1.26.0

require istio.io/api v1.32.0
