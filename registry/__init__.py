"""etcd-mesh's library: registration, discovery and balanced channels.

Services use `registry.serve`, clients use `registry.mesh.Mesh`.
"""
