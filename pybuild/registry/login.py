"""`pybuild login`: check credentials against the registry, then store them (`dockerconfig.store_login`).

Here, above both the client and the credential file, so that `dockerconfig` (which the client reads
credentials from) does not import the client back.
"""

from __future__ import annotations

from pybuild.errors import ConfigError
from pybuild.registry.dockerconfig import Credentials, store_login

__all__ = ["login"]


def login(host: str, username: str, password: str) -> None:
    """Check `username`/`password` against `host`'s registry, then store them as `docker login` does.

    RegistryError "login failed for HOST: ..." when the registry refuses them (or cannot be reached);
    ConfigError when the config file or the credential helper fails."""
    if not username or not password:
        raise ConfigError("login needs a user name and a password")
    from pybuild.registry.client import RegistryClient

    creds = Credentials(username, password)
    with RegistryClient(host, credentials=creds) as client:
        client.check_login()
    store_login(host, username, password)
