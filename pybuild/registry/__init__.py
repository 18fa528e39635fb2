"""Registry access: the OCI distribution API client, its authentication, docker's credential file and the
insecure-registry settings.

Modules (import the one you need; this package imports nothing, so `pybuild.registry.settings` or
`pybuild.registry.dockerconfig` can be used without loading httpx):

    settings.py      which hosts may be reached over plain HTTP (`insecure_registries`, `is_insecure`)
    dockerconfig.py  ~/.docker/config.json: `Credentials`, `credentials_for`, `store_login`, `logout`
    login.py         `login`: check credentials against the registry, then `store_login` them
    auth.py          WWW-Authenticate challenges, Basic headers, Bearer token requests, the token cache,
                     and `Authenticator` (one client's credentials, challenge and tokens)
    client.py        `RegistryClient` (manifests, blobs, uploads, mounts, tags) and `client_for(host)`
    wire.py          the client's helpers: media types, retry budgets, error texts, TLS settings, and the
                     watched network streams that hold every socket wait to the bounds
    bounds.py        the bounds of registry I/O: low-speed limit, stall strikes, deadline (`Meter`)

httpx lives here and only here; no httpx exception leaves the package (every failure is a RegistryError,
a ConfigError for a bad configuration file, or a StoreError for a bad local source).
"""
