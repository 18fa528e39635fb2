"""The build cache: cache keys (`keys`), the local cache index in the store's SQLite database (`index`) and
plain-words reasons for a cache miss (`explain`).

A key is the SHA-256 of canonical JSON holding a version tag, the step's definition (what it does), its
inputs' keys (what it starts from) and the content checksums of exactly the context files it reads. A key
maps to a result (a layer diffID or a snapshot id and a config delta); a hit skips the work. Nothing in a
key is a time: a touched file keeps its checksum and so its key.
"""
