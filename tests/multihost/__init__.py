"""Multi-host tests: etcd members, replicas and clients in network namespaces."""
