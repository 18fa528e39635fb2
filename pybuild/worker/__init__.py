"""The worker: turns a parent filesystem plus one step into a new layer.

`snapshots` (unpacked layers, overlay mounts, upperdir → layer diff), `spec` + `executor` (RUN in a
throwaway OCI-runtime container), `mounts` (RUN --mount), `fileops` (COPY/ADD/WORKDIR). Import the
submodules directly; this package imports nothing.
"""
