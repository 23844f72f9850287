// Command benchwriter is the benchmark's reference writer: it creates a list of objects
// through client-go at the release of the local kube-apiserver, as a Go controller would,
// and nothing else (no list, no watch, no cache, no Events). Services go through the typed
// clientset as protobuf, VirtualServices (a custom resource) through the dynamic client as
// JSON. Client-side rate limiting is off: the API server is what is measured.
//
//	benchwriter -kubeconfig=sa.kubeconfig -objects=bodies.json -concurrency=16
//
// The objects file is a JSON list of {"kind", "namespace", "body"} (the benchmark writes it
// from the operator's desired state). Prints one JSON line: objects, failures, seconds.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type object struct {
	Kind      string          `json:"kind"`
	Namespace string          `json:"namespace"`
	Body      json.RawMessage `json:"body"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the identity that writes")
	objectsPath := flag.String("objects", "", "JSON list of {kind, namespace, body}")
	concurrency := flag.Int("concurrency", 2, "requests in flight")
	flag.Parse()
	if err := run(*kubeconfig, *objectsPath, *concurrency); err != nil {
		fmt.Fprintln(os.Stderr, "benchwriter:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, objectsPath string, concurrency int) error {
	if concurrency < 1 {
		return fmt.Errorf("-concurrency must be at least 1, got %d", concurrency)
	}
	start := time.Now()
	raw, err := os.ReadFile(objectsPath)
	if err != nil {
		return err
	}
	var objects []object
	if err := json.Unmarshal(raw, &objects); err != nil {
		return fmt.Errorf("%s: %w", objectsPath, err)
	}
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	// No client-side throttle (client-go's default is 5 QPS): the server is the limit.
	config.QPS = -1
	typedConfig := *config
	typedConfig.ContentType = "application/vnd.kubernetes.protobuf"
	typedConfig.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	typed, err := kubernetes.NewForConfig(&typedConfig)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(config)
	if err != nil {
		return err
	}

	ctx := context.Background()
	var next, failures atomic.Int64
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(objects) {
					return
				}
				if err := create(ctx, typed, dyn, objects[i]); err != nil {
					failures.Add(1)
					fmt.Fprintf(os.Stderr, "create %s %s: %v\n", objects[i].Kind, objects[i].Namespace, err)
				}
			}
		}()
	}
	wg.Wait()
	out, _ := json.Marshal(map[string]any{
		"objects":     len(objects),
		"failures":    failures.Load(),
		"concurrency": concurrency,
		"seconds":     time.Since(start).Seconds(),
	})
	fmt.Println(string(out))
	if failures.Load() > 0 {
		return fmt.Errorf("%d of %d creates failed", failures.Load(), len(objects))
	}
	return nil
}

func create(ctx context.Context, typed kubernetes.Interface, dyn dynamic.Interface, o object) error {
	switch o.Kind {
	case "Service":
		var svc corev1.Service
		if err := json.Unmarshal(o.Body, &svc); err != nil {
			return err
		}
		_, err := typed.CoreV1().Services(o.Namespace).Create(ctx, &svc, metav1.CreateOptions{})
		return err
	case "VirtualService":
		var u unstructured.Unstructured
		if err := u.UnmarshalJSON(o.Body); err != nil {
			return err
		}
		gv, err := schema.ParseGroupVersion(u.GetAPIVersion())
		if err != nil {
			return err
		}
		res := gv.WithResource("virtualservices")
		_, err = dyn.Resource(res).Namespace(o.Namespace).Create(ctx, &u, metav1.CreateOptions{})
		return err
	default:
		return fmt.Errorf("unknown kind %q", o.Kind)
	}
}
