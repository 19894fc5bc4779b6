#!/usr/bin/env bash
# Download the wheels edgepath needs on the lent GPU machine but its image lacks, into .whl/
# (git-ignored; name it in the device tool's `carry`; benchmarks/gpu_proof.sh installs them).
#
#   bash benchmarks/gpu_wheels.sh            # then: run(..., carry=[".whl"])
#
# The image (Python 3.12, x86-64, no network) already has every runtime dependency in
# pyproject.toml except these three: OpenSlide's Python binding and its bundled library (slides),
# and imagecodecs (tifffile's JPEG codec: synthesized slides are JPEG-tiled TIFFs). Their own
# requirements (numpy >= 2, Pillow) are on the image. None of them has an `extra` need here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
WHEELS=${WHEELS:-"imagecodecs==2026.3.6 openslide-bin==4.0.1.2 openslide-python==1.4.7"}
MAX_MIB=${MAX_MIB:-48} # the wheels and the working tree travel together, 64 MiB at most
mkdir -p .whl
git check-ignore -q .whl/x.whl || {
  echo ".whl/ is not git-ignored; add '.whl/' to .gitignore" >&2
  exit 1
}
for w in $WHEELS; do # one version of each: two stop the install there
  name=${w%%==*}
  find .whl -name "${name//-/_}-*.whl" ! -name "${name//-/_}-${w##*==}-*.whl" -delete
done
# shellcheck disable=SC2086  # WHEELS is a list
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl $WHEELS
ls -l .whl/*.whl
bytes=$(du -cb .whl/*.whl | tail -1 | cut -f1)
echo "total $((bytes / 1048576)) MiB in $(ls .whl/*.whl | wc -l) wheels (limit ${MAX_MIB} MiB)"
if ((bytes > MAX_MIB * 1048576)); then
  echo "the wheels exceed ${MAX_MIB} MiB: they and the tree must travel in 64 MiB" >&2
  exit 1
fi
