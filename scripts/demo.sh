#!/usr/bin/env bash
# The README's main job: build the demo image in fixtures/demo for real and show that it runs.
#   1. make a busybox base image from the busybox-static package (a rootfs tar, `pybuild import`);
#   2. build fixtures/demo/Dockerfile (two stages in parallel, RUN with heredocs, COPY --from, ...);
#   3. list the store's images (`pybuild images`);
#   4. export the image as an OCI layout (`-o type=oci`), unpack it with umoci and run it with runc:
#      the container starts the demo's httpd and fetches its own page.
# Uses a store of its own under .demo/ (PYBUILD_ROOT), so it never touches the default store.
set -euo pipefail
cd "$(dirname "$0")/.."
PYBUILD=${PYBUILD:-.venv/bin/pybuild}
WORK=${DEMO_DIR:-$PWD/.demo}
export PYBUILD_ROOT=$WORK/store
mkdir -p "$WORK"

echo "== 1. a busybox base image from /bin/busybox (busybox-static)"
rootfs=$WORK/busybox-rootfs
rm -rf "$rootfs" && mkdir -p "$rootfs"/{bin,etc,tmp,root,var/www}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
chmod 1777 "$rootfs/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$WORK/busybox.tar" .
SOURCE_DATE_EPOCH=0 "$PYBUILD" import -m "busybox-static $(/bin/busybox | head -1 | cut -d' ' -f2)" \
  "$WORK/busybox.tar" busybox:latest

echo "== 2. pybuild build -t pybuild-demo:latest fixtures/demo"
"$PYBUILD" build -t pybuild-demo:latest --progress=plain fixtures/demo

echo "== 3. pybuild images"
"$PYBUILD" images

echo "== 4. export as OCI, unpack with umoci, run with runc"
rm -rf "$WORK/layout" "$WORK/bundle"
"$PYBUILD" build -q -t pybuild-demo:latest -o "type=oci,dest=$WORK/layout,tar=false,name=pybuild-demo:latest" \
  fixtures/demo >/dev/null
umoci unpack --image "$WORK/layout:latest" "$WORK/bundle" >/dev/null
# Run the image's own entrypoint in the background (it prints its banner and serves the pages with
# busybox httpd), then fetch the index page from inside the container and stop.
.venv/bin/python - "$WORK/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
entry = " ".join(spec["process"]["args"])
spec["process"]["terminal"] = False
spec["process"]["args"] = ["/bin/sh", "-c",
    f"{entry} & sleep 1; wget -q -O - http://127.0.0.1:${{DEMO_PORT}}/index.html; kill $!"]
json.dump(spec, open(path, "w"))
PY
name=pybuild-demo-$$
trap 'runc delete -f "$name" >/dev/null 2>&1 || true' EXIT
(cd "$WORK/bundle" && runc run "$name")
echo "== the demo image built and ran"
