"""UserService: users and login sessions stored in etcd.

Passwords are stored only as argon2 hashes and session tokens only as
SHA-256 hashes. Run it with `python -m user_svc`.
"""

SERVICE_NAME = "mesh.user.v1.UserService"

__all__ = ["SERVICE_NAME"]
