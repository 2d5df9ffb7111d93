"""Fault tests: the mesh under steady load while replicas, etcd and links fail."""
