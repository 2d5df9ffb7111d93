// Command meshinterop talks to etcd-mesh through etcd's own Go naming
// packages (go.etcd.io/etcd/clientv3/naming, etcd 3.4), so that tests can
// check that Python registrations and etcd's Go naming code read each
// other's records.
//
//	meshinterop dial -etcd URL -target etcd:///<prefix>/ -service S -expect K -calls N
//	    Dials the target with etcd's gRPC resolver and the round_robin policy,
//	    calls grpc.health.v1.Health/Check until K distinct peers have replied,
//	    then makes N more calls and prints one JSON line per call:
//	    {"call":0,"peer":"127.0.0.1:5001","status":"SERVING"}.
//	meshinterop register -etcd URL -prefix <prefix> -key <prefix>/<id> -addr HOST:PORT
//	    Adds one endpoint with endpoints.Manager.AddEndpoint (Metadata null,
//	    no lease) and prints {"key":...,"addr":...}.
//
// Errors go to stderr with exit status 1. A panic inside grpc-go exits with
// status 2, as Go does for every unrecovered panic.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/naming/endpoints"
	"go.etcd.io/etcd/clientv3/naming/resolver"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

const roundRobinConfig = `{"loadBalancingPolicy":"round_robin"}`

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: meshinterop dial|register [flags]"))
	}
	var err error
	switch os.Args[1] {
	case "dial":
		err = runDial(os.Args[2:])
	case "register":
		err = runRegister(os.Args[2:])
	default:
		err = fmt.Errorf("invalid command %q, expected dial or register", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "meshinterop:", err)
	os.Exit(1)
}

func requireFlags(flags *flag.FlagSet, names ...string) error {
	for _, name := range names {
		if flags.Lookup(name).Value.String() == "" {
			return fmt.Errorf("missing flag -%s, see meshinterop %s -h", name, flags.Name())
		}
	}
	return nil
}

func newEtcdClient(url string) (*clientv3.Client, error) {
	quiet := zap.NewProductionConfig()
	quiet.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{url},
		DialTimeout: 5 * time.Second,
		LogConfig:   &quiet,
	})
}

func runDial(args []string) error {
	flags := flag.NewFlagSet("dial", flag.ExitOnError)
	etcdURL := flags.String("etcd", "", "etcd client URL, e.g. http://127.0.0.1:2379")
	target := flags.String("target", "", "gRPC target, e.g. etcd:///mesh/services/<service>/")
	expect := flags.Int("expect", 1, "distinct peers to see before the counted calls")
	calls := flags.Int("calls", 10, "number of counted Health/Check calls")
	service := flags.String("service", "", "service name sent in HealthCheckRequest; empty checks the whole server")
	timeout := flags.Duration("timeout", 30*time.Second, "deadline for the whole run")
	_ = flags.Parse(args)
	if err := requireFlags(flags, "etcd", "target"); err != nil {
		return err
	}

	client, err := newEtcdClient(*etcdURL)
	if err != nil {
		return fmt.Errorf("connecting to etcd at %q failed: %w", *etcdURL, err)
	}
	defer client.Close()
	builder, err := resolver.NewBuilder(client)
	if err != nil {
		return fmt.Errorf("creating the etcd resolver failed: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	conn, err := grpc.DialContext(ctx, *target,
		grpc.WithInsecure(),
		grpc.WithResolvers(builder),
		grpc.WithDefaultServiceConfig(roundRobinConfig))
	if err != nil {
		return fmt.Errorf("dialing %q failed: %w", *target, err)
	}
	defer conn.Close()

	health := healthpb.NewHealthClient(conn)
	request := &healthpb.HealthCheckRequest{Service: *service}
	if err := waitForPeers(ctx, health, request, *expect); err != nil {
		return err
	}
	out := json.NewEncoder(os.Stdout)
	for i := 0; i < *calls; i++ {
		addr, status, err := check(ctx, health, request)
		if err != nil {
			return fmt.Errorf("Health/Check call %d failed: %w", i, err)
		}
		_ = out.Encode(map[string]interface{}{"call": i, "peer": addr, "status": status})
	}
	return nil
}

// waitForPeers calls Check until expect distinct peers have replied. The
// round_robin picker uses only READY subchannels, so the first calls after
// dialing may all reach the replica that connected first.
func waitForPeers(ctx context.Context, health healthpb.HealthClient, request *healthpb.HealthCheckRequest, expect int) error {
	seen := map[string]bool{}
	for len(seen) < expect {
		addr, _, err := check(ctx, health, request)
		if err != nil {
			return fmt.Errorf("Health/Check failed after %d of %d peers replied: %w", len(seen), expect, err)
		}
		seen[addr] = true
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func check(ctx context.Context, health healthpb.HealthClient, request *healthpb.HealthCheckRequest) (string, string, error) {
	var from peer.Peer
	reply, err := health.Check(ctx, request,
		grpc.WaitForReady(true), grpc.Peer(&from))
	if err != nil {
		return "", "", err
	}
	addr := ""
	if from.Addr != nil {
		addr = from.Addr.String()
	}
	return addr, reply.GetStatus().String(), nil
}

func runRegister(args []string) error {
	flags := flag.NewFlagSet("register", flag.ExitOnError)
	etcdURL := flags.String("etcd", "", "etcd client URL, e.g. http://127.0.0.1:2379")
	prefix := flags.String("prefix", "", "manager target: <namespace>/services/<service>, no trailing slash")
	key := flags.String("key", "", "endpoint key: <prefix>/<instance id>")
	addr := flags.String("addr", "", "endpoint address HOST:PORT")
	_ = flags.Parse(args)
	if err := requireFlags(flags, "etcd", "prefix", "key", "addr"); err != nil {
		return err
	}

	client, err := newEtcdClient(*etcdURL)
	if err != nil {
		return fmt.Errorf("connecting to etcd at %q failed: %w", *etcdURL, err)
	}
	defer client.Close()
	manager, err := endpoints.NewManager(client, *prefix)
	if err != nil {
		return fmt.Errorf("creating the endpoint manager for %q failed: %w", *prefix, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := manager.AddEndpoint(ctx, *key, endpoints.Endpoint{Addr: *addr}); err != nil {
		return fmt.Errorf("adding endpoint %q failed: %w", *key, err)
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]string{"key": *key, "addr": *addr})
}
