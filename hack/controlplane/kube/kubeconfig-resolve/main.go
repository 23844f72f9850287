// Command kubeconfig-resolve prints, as JSON, what client-go resolves from a kubeconfig
// situation: the reference the Python loader is compared with
// (tests/unit/test_kubeconfig_conformance.py).
//
// The order is controller-runtime's (pkg/client/config.loadConfig): --kubeconfig, else
// $KUBECONFIG (a list, merged by clientcmd's loading rules), else in-cluster, else
// ~/.kube/config; --context overrides the current context, as kubectl's flag does.
// In-cluster is rest.InClusterConfig with its directory as a flag (-service-account),
// so that a test can point it at a folder of its own. The transport is then built
// (rest.HTTPClientFor) as kubectl's first request builds it, so that what client-go
// refuses only there (a CA with insecure-skip-tls-verify, an exec apiVersion it no
// longer speaks) is refused here too; no request is sent.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"net"
	"net/http"
	"os"
	"path/filepath"

	// The auth-provider plugins kubectl links (oidc), so that they resolve as there.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"
)

type execOut struct {
	Command            string            `json:"command"`
	Args               []string          `json:"args"`
	Env                map[string]string `json:"env"`
	APIVersion         string            `json:"apiVersion"`
	ProvideClusterInfo bool              `json:"provideClusterInfo"`
	InteractiveMode    string            `json:"interactiveMode"`
}

type impersonateOut struct {
	User   string              `json:"user"`
	UID    string              `json:"uid"`
	Groups []string            `json:"groups"`
	Extra  map[string][]string `json:"extra"`
}

type out struct {
	Server        string          `json:"server"`
	TLSServerName string          `json:"tlsServerName"`
	CA            string          `json:"ca"`
	Insecure      bool            `json:"insecure"`
	ClientCert    bool            `json:"clientCert"`
	Token         string          `json:"token"`
	TokenFile     string          `json:"tokenFile"`
	Username      string          `json:"username"`
	Exec          *execOut        `json:"exec"`
	Impersonate   *impersonateOut `json:"impersonate"`
	Proxy         string          `json:"proxy"`
	Compression   bool            `json:"compression"`
}

func inCluster(dir string) (*rest.Config, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if len(host) == 0 || len(port) == 0 {
		return nil, rest.ErrNotInCluster
	}
	tokenFile, rootCAFile := filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, err
	}
	tls := rest.TLSClientConfig{}
	if _, err := certutil.NewPool(rootCAFile); err == nil {
		tls.CAFile = rootCAFile
	}
	return &rest.Config{
		Host:            "https://" + net.JoinHostPort(host, port),
		TLSClientConfig: tls,
		BearerToken:     string(token),
		BearerTokenFile: tokenFile,
	}, nil
}

func load(kubeconfig, context, serviceAccount string) (*rest.Config, error) {
	overrides := &clientcmd.ConfigOverrides{CurrentContext: context}
	if kubeconfig != "" {
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}
		return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	}
	if os.Getenv(clientcmd.RecommendedConfigPathEnvVar) == "" {
		if c, err := inCluster(serviceAccount); err == nil {
			return c, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
}

func describe(c *rest.Config) (*out, error) {
	o := &out{
		Server:        c.Host,
		TLSServerName: c.TLSClientConfig.ServerName,
		Insecure:      c.TLSClientConfig.Insecure,
		ClientCert:    c.TLSClientConfig.CertFile != "" || len(c.TLSClientConfig.CertData) > 0,
		TokenFile:     c.BearerTokenFile,
		Username:      c.Username,
		Compression:   !c.DisableCompression,
	}
	switch {
	case len(c.TLSClientConfig.CAData) > 0:
		o.CA = "data"
	case c.TLSClientConfig.CAFile != "":
		o.CA = "file:" + c.TLSClientConfig.CAFile
	case c.TLSClientConfig.Insecure:
		o.CA = "none"
	default:
		o.CA = "system"
	}
	if c.BearerTokenFile == "" {
		o.Token = c.BearerToken
	}
	if e := c.ExecProvider; e != nil {
		env := map[string]string{}
		for _, v := range e.Env {
			env[v.Name] = v.Value
		}
		o.Exec = &execOut{e.Command, e.Args, env, e.APIVersion, e.ProvideClusterInfo, string(e.InteractiveMode)}
	}
	if i := c.Impersonate; i.UserName != "" || i.UID != "" || len(i.Groups) > 0 || len(i.Extra) > 0 {
		o.Impersonate = &impersonateOut{i.UserName, i.UID, i.Groups, i.Extra}
	}
	// The proxy a request to the server goes through: the kubeconfig's proxy-url, else
	// the environment's (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), as client-go's transport.
	proxy := c.Proxy
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	req, err := http.NewRequest("GET", c.Host, nil)
	if err != nil {
		return nil, err
	}
	u, err := proxy(req)
	if err != nil {
		return nil, err
	}
	if u != nil {
		o.Proxy = u.String()
	}
	return o, nil
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file (as --kubeconfig)")
	context := flag.String("context", "", "context to use (as --context)")
	serviceAccount := flag.String("service-account", "/var/run/secrets/kubernetes.io/serviceaccount", "in-cluster ServiceAccount directory")
	flag.Parse()
	enc := json.NewEncoder(os.Stdout)
	c, err := load(*kubeconfig, *context, *serviceAccount)
	var o *out
	if err == nil {
		_, err = rest.HTTPClientFor(c)
	}
	if err == nil {
		o, err = describe(c)
	}
	if err != nil {
		_ = enc.Encode(map[string]string{"error": err.Error()})
		return
	}
	if err := enc.Encode(o); err != nil {
		panic(errors.New("cannot encode: " + err.Error()))
	}
}
